// Package replay runs stored messages through a filter again and reports
// the verdicts that would change: what an operator wants to know before
// switching a new FilterCommand on. It reads the blob store by its date
// prefix (see blob.Dir), rebuilds each message's filter environment from
// its stored verdict record, runs the filter as a worker would, and
// compares the new verdict with the stored one. It never writes to the
// store, and the filter's output is only hashed: nothing is delivered
// unless Options.DeliverTo asks for the messages it would release.
package replay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
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
	// Select narrows the messages of those days.
	Select      Selection
	Concurrency int // filters running at once; below 1 means 1
	Limit       int // replay at most this many messages; 0 = all
	Logger      *slog.Logger
	// ProgressEvery is how many messages go by between two progress log
	// lines; 0 means DefaultProgressEvery, below 0 none. A line is also
	// written when ProgressInterval (0: DefaultProgressInterval) passed
	// since the last one, for slow filters.
	ProgressEvery    int
	ProgressInterval time.Duration
	// DeliverTo, when set, delivers the messages the filter accepts
	// that were rejected or dropped before (see Deliverer); their output
	// waits in TempDir ("" is the system's) until the verdict is known.
	DeliverTo *Deliverer
	TempDir   string
	// Done holds results of an earlier run of the same replay (see
	// ReadResume), by message id: those messages are reported as they
	// were, not run again.
	Done map[string]Result
	// Pool, when set, runs the messages on a worker pool instead of here
	// (Filter is then unused: the pool's job names it); Concurrency is
	// then the jobs in flight.
	Pool *Pool
	// Progress, when set, is called from Run's goroutine once the listing
	// is done and after each listed message.
	Progress func(Progress)
}

// Progress is how far a run has come.
type Progress struct {
	Done    int // listed messages dealt with (reported, or not selected)
	Total   int // listed messages
	Changed int
	Errors  int
	Elapsed time.Duration // since the listing ended
}

// DefaultProgressEvery is the default number of messages between two
// progress lines in the log, and DefaultProgressInterval the longest
// time between two.
const (
	DefaultProgressEvery    = 200
	DefaultProgressInterval = 10 * time.Second
)

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

	// Received is when the edge took the message (RFC 3339, UTC), from
	// its record; empty when the record could not be read.
	Received string `json:"received,omitempty"`
	FirstTo  string `json:"first_to,omitempty"` // the first recipient
	// Subject is the message's Subject header, decoded (RFC 2047) and on
	// one line; read only for changed messages.
	Subject string `json:"subject,omitempty"`
	// OldMS is how long the stored verdict's filter ran, NewMS the new
	// run: milliseconds, 0 when unknown.
	OldMS float64 `json:"old_filter_ms,omitempty"`
	NewMS float64 `json:"filter_ms,omitempty"`
	// Delivery is set for a message released with --deliver-to.
	Delivery *Delivery `json:"delivery,omitempty"`
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
	// Listed is how many stored messages the selection's listing found
	// (before the record-based criteria: outcome, sender, recipient);
	// Messages counts those reported.
	Listed int `json:"listed"`
	// Delivered and DeliveryFailed count the messages released with
	// --deliver-to: taken by the server, or not.
	Delivered      int `json:"delivered,omitempty"`
	DeliveryFailed int `json:"delivery_failed,omitempty"`
	// Complete is false when the run stopped before every listed message
	// was replayed (interrupted, the store failed, --limit); Stopped says
	// why.
	Complete bool   `json:"complete"`
	Stopped  string `json:"stopped,omitempty"`
}

