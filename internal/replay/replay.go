// Package replay runs stored messages through a filter again and reports
// the verdicts that would change: what an operator wants to know before
// switching a new FilterCommand on. It reads the blob store by its date
// prefix (see blob.Dir), rebuilds each message's filter environment from
// its stored verdict record, runs the filter as a worker would, and
// compares the new verdict with the stored one. It never writes to the
// store and never delivers anything: the filter's output is only hashed.
package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/record"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Options says what to replay and how.
type Options struct {
	Store  blob.Store    // read only: Run never calls Put or Delete
	Filter filter.Filter // the filter to try
	// Timeout bounds one message's replay: the filter's own limit; the
	// store reads around the run get a minute more. 0 = no bound.
	Timeout time.Duration
	// Since and Until are the first and last day (UTC, inclusive) whose
	// stored messages are replayed; only their dates count.
	Since, Until time.Time
	Concurrency  int // filters running at once; below 1 means 1
	Limit        int // replay at most this many messages; 0 = all
	Logger       *slog.Logger
	// ProgressEvery is how many messages go by between two progress log
	// lines; 0 means DefaultProgressEvery.
	ProgressEvery int
}

// DefaultProgressEvery is the default number of messages between two
// progress lines in the log.
const DefaultProgressEvery = 200

// storeSlack is added to the filter's own timeout for the store reads
// around one run (the record, the body, the old filtered copy).
const storeSlack = time.Minute

// Status is what became of one message.
type Status string

const (
	StatusSame    Status = "same"    // the new verdict is the stored one
	StatusChanged Status = "changed" // see Change
	StatusSkipped Status = "skipped" // no verdict record (in flight, or its record failed) or no message
	StatusError   Status = "error"   // the store failed, or the record is unusable
)

// Change is the kind of a changed verdict; a message counts under the
// first that applies.
type Change string

const (
	ChangeAcceptReject Change = "accept->reject"
	ChangeRejectAccept Change = "reject->accept"
	ChangeAction       Change = "action"  // any other change of action (drop, tempfail)
	ChangeReply        Change = "reply"   // same action, another reply line
	ChangeContent      Change = "content" // accepted both times, another filtered message
)

// Content compares the filtered message of a message accepted both times.
const (
	ContentSame    = "same"
	ContentChanged = "changed"
	ContentUnknown = "unknown" // the stored filtered copy is gone
)

// Outcome is one verdict as the report shows it.
type Outcome struct {
	Action string `json:"action"` // accept, reject, drop, tempfail
	Reply  string `json:"reply,omitempty"`
}

// Result is the report on one stored message.
type Result struct {
	Type    string   `json:"type"` // "message", to tell it from the summary in JSON lines
	Day     string   `json:"day"`  // 2006-01-02, the message's storage day
	ID      string   `json:"id"`
	From    *string  `json:"from,omitempty"` // the envelope sender; "<>" for the null sender
	To      int      `json:"to,omitempty"`   // recipients
	Old     *Outcome `json:"old,omitempty"`
	New     *Outcome `json:"new,omitempty"`
	Status  Status   `json:"status"`
	Change  Change   `json:"change,omitempty"`
	Content string   `json:"content,omitempty"` // accepted both times: same, changed or unknown
	Detail  string   `json:"detail,omitempty"`  // the new run's detail: exit status, signal, timeout
	Reason  string   `json:"reason,omitempty"`  // why skipped, or the error
}

// Summary counts the results of a run.
type Summary struct {
	Type           string `json:"type"` // "summary"
	Messages       int    `json:"messages"`
	Same           int    `json:"same"`
	Changed        int    `json:"changed"`
	AcceptToReject int    `json:"accept_to_reject"`
	RejectToAccept int    `json:"reject_to_accept"`
	ActionChanged  int    `json:"other_action_changed"`
	ReplyChanged   int    `json:"reply_changed"`
	ContentChanged int    `json:"content_changed"`
	Skipped        int    `json:"skipped"`
	Errors         int    `json:"errors"`
}

