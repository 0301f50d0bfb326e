package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/rs/xid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/record"
	"github.com/sluice-mail/sluice/internal/session"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Submitter publishes a filter job and waits for its verdict;
// *queue.Submitter is one, over NATS.
type Submitter interface {
	Submit(ctx context.Context, job *sluicev1.FilterJob) (*sluicev1.Verdict, error)
}

// pipeline is the edge's side of the message path: the body into the blob
// store, a job onto the queue, the verdict back.
type pipeline struct {
	store      blob.Store
	sub        Submitter
	edgeID     string
	jobTimeout time.Duration // from the final dot to the reply
	storeIdle  time.Duration // TimeOut: the longest the store may stop reading a body before its final dot; 0 = no limit
	retention  time.Duration
	log        *slog.Logger
	metrics    *monitor.EdgeMetrics

	recordPoll time.Duration // 0 = defaultRecordPoll; tests shorten it
}

// defaultRecordPoll is how often the edge looks for a stored verdict
// while it waits for the verdict message; each look is bounded by it too.
const defaultRecordPoll = 5 * time.Second

// Why an upload was cut short, for the log line of the message.
var (
	errPastDeadline = errors.New("job_timeout after the final dot passed")
	errStoreStalled = errors.New("the store stopped reading the message")
)

func (p *pipeline) Filter(ctx context.Context, e *session.Envelope, body io.Reader) (*session.Message, error) {
	m := &session.Message{ID: xid.New().String(), Received: time.Now()}
	key := func(name string) string { return blob.Key(m.ID, m.Received, name) }
	// The sender waits about 10 minutes after its final dot (RFC 5321
	// 4.5.3.2.6), whatever the store does: the upload, the job and the
	// delivery share one deadline that starts at the dot.
	putCtx, cancelPut := context.WithCancelCause(ctx)
	clock := newBodyClock(body, p.jobTimeout, p.storeIdle, cancelPut)
	n, err := p.store.Put(putCtx, key(blob.MessageName), clock, -1)
	clock.stop()
	cause := context.Cause(putCtx)
	cancelPut(nil)
	m.Size = n
	if err != nil {
		if errors.Is(cause, errPastDeadline) || errors.Is(cause, errStoreStalled) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return m, fmt.Errorf("storing message: %w", err)
	}
	p.metrics.MessageSize(n)
	deadline := clock.deadline()
	m.Deadline = deadline
	job := &sluicev1.FilterJob{
		MessageId:   m.ID,
		EdgeId:      p.edgeID,
		MessageKey:  key(blob.MessageName),
		FilteredKey: key(blob.FilteredName),
		RecordKey:   key(blob.RecordName),
		MessageSize: n,
		Received:    timestamppb.New(m.Received),
		Deadline:    timestamppb.New(deadline),
		Sender:      e.Sender,
		Recipients:  e.Recipients,
		ClientAddr:  e.ClientAddr,
		ServerAddr:  e.ServerAddr,
		RemoteAddr:  e.RemoteAddr,
		RemoteHelo:  e.RemoteHelo,
		ClientHelo:  e.ClientHelo,
	}
	if e.TLS != nil {
		job.TlsVersion, job.TlsCipher = e.TLS.Version, e.TLS.Cipher
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	sent := time.Now()
	v, err := p.await(ctx, job)
	if err != nil {
		return m, fmt.Errorf("filter job: %w", err)
	}
	if err := checkVerdict(job, v); err != nil {
		p.log.Warn("verdict refused", "id", m.ID, "worker", v.GetWorkerId(), "err", err)
		return m, fmt.Errorf("filter job: %w", err)
	}
	p.metrics.VerdictWait(time.Since(sent))
	m.Verdict = sessionVerdict(job, v)
	return m, nil
}

// actions maps the schema's actions to the session's; anything else is
// ActionUnknown, which the session answers as a malformed verdict.
var actions = map[sluicev1.Verdict_Action]session.Action{
	sluicev1.Verdict_ACTION_ACCEPT:   session.ActionAccept,
	sluicev1.Verdict_ACTION_REJECT:   session.ActionReject,
	sluicev1.Verdict_ACTION_DROP:     session.ActionDrop,
	sluicev1.Verdict_ACTION_TEMPFAIL: session.ActionTempFail,
}

// sessionVerdict is a worker's verdict on job as the session acts on it;
// checkVerdict has made sure that it names no other message to deliver.
func sessionVerdict(job *sluicev1.FilterJob, v *sluicev1.Verdict) *session.Verdict {
	sv := &session.Verdict{
		Action:   actions[v.GetAction()],
		Reply:    v.GetReply(),
		Status:   v.GetStatus(),
		Detail:   v.GetDetail(),
		Filtered: v.GetDeliverKey() != "" && v.GetDeliverKey() == job.GetFilteredKey(),
	}
	if v.GetEnvelopeChanged() {
		sv.Envelope = &session.NewEnvelope{Sender: v.GetEnvelopeSender(), Recipients: v.GetEnvelopeRecipients()}
	}
	return sv
}

// checkVerdict refuses a verdict that is not job's, or that would have
// the edge deliver anything but this message's own body or its own
// filtered copy. A worker is another process, and whoever can publish on
// the edge's verdict subject must not make it deliver another sender's
// stored message.
func checkVerdict(job *sluicev1.FilterJob, v *sluicev1.Verdict) error {
	if v.GetMessageId() != job.GetMessageId() {
		return fmt.Errorf("verdict for %q, expected %q", v.GetMessageId(), job.GetMessageId())
	}
	if v.GetAction() == sluicev1.Verdict_ACTION_ACCEPT && !ownKey(v.GetDeliverKey(), job.GetMessageKey(), job.GetFilteredKey()) {
		return fmt.Errorf("verdict by %q names %q to deliver, which is neither this message nor its filtered copy",
			v.GetWorkerId(), v.GetDeliverKey())
	}
	return nil
}

// ownKey reports whether a verdict's deliver key is the message's own
// body ("" means that too) or its filtered copy.
func ownKey(key, messageKey, filteredKey string) bool {
	return key == "" || key == messageKey || key == filteredKey
}

// await submits job and waits for its verdict. A verdict message that
// went out while this edge was reconnecting to NATS is lost, but the
// worker also stored it next to the message: look there too, now and
// then, apart from the wait, so that a verdict that arrives never waits
// for a store that hangs.
func (p *pipeline) await(ctx context.Context, job *sluicev1.FilterJob) (*sluicev1.Verdict, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   *sluicev1.Verdict
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := p.sub.Submit(ctx, job)
		done <- result{v, err}
	}()
	// Not waited for: a look in progress ends with ctx, and a store that
	// ignores ctx must not hold the reply back either.
	stored := make(chan *sluicev1.Verdict, 1)
	go p.pollRecord(ctx, job, stored)
	select {
	case r := <-done:
		return r.v, r.err
	case v := <-stored:
		p.log.Info("verdict message missed; verdict read from the store", "id", job.MessageId)
		return v, nil
	}
}