func (s *Summary) add(r Result) {
	s.Messages++
	if d := r.Delivery; d != nil {
		if d.Error != "" {
			s.DeliveryFailed++
		} else {
			s.Delivered++
		}
	}
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
	every, interval := o.ProgressEvery, o.ProgressInterval
	if every == 0 {
		every = DefaultProgressEvery
	}
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	sel, err := o.Select.compile()
	if err != nil {
		return sum, fmt.Errorf("replay: %w", err)
	}
	r := &runner{store: readOnly{o.Store}, filter: o.Filter, timeout: o.Timeout, sel: sel,
		deliver: o.DeliverTo, tempDir: o.TempDir, pool: o.Pool, done: o.Done}
	if o.Pool != nil {
		r.job = jobOptions{sel: o.Select, wait: poolWait(o.Timeout)}
		r.job.sel.IDs, r.job.sel.Sample = nil, 0
		if o.DeliverTo != nil {
			r.job.deliverTo = o.DeliverTo.Addr
		}
	}
	n := max(o.Concurrency, 1)

	log.Info("replay started", "since", dayString(o.Since), "until", dayString(o.Until),
		"selection", o.Select.String(), "filter", fmt.Sprint(o.Filter), "concurrency", n, "limit", o.Limit)
	entries, err := r.list(ctx, o)
	sum.Listed = len(entries)
	if err != nil {
		err = fmt.Errorf("replay: %w", err)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		sum.Stopped = stopReason(err)
		log.Info("replay finished", "messages", 0, "listed", sum.Listed, "err", err)
		return sum, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	order, wait := r.dispatch(runCtx, entries, n)
	started := time.Now()
	lastLine := started
	prog := Progress{Total: len(entries)}
	if o.Progress != nil {
		o.Progress(prog)
	}
	var reportErr error
	limited := false
	for out := range order {
		res := <-out
		// Once stopped, results are cut short by the stop itself: not
		// worth reporting as errors.
		if reportErr != nil || limited || ctx.Err() != nil {
			continue
		}
		prog.Done++
		if res.Status != "" { // else not selected
			sum.add(res)
			if err := report(res); err != nil {
				reportErr = err
				cancel()
				continue
			}
			if every > 0 && (sum.Messages%every == 0 || time.Since(lastLine) >= interval) {
				lastLine = time.Now()
				elapsed := time.Since(started)
				log.Info("replay progress", "messages", sum.Messages, "done", prog.Done, "listed", prog.Total,
					"changed", sum.Changed, "skipped", sum.Skipped, "errors", sum.Errors, "day", res.Day,
					"per_s", rate(prog.Done, elapsed), "eta_s", eta(prog, elapsed))
			}
			if o.Limit > 0 && sum.Messages >= o.Limit {
				limited = true
				cancel()
			}
		}
		if o.Progress != nil {
			prog.Changed, prog.Errors, prog.Elapsed = sum.Changed, sum.Errors, time.Since(started)
			o.Progress(prog)
		}
	}
	wait()
	switch {
	case reportErr != nil:
		err = fmt.Errorf("replay: report: %w", reportErr)
	case ctx.Err() != nil:
		err = context.Cause(ctx) // why it was stopped: interrupted, or no worker in the pool
	}
	sum.Complete = err == nil && prog.Done == prog.Total
	switch {
	case err != nil:
		sum.Stopped = stopReason(err)
	case limited && prog.Done < prog.Total:
		sum.Stopped = fmt.Sprintf("--limit %d reached", o.Limit)
	}
	log.Info("replay finished", "messages", sum.Messages, "listed", sum.Listed, "same", sum.Same, "changed", sum.Changed,
		"skipped", sum.Skipped, "errors", sum.Errors, "complete", sum.Complete,
		"duration_ms", time.Since(started).Milliseconds(), "err", err)
	return sum, err
}

// stopReason is what the summary says of a run that ended early.
func stopReason(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return err.Error()
}

// rate is messages per second, rounded for the log.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(float64(n)/d.Seconds()*10) / 10
}

// eta is the seconds left at the rate so far, or -1 when unknown.
func eta(p Progress, d time.Duration) float64 {
	if p.Done == 0 {
		return -1
	}
	left := float64(p.Total-p.Done) * d.Seconds() / float64(p.Done)
	return math.Round(left)
}

// task is one message on its way to a filter slot, with the channel its
// result comes back on.
type task struct {
	m   entry
	out chan Result
}