func (s *Summary) add(r Result) {
	s.Messages++
	switch r.Status {
	case StatusSame:
		s.Same++
	case StatusSkipped:
		s.Skipped++
	case StatusError:
		s.Errors++
	case StatusChanged:
		s.Changed++
		switch r.Change {
		case ChangeAcceptReject:
			s.AcceptToReject++
		case ChangeRejectAccept:
			s.RejectToAccept++
		case ChangeAction:
			s.ActionChanged++
		case ChangeReply:
			s.ReplyChanged++
		case ChangeContent:
			s.ContentChanged++
		}
	}
}

// errStop ends the listing once Limit messages were handed out.
var errStop = errors.New("replay: limit reached")

// Run replays the stored messages of the days Since to Until, in storage
// order, with Concurrency filters at once, and calls report with each
// result in that same order, from the calling goroutine. A message's own
// failure is a result with StatusError; Run's error is for the listing
// (the store could not be reached), for ctx, and for report's errors.
// The summary counts what was reported.
func Run(ctx context.Context, o Options, report func(Result) error) (Summary, error) {
	sum := Summary{Type: "summary"}
	if o.Store == nil {
		return sum, errors.New("replay: no store")
	}
	if err := CheckDays(o.Since, o.Until); err != nil {
		return sum, fmt.Errorf("replay: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = DefaultProgressEvery
	}
	r := &runner{store: readOnly{o.Store}, filter: o.Filter, timeout: o.Timeout}
	n := max(o.Concurrency, 1)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	order, wait := r.dispatch(runCtx, o, n)
	log.Info("replay started", "since", dayString(o.Since), "until", dayString(o.Until),
		"filter", fmt.Sprint(o.Filter), "concurrency", n, "limit", o.Limit)
	started := time.Now()
	var reportErr error
	for out := range order {
		res := <-out
		// Once stopped, results are cut short by the stop itself: not
		// worth reporting as errors.
		if reportErr != nil || ctx.Err() != nil {
			continue
		}
		sum.add(res)
		if err := report(res); err != nil {
			reportErr = err
			cancel()
			continue
		}
		if sum.Messages%every == 0 {
			log.Info("replay progress", "messages", sum.Messages, "changed", sum.Changed,
				"skipped", sum.Skipped, "errors", sum.Errors, "day", res.Day)
		}
	}
	err := wait()
	switch {
	case reportErr != nil:
		err = fmt.Errorf("replay: report: %w", reportErr)
	case ctx.Err() != nil:
		err = ctx.Err()
	case errors.Is(err, errStop):
		err = nil
	case err != nil:
		err = fmt.Errorf("replay: %w", err)
	}
	log.Info("replay finished", "messages", sum.Messages, "same", sum.Same, "changed", sum.Changed,
		"skipped", sum.Skipped, "errors", sum.Errors, "duration_ms", time.Since(started).Milliseconds(), "err", err)
	return sum, err
}

// task is one message on its way to a filter slot, with the channel its
// result comes back on.
type task struct {
	m   entry
	out chan Result
}

// dispatch lists the messages and hands them to n filter slots. Each
// message gets a one-slot result channel, queued on order in listing
// order before the message goes to a slot: reading them in that order
// keeps the report in order while n filters run. wait returns the
// listing's error once every slot is done.
func (r *runner) dispatch(ctx context.Context, o Options, n int) (order <-chan chan Result, wait func() error) {
	tasks := make(chan task)
	ordered := make(chan chan Result, n)
	var slots sync.WaitGroup
	for range n {
		slots.Go(func() {
			for t := range tasks {
				t.out <- r.one(ctx, t.m)
			}
		})
	}
	listed := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(tasks)
		listed <- r.queue(ctx, o, ordered, tasks)
	}()
	return ordered, func() error {
		slots.Wait()
		return <-listed
	}
}

// queue lists the messages of o's days and queues each: a result channel
// on order, then the message on tasks, or at once its result when it
// cannot be replayed. It returns errStop after o.Limit messages.
func (r *runner) queue(ctx context.Context, o Options, order chan<- chan Result, tasks chan<- task) error {
	replayed := 0
	return listMessages(ctx, r.store, o.Since, o.Until, func(m entry) error {
		out := make(chan Result, 1)
		select {
		case order <- out:
		case <-ctx.Done():
			return ctx.Err()
		}
		switch {
		case !m.record:
			out <- m.skipped(blob.RecordName)
			return nil
		case !m.message:
			out <- m.skipped(blob.MessageName)
			return nil
		}
		select {
		case tasks <- task{m, out}:
		case <-ctx.Done():
			out <- m.failed(ctx.Err())
			return ctx.Err()
		}
		if replayed++; o.Limit > 0 && replayed >= o.Limit {
			return errStop
		}
		return nil
	})
}