// pollRecord looks for job's stored verdict every recordPoll until it
// finds one (sent on found) or ctx ends. One look at a time, each bounded
// by recordPoll: a hanging store costs one pending request, not a pile.
func (p *pipeline) pollRecord(ctx context.Context, job *sluicev1.FilterJob, found chan<- *sluicev1.Verdict) {
	every := p.recordPoll
	if every <= 0 {
		every = defaultRecordPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, every)
		v, err := record.Load(lctx, p.store, job)
		cancel()
		if err == nil {
			found <- v
			return
		}
	}
}

// Open opens the copy to deliver: the message's own body or its filtered
// copy, the only two keys it can name.
func (p *pipeline) Open(ctx context.Context, m *session.Message) (io.ReadCloser, error) {
	name := blob.MessageName
	if m.Verdict.Filtered {
		name = blob.FilteredName
	}
	return p.store.Get(ctx, blob.Key(m.ID, m.Received, name))
}

// bodyClock is the message body as the store reads it. It notes the final
// dot (the body's EOF) and from then on cancels the upload at the
// deadline; before the dot it cancels an upload whose store has stopped
// reading for idle (S3 hanging while a part uploads): the session then
// reads the rest of the message and answers 4xx while the sender still
// listens, rather than leave its final dot unread in the socket.
type bodyClock struct {
	r       io.Reader
	timeout time.Duration
	idle    time.Duration
	cancel  context.CancelCauseFunc

	mu    sync.Mutex
	dot   time.Time   // zero until EOF
	timer *time.Timer // the idle watchdog before the dot, the deadline after; nil when stopped
}

func newBodyClock(r io.Reader, timeout, idle time.Duration, cancel context.CancelCauseFunc) *bodyClock {
	c := &bodyClock{r: r, timeout: timeout, idle: idle, cancel: cancel}
	if idle > 0 {
		c.timer = time.AfterFunc(idle, func() { cancel(errStoreStalled) })
	}
	return c
}

func (c *bodyClock) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.dot.IsZero() && c.timer != nil {
		// The store asks for more: it is not stalled, whatever the client
		// takes to send it (the session's own timeouts bound that).
		c.timer.Stop()
	}
	c.mu.Unlock()
	n, err := c.r.Read(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.dot.IsZero():
	case err == io.EOF:
		c.dot = time.Now()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.timer = time.AfterFunc(c.timeout, func() { c.cancel(errPastDeadline) })
	case c.timer != nil:
		c.timer.Reset(c.idle)
	}
	return n, err
}

// stop ends the clock once the store is done with the body.
func (c *bodyClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// deadline is final dot + job_timeout. A store that returned without
// reading to EOF (none should) gets the deadline counted from now.
func (c *bodyClock) deadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dot.IsZero() {
		return time.Now().Add(c.timeout)
	}
	return c.dot.Add(c.timeout)
}

// Finish removes the stored copies at once when retention is zero; the
// sweeper removes them later otherwise.
func (p *pipeline) Finish(m *session.Message) {
	if p.retention > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{blob.MessageName, blob.FilteredName, blob.RecordName} {
		if err := p.store.Delete(ctx, blob.Key(m.ID, m.Received, name)); err != nil {
			p.log.Warn("removing stored message", "id", m.ID, "err", err)
		}
	}
}
