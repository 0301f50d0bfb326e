package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Step names the part of Submit that failed.
type Step string

const (
	StepPublish Step = "publish" // the job never reached the stream
	StepVerdict Step = "verdict" // the job was queued, no verdict came in time
)

// SubmitError says which step of Submit failed and why.
type SubmitError struct {
	Step      Step
	MessageID string
	Err       error
}

func (e *SubmitError) Error() string {
	switch e.Step {
	case StepPublish:
		return fmt.Sprintf("queue: publish job %s: %v", e.MessageID, e.Err)
	default:
		return fmt.Sprintf("queue: no verdict for job %s: %v", e.MessageID, e.Err)
	}
}

func (e *SubmitError) Unwrap() error { return e.Err }

// Submitter publishes an edge's jobs and receives their verdicts on the
// edge's own subject.
type Submitter struct {
	q       *Queue
	log     *slog.Logger
	subject string
	sub     *nats.Subscription

	mu      sync.Mutex
	waiters map[string][]chan *sluicev1.Verdict
}

// NewSubmitter subscribes to the verdict subject of edgeID. The
// subscription lives as long as the Submitter and survives reconnects.
func (q *Queue) NewSubmitter(ctx context.Context, edgeID string) (*Submitter, error) {
	if !validToken(edgeID) {
		return nil, fmt.Errorf("queue: bad edge id %q (no dots, spaces or wildcards)", edgeID)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Submitter{
		q:       q,
		log:     q.log.With("edge", edgeID),
		subject: q.opts.VerdictPrefix + "." + edgeID,
		waiters: make(map[string][]chan *sluicev1.Verdict),
	}
	sub, err := q.nc.Subscribe(s.subject, s.onVerdict)
	if err != nil {
		return nil, fmt.Errorf("queue: subscribe to %s: %w", s.subject, err)
	}
	// A busy edge may receive many verdicts at once; never drop them for
	// a slow callback.
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("queue: %w", err)
	}
	s.sub = sub
	return s, nil
}

// Subject is where this Submitter's verdicts arrive.
func (s *Submitter) Subject() string { return s.subject }

// Close stops listening for verdicts; waiting Submits time out.
func (s *Submitter) Close() {
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Debug("unsubscribe verdicts", "err", err)
	}
}

func (s *Submitter) onVerdict(m *nats.Msg) {
	v := new(sluicev1.Verdict)
	if err := proto.Unmarshal(m.Data, v); err != nil {
		s.log.Warn("undecodable verdict", "subject", m.Subject, "err", err)
		return
	}
	s.mu.Lock()
	chs := slices.Clone(s.waiters[v.MessageId]) // unwait edits the original
	s.mu.Unlock()
	if len(chs) == 0 {
		s.log.Debug("verdict for a job nobody waits for", "id", v.MessageId)
		return
	}
	for i, ch := range chs {
		w := v
		if i > 0 {
			w = proto.Clone(v).(*sluicev1.Verdict)
		}
		select {
		case ch <- w:
		default: // already answered (a redelivered job's second verdict)
		}
	}
}

func (s *Submitter) wait(id string) chan *sluicev1.Verdict {
	ch := make(chan *sluicev1.Verdict, 1)
	s.mu.Lock()
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	return ch
}

func (s *Submitter) unwait(id string, ch chan *sluicev1.Verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	chs := s.waiters[id]
	for i, c := range chs {
		if c == ch {
			chs = append(chs[:i], chs[i+1:]...)
			break
		}
	}
	if len(chs) == 0 {
		delete(s.waiters, id)
	} else {
		s.waiters[id] = chs
	}
}

// Submit publishes job (setting its ReplySubject) and waits for its
// verdict until ctx is done. The publish is retried with short timeouts, a
// leader election leaving requests unanswered; JetStream de-duplicates the
// retries by the job's MessageId. Errors are *SubmitError.
func (s *Submitter) Submit(ctx context.Context, job *sluicev1.FilterJob) (*sluicev1.Verdict, error) {
	id := job.GetMessageId()
	if id == "" {
		return nil, &SubmitError{Step: StepPublish, Err: errors.New("job has no message id")}
	}
	job.ReplySubject = s.subject
	data, err := proto.Marshal(job)
	if err != nil {
		return nil, &SubmitError{Step: StepPublish, MessageID: id, Err: err}
	}
	// Listen before publishing: a fast worker may answer at once.
	ch := s.wait(id)
	defer s.unwait(id, ch)

	pctx, cancel := context.WithTimeout(ctx, s.q.opts.PublishTimeout)
	err = s.publish(pctx, id, data)
	cancel()
	if err != nil {
		return nil, &SubmitError{Step: StepPublish, MessageID: id, Err: err}
	}
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		return nil, &SubmitError{Step: StepVerdict, MessageID: id, Err: ctx.Err()}
	}
}

// DefaultPublishTimeout bounds the publish retries: long enough to ride
// out a JetStream leader election (~7 s), short enough that a sender is
// told 4xx soon when NATS is down rather than after the whole job_timeout.
const DefaultPublishTimeout = 15 * time.Second

func (s *Submitter) publish(ctx context.Context, id string, data []byte) error {
	msg := &nats.Msg{Subject: s.q.opts.Subject, Data: data, Header: nats.Header{}}
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		ack, err := s.q.js.PublishMsg(pctx, msg,
			jetstream.WithMsgID(id), jetstream.WithExpectStream(s.q.opts.Stream))
		cancel()
		if err == nil {
			if ack.Duplicate {
				s.log.Debug("job publish de-duplicated", "id", id, "attempt", attempt)
			}
			return nil
		}
		if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrConnectionClosed) ||
			errors.Is(err, nats.ErrBadSubject) {
			return err
		}
		s.log.Debug("job publish failed, retrying", "id", id, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %d attempts: %w)", ctx.Err(), attempt, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