// entry is one message directory found by the listing.
type entry struct {
	day     time.Time
	id      string
	dir     string // "2006/01/02/<id>"
	message bool   // message.eml is there
	record  bool   // verdict.json is there
}

func (m entry) result() Result {
	return Result{Type: "message", Day: dayString(m.day), ID: m.id}
}

// skipped is the result for a message whose object missing is not
// there: a message still in flight, or whose record failed, has no
// verdict.json.
func (m entry) skipped(missing string) Result {
	res := m.result()
	res.Status = StatusSkipped
	res.Reason = "no " + missing
	return res
}

func (m entry) failed(err error) Result {
	res := m.result()
	res.Status = StatusError
	res.Reason = err.Error()
	return res
}

// listMessages calls fn with every message directory of the days since to
// until, in the store's (lexical) order. A day is one List of its prefix;
// the objects of a message are consecutive keys under it.
func listMessages(ctx context.Context, s blob.Store, since, until time.Time, fn func(entry) error) error {
	first := dayOf(since)
	last := dayOf(until)
	for day := first; !day.After(last); day = day.AddDate(0, 0, 1) {
		prefix := day.Format("2006/01/02/")
		var cur *entry
		err := s.List(ctx, prefix, func(key string) error {
			id, name, ok := strings.Cut(key[len(prefix):], "/")
			if !ok || id == "" {
				return nil // not a message's object
			}
			if cur != nil && cur.id != id {
				if err := fn(*cur); err != nil {
					return err
				}
				cur = nil
			}
			if cur == nil {
				cur = &entry{day: day, id: id, dir: prefix + id}
			}
			switch name {
			case blob.MessageName:
				cur.message = true
			case blob.RecordName:
				cur.record = true
			}
			return nil
		})
		if err == nil && cur != nil {
			err = fn(*cur)
		}
		if err != nil {
			if errors.Is(err, errStop) || ctx.Err() != nil {
				return err
			}
			return fmt.Errorf("listing %s: %w", prefix, err)
		}
	}
	return nil
}

// runner replays one message at a time; it is shared by the slots.
type runner struct {
	store   blob.Store
	filter  filter.Filter
	timeout time.Duration
}

// one replays message m, which has a record and a body.
func (r *runner) one(ctx context.Context, m entry) Result {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout+storeSlack)
		defer cancel()
	}
	res := m.result()
	rec, err := record.Read(ctx, r.store, m.dir+"/"+blob.RecordName)
	if errors.Is(err, blob.ErrNotFound) {
		return m.skipped(blob.RecordName) // swept, or deleted, since the listing
	}
	if err != nil {
		return m.failed(fmt.Errorf("reading %s: %w", blob.RecordName, err))
	}
	job := rec.GetJob()
	if id := job.GetMessageId(); id != m.id {
		return m.failed(fmt.Errorf("%s is for message %q", blob.RecordName, id))
	}
	res.From = job.Sender
	res.To = len(job.GetRecipients())
	res.Old = outcome(rec.GetVerdict())

	newV, sum, err := r.run(ctx, job, m)
	if errors.Is(err, blob.ErrNotFound) {
		return m.skipped(blob.MessageName)
	}
	if err != nil {
		res.Status, res.Reason = StatusError, err.Error()
		return res
	}
	res.New = outcome(newV)
	res.Detail = newV.GetDetail()

	old := rec.GetVerdict()
	accepted := old.GetAction() == sluicev1.Verdict_ACTION_ACCEPT && newV.GetAction() == sluicev1.Verdict_ACTION_ACCEPT
	if accepted {
		res.Content, err = r.compareContent(ctx, old, m, sum)
		if err != nil {
			res.Status, res.Reason = StatusError, err.Error()
			return res
		}
	}
	res.Status, res.Change = compare(old, newV, res.Content)
	return res
}