// dispatch hands the listed messages to n filter slots. Each message gets
// a one-slot result channel, queued on order in listing order before the
// message goes to a slot: reading them in that order keeps the report in
// order while n filters run. wait returns once every slot is done.
func (r *runner) dispatch(ctx context.Context, entries []entry, n int) (order <-chan chan Result, wait func()) {
	tasks := make(chan task)
	ordered := make(chan chan Result, n)
	var slots sync.WaitGroup
	for range n {
		slots.Go(func() {
			for t := range tasks {
				t.out <- r.exec(ctx, t.m)
			}
		})
	}
	go func() {
		defer close(ordered)
		defer close(tasks)
		r.queue(ctx, entries, ordered, tasks)
	}()
	return ordered, slots.Wait
}

// queue queues each listed message: a result channel on order, then the
// message on tasks, or at once its result when it cannot be replayed.
func (r *runner) queue(ctx context.Context, entries []entry, order chan<- chan Result, tasks chan<- task) {
	for _, m := range entries {
		out := make(chan Result, 1)
		select {
		case order <- out:
		case <-ctx.Done():
			return
		}
		if res, ok := r.done[m.id]; ok {
			out <- res
			continue
		}
		switch {
		case m.missing != "":
			out <- m.notFound()
			continue
		case !m.record:
			out <- m.skipped(blob.RecordName)
			continue
		case !m.message:
			out <- m.skipped(blob.MessageName)
			continue
		}
		select {
		case tasks <- task{m, out}:
		case <-ctx.Done():
			out <- m.failed(ctx.Err())
			return
		}
	}
}

// list lists the messages the run covers: those of o's days, or the ids
// asked for, narrowed by what the ids say (time, sample).
func (r *runner) list(ctx context.Context, o Options) ([]entry, error) {
	var entries []entry
	keep := func(m entry) error {
		if r.sel.listed(m) {
			entries = append(entries, m)
		}
		return nil
	}
	if len(r.sel.ids) > 0 {
		for _, id := range r.sel.ids {
			m, err := findID(ctx, r.store, id)
			if err != nil {
				return entries, err
			}
			entries = append(entries, m)
		}
		return entries, nil
	}
	err := listMessages(ctx, r.store, o.Since, o.Until, keep)
	return entries, err
}

// entry is one message directory found by the listing.
type entry struct {
	day     time.Time
	id      string
	dir     string // "2006/01/02/<id>"
	message bool   // message.eml is there
	record  bool   // verdict.json is there
	missing string // an id asked for and not found: why
}

