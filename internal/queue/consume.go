package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Handler decides one job. ctx ends at the job's deadline. attempt is the
// JetStream delivery count (1 = first). It must return a verdict.
type Handler func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict

// Reasons Consume passes to an OnSkip hook for a job it ended without
// running the handler.
const (
	SkipExpired = "expired" // the job's deadline had passed: the edge already answered 4xx
	SkipInvalid = "invalid" // undecodable, or without a deadline
)

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeConfig)

type consumeConfig struct {
	onSkip  func(reason string)
	abandon context.Context
}

// OnSkip has fn called with SkipExpired or SkipInvalid for every job that
// Consume ends without running the handler; for metrics.
func OnSkip(fn func(reason string)) ConsumeOption {
	return func(c *consumeConfig) { c.onSkip = fn }
}

// AbandonWith gives up the jobs in flight when ctx ends: their contexts
// end then, not only at their own deadlines. For workers whose jobs have
// nobody left to answer, such as an edge's own once its sessions are gone.
func AbandonWith(ctx context.Context) ConsumeOption {
	return func(c *consumeConfig) { c.abandon = ctx }
}

// defaultPullWait is how long one pull request waits for jobs. It also
// bounds how long Consume takes to notice that its ctx is done.
const defaultPullWait = 2 * time.Second

// Consume pulls jobs from the shared consumer and runs h on each, never
// more than slots at once and never holding a job it has no slot for, so
// that an idle worker elsewhere gets it instead. When ctx is done it stops
// pulling, waits for the jobs in flight to finish (their contexts end at
// their own deadlines, not with ctx) and returns nil. It returns an error
// only when the connection is closed for good.
func (q *Queue) Consume(ctx context.Context, slots int, h Handler, opts ...ConsumeOption) error {
	if slots <= 0 {
		return fmt.Errorf("queue: consume with %d slots", slots)
	}
	var cc consumeConfig
	for _, o := range opts {
		o(&cc)
	}
	sem := make(chan struct{}, slots) // one token per job in flight
	var inflight sync.WaitGroup
	defer inflight.Wait()
	release := func(n int) {
		for range n {
			<-sem
		}
	}

	backoff := 100 * time.Millisecond
	for {
		// Wait for one free slot, then take every other free one. A done
		// ctx wins over a free slot (select alone would pick at random).
		if ctx.Err() != nil {
			return nil
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := 1
	more:
		for n < slots {
			select {
			case sem <- struct{}{}:
				n++
			default:
				break more
			}
		}

		// Not cancelled by ctx: a pull request abandoned mid-way could
		// still be served, and its job would wait AckWait for redelivery.
		// Jobs that arrive after ctx is done are handed back instead.
		batch, err := q.consumer().Fetch(n, jetstream.FetchMaxWait(q.pullWait))
		if err != nil {
			release(n)
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("queue: consume: %w", err)
			}
			q.log.Warn("nats: pull failed", "err", err)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				if err := msg.Nak(); err != nil {
					q.log.Debug("nak on shutdown", "err", err)
				}
				release(1)
				continue
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer release(1)
				q.process(ctx, msg, h, &cc)
			}()
		}
		release(n - got)

		switch err := batch.Error(); {
		case err == nil:
			backoff = 100 * time.Millisecond
		case errors.Is(err, nats.ErrConnectionClosed):
			return fmt.Errorf("queue: consume: %w", err)
		default:
			q.log.Warn("nats: pull failed", "err", err)
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
				errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
				// A server that lost its store comes back without our
				// stream: set it up again.
				if err := q.ensure(ctx); err != nil {
					q.log.Warn("nats: stream set-up failed", "err", err)
				}
			}
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// process runs one job: skip it if it cannot or need not run, else run h
// with heartbeats, reply, and ack.
func (q *Queue) process(ctx context.Context, msg jetstream.Msg, h Handler, cc *consumeConfig) {
	skipped := func(reason string) {
		if cc.onSkip != nil {
			cc.onSkip(reason)
		}
	}
	var attempt uint32 = 1
	if md, err := msg.Metadata(); err == nil {
		attempt = uint32(md.NumDelivered)
	}
	job := new(sluicev1.FilterJob)
	if err := proto.Unmarshal(msg.Data(), job); err != nil {
		q.log.Error("undecodable job, dropped", "subject", msg.Subject(), "err", err)
		q.term(msg, "undecodable job")
		skipped(SkipInvalid)
		return
	}
	log := q.log.With("id", job.MessageId, "edge", job.EdgeId, "attempt", attempt)
	if !job.GetDeadline().IsValid() || job.Deadline.AsTime().IsZero() {
		log.Error("job without a deadline, dropped")
		q.term(msg, "no deadline")
		skipped(SkipInvalid)
		return
	}
	deadline := job.Deadline.AsTime()
	if !time.Now().Before(deadline) {
		// The edge has given up and answered 4xx: the sender retries.
		log.Info("job deadline passed, skipped", "deadline", deadline)
		q.term(msg, "deadline passed")
		skipped(SkipExpired)
		return
	}

	// The job's own deadline, not ctx: on shutdown a started job finishes,
	// unless it is abandoned.
	jctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	if cc.abandon != nil {
		stop := context.AfterFunc(cc.abandon, cancel)
		defer stop()
	}
	done := make(chan *sluicev1.Verdict, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("job handler panicked", "panic", r, "stack", string(debug.Stack()))
				done <- nil
			}
		}()
		done <- h(jctx, job, attempt)
	}()
	// Heartbeats keep a long filter run from being redelivered.
	tick := time.NewTicker(max(q.opts.AckWait/3, 100*time.Millisecond))
	var v *sluicev1.Verdict
wait:
	for {
		select {
		case v = <-done:
			break wait
		case <-tick.C:
			if err := msg.InProgress(); err != nil {
				log.Debug("in-progress heartbeat failed", "err", err)
			}
		}
	}
	tick.Stop()
	cancel()

	if v == nil {
		log.Error("job handler gave no verdict; job handed back")
		if err := msg.Nak(); err != nil {
			log.Warn("nak failed", "err", err)
		}
		return
	}
	v.Attempt = attempt
	if v.MessageId == "" {
		v.MessageId = job.MessageId
	}
	if job.ReplySubject != "" {
		data, err := proto.Marshal(v)
		if err == nil {
			err = q.nc.Publish(job.ReplySubject, data)
		}
		if err != nil {
			log.Warn("verdict publish failed", "subject", job.ReplySubject, "err", err)
		}
	}
	q.ack(msg, log)
}

// ack acks synchronously, retrying briefly. A job whose ack is lost is
// redelivered; the worker's stored verdict record then answers it without
// running the filter again.
func (q *Queue) ack(msg jetstream.Msg, log *slog.Logger) {
	var err error
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err = msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	log.Warn("job ack failed; it will be redelivered", "err", err)
}

func (q *Queue) term(msg jetstream.Msg, reason string) {
	if err := msg.TermWithReason(reason); err != nil {
		q.log.Warn("job term failed", "reason", reason, "err", err)
	}
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