// run runs the filter over the stored message with the environment of its
// first run and returns the new verdict and the sha256 of the output.
func (r *runner) run(ctx context.Context, job *sluicev1.FilterJob, m entry) (*sluicev1.Verdict, []byte, error) {
	in, err := r.store.Get(ctx, m.dir+"/"+blob.MessageName)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("reading %s: %w", blob.MessageName, err)
	}
	defer in.Close()
	h := sha256.New()
	res, err := r.filter.Run(ctx, worker.EnvOf(job), in, h)
	if err != nil {
		return nil, nil, err
	}
	if res.Action == filter.Accept && res.Unchanged {
		// Nothing written: what it delivers is the message as stored.
		if err := r.hashStored(ctx, m, h); err != nil {
			return nil, nil, err
		}
	}
	v, err := worker.VerdictOf(res)
	if err != nil {
		return nil, nil, err
	}
	return v, h.Sum(nil), nil
}

// hashStored hashes the stored message into h.
func (r *runner) hashStored(ctx context.Context, m entry, h io.Writer) error {
	rc, err := r.store.Get(ctx, m.dir+"/"+blob.MessageName)
	if err != nil {
		return fmt.Errorf("reading %s: %w", blob.MessageName, err)
	}
	defer rc.Close()
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("reading %s: %w", blob.MessageName, err)
	}
	return nil
}

// compareContent hashes what the old verdict delivered (the filtered
// copy, or the message itself when no filter ran) and compares it with
// the new output's hash.
func (r *runner) compareContent(ctx context.Context, old *sluicev1.Verdict, m entry, sum []byte) (string, error) {
	key := old.GetDeliverKey()
	if key == "" {
		key = m.dir + "/" + blob.FilteredName
	}
	rc, err := r.store.Get(ctx, key)
	if errors.Is(err, blob.ErrNotFound) {
		return ContentUnknown, nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the delivered copy: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("reading the delivered copy %s: %w", key, err)
	}
	if bytes.Equal(h.Sum(nil), sum) {
		return ContentSame, nil
	}
	return ContentChanged, nil
}

// compare classifies the new verdict against the old one.
func compare(old, cur *sluicev1.Verdict, content string) (Status, Change) {
	oa, na := old.GetAction(), cur.GetAction()
	switch {
	case oa == sluicev1.Verdict_ACTION_ACCEPT && na == sluicev1.Verdict_ACTION_REJECT:
		return StatusChanged, ChangeAcceptReject
	case oa == sluicev1.Verdict_ACTION_REJECT && na == sluicev1.Verdict_ACTION_ACCEPT:
		return StatusChanged, ChangeRejectAccept
	case oa != na:
		return StatusChanged, ChangeAction
	case old.GetReply() != cur.GetReply():
		return StatusChanged, ChangeReply
	case content == ContentChanged:
		return StatusChanged, ChangeContent
	}
	return StatusSame, ""
}

// outcome is a verdict's action and reply for the report.
func outcome(v *sluicev1.Verdict) *Outcome {
	return &Outcome{Action: ActionName(v.GetAction()), Reply: v.GetReply()}
}

// ActionName is an action as the report names it: accept, reject, drop,
// tempfail.
func ActionName(a sluicev1.Verdict_Action) string {
	switch a {
	case sluicev1.Verdict_ACTION_ACCEPT:
		return "accept"
	case sluicev1.Verdict_ACTION_REJECT:
		return "reject"
	case sluicev1.Verdict_ACTION_DROP:
		return "drop"
	case sluicev1.Verdict_ACTION_TEMPFAIL:
		return "tempfail"
	}
	return "unspecified"
}

// readOnly is the store as replay sees it: writes fail, so a slip in
// this package cannot change what the edges and workers stored.
type readOnly struct{ blob.Store }

var errReadOnly = errors.New("replay: the store is read-only here")

func (readOnly) Put(context.Context, string, io.Reader, int64) (int64, error) {
	return 0, errReadOnly
}

func (readOnly) Delete(context.Context, string) error { return errReadOnly }