// notFound is the result for an id asked for that is not in the store.
func (m entry) notFound() Result {
	res := m.result()
	res.Status = StatusError
	res.Reason = m.missing
	return res
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
			if ctx.Err() != nil {
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
	sel     *selector
	deliver *Deliverer // nil: deliver nothing
	tempDir string     // for the output of messages to release
	pool    *Pool      // run on this worker pool instead of here
	job     jobOptions // the pool's jobs' options
	done    map[string]Result
}

// exec replays m here, or on the pool.
func (r *runner) exec(ctx context.Context, m entry) Result {
	if r.pool != nil {
		return r.pool.one(ctx, m, r.job)
	}
	return r.one(ctx, m)
}

// poolWait bounds the wait for one message's result from the pool: its
// runs (up to poolMaxDeliver, each up to the filter's timeout and the
// store's slack, then the ack wait for a silent worker), and half an hour
// in the queue behind the run's other jobs in flight. A pool that takes
// nothing is noticed sooner, by Pool.Watch.
func poolWait(timeout time.Duration) time.Duration {
	return poolMaxDeliver*(timeout+storeSlack+poolAckWait) + 30*time.Minute
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
	if !r.sel.selected(rec) {
		return Result{ID: m.id} // no status: not selected, not reported
	}
	res.From = job.Sender
	res.To = len(job.GetRecipients())
	if len(job.GetRecipients()) > 0 {
		res.FirstTo = job.GetRecipients()[0]
	}
	if job.GetReceived() != nil {
		res.Received = job.GetReceived().AsTime().UTC().Format(time.RFC3339Nano)
	}
	res.Old = outcome(rec.GetVerdict())
	if v := rec.GetVerdict(); v.GetStarted() != nil && v.GetFinished() != nil {
		res.OldMS = millis(v.GetFinished().AsTime().Sub(v.GetStarted().AsTime()))
	}

	var spool *os.File
	if r.deliver != nil && released(rec.GetVerdict()) {
		// Kept until the verdict is known: what it accepts goes out.
		if spool, err = os.CreateTemp(r.tempDir, "sluice-replay-*.eml"); err != nil {
			return m.failed(fmt.Errorf("spooling the output for --deliver-to: %w", err))
		}
		defer func() { spool.Close(); os.Remove(spool.Name()) }()
	}
	var keep io.Writer // not a nil *os.File in an interface
	if spool != nil {
		keep = spool
	}
	began := time.Now()
	newV, sum, unchanged, err := r.run(ctx, job, m, keep)
	res.NewMS = millis(time.Since(began))
	if errors.Is(err, blob.ErrNotFound) {
		return m.skipped(blob.MessageName)
	}
	if err != nil {
		res.Status, res.Reason = StatusError, err.Error()
		return res
	}
	res.New = outcome(newV)
	res.Detail = newV.GetDetail()
	if newV.GetAction() == sluicev1.Verdict_ACTION_TEMPFAIL {
		// The filter gave no answer (not found, crashed, timed out, a
		// milter unreachable): nothing was learnt about this message.
		res.Status = StatusError
		res.Reason = "the filter gave no answer: " + newV.GetReply()
		if d := newV.GetDetail(); d != "" {
			res.Reason += " (" + d + ")"
		}
		return res
	}

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
	if res.Status == StatusChanged {
		res.Subject = r.subject(ctx, m)
	}
	if spool != nil && newV.GetAction() == sluicev1.Verdict_ACTION_ACCEPT {
		res.Delivery = r.release(ctx, job, m, spool, unchanged)
	}
	return res
}

// release delivers what the new filter accepted: its output, or the
// stored message when it wrote none.
func (r *runner) release(ctx context.Context, job *sluicev1.FilterJob, m entry, spool *os.File, unchanged bool) *Delivery {
	var body io.Reader = spool
	if unchanged {
		rc, err := r.store.Get(ctx, m.dir+"/"+blob.MessageName)
		if err != nil {
			return &Delivery{Error: fmt.Sprintf("reading %s: %v", blob.MessageName, err)}
		}
		defer rc.Close()
		body = rc
	} else if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return &Delivery{Error: "reading the filter's output: " + err.Error()}
	}
	d, err := r.deliver.Deliver(ctx, job.GetSender(), job.GetRecipients(), body)
	if err != nil {
		return &Delivery{Error: err.Error()}
	}
	return d
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return math.Round(float64(d.Microseconds())) / 1000
}

// run runs the filter over the stored message with the environment of its
// first run and returns the new verdict and the sha256 of the output.
// A copy of the output also goes to keep, when it is not nil. unchanged
// is true when the filter accepted without writing anything: it delivers
// the message as stored.
func (r *runner) run(ctx context.Context, job *sluicev1.FilterJob, m entry, keep io.Writer) (v *sluicev1.Verdict, sum []byte, unchanged bool, err error) {
	in, err := r.store.Get(ctx, m.dir+"/"+blob.MessageName)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return nil, nil, false, err
		}
		return nil, nil, false, fmt.Errorf("reading %s: %w", blob.MessageName, err)
	}
	defer in.Close()
	h := sha256.New()
	var out io.Writer = h
	if keep != nil {
		out = io.MultiWriter(h, keep)
	}
	res, err := r.filter.Run(ctx, worker.EnvOf(job), in, out)
	if err != nil {
		return nil, nil, false, err
	}
	unchanged = res.Action == filter.Accept && res.Unchanged
	if unchanged {
		// Nothing written: what it delivers is the message as stored.
		if err := r.hashStored(ctx, m, h); err != nil {
			return nil, nil, false, err
		}
	}
	v, err = worker.VerdictOf(res)
	if err != nil {
		return nil, nil, false, err
	}
	return v, h.Sum(nil), unchanged, nil
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
