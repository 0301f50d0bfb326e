package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/rs/xid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/session"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// pipeline is the edge's side of the message path: the body into the blob
// store, a job onto the queue, the verdict back.
type pipeline struct {
	store      blob.Store
	sub        *queue.Submitter
	edgeID     string
	jobTimeout time.Duration
	retention  time.Duration
	log        *slog.Logger
	metrics    *monitor.EdgeMetrics

	recordPoll time.Duration // 0 = defaultRecordPoll; tests shorten it
}

// defaultRecordPoll is how often the edge looks for a stored verdict
// while it waits for the verdict message; each look is bounded by it too.
const defaultRecordPoll = 5 * time.Second

func (p *pipeline) Filter(ctx context.Context, e *session.Envelope, body io.Reader) (*session.Message, error) {
	m := &session.Message{ID: xid.New().String(), Received: time.Now()}
	key := func(name string) string { return blob.Key(m.ID, m.Received, name) }
	n, err := p.store.Put(ctx, key(blob.MessageName), body, -1)
	m.Size = n
	if err != nil {
		return m, fmt.Errorf("storing message: %w", err)
	}
	p.metrics.MessageSize(n)
	// The sender waits about 10 minutes after its final dot (RFC 5321
	// 4.5.3.2.6): the deadline counts from now, not from DATA.
	deadline := time.Now().Add(p.jobTimeout)
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
	m.Verdict = v
	return m, nil
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
		v, err := worker.LoadRecord(lctx, p.store, job)
		cancel()
		if err == nil {
			found <- v
			return
		}
	}
}

// Open opens the copy to deliver. Filter checked the verdict's key; this
// checks again where the key is used.
func (p *pipeline) Open(ctx context.Context, m *session.Message) (io.ReadCloser, error) {
	messageKey := blob.Key(m.ID, m.Received, blob.MessageName)
	key := m.Verdict.GetDeliverKey()
	if !ownKey(key, messageKey, blob.Key(m.ID, m.Received, blob.FilteredName)) {
		return nil, fmt.Errorf("refusing to deliver %q for message %s", key, m.ID)
	}
	if key == "" {
		key = messageKey
	}
	return p.store.Get(ctx, key)
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
