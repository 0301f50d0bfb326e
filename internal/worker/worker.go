// Package worker is what a filter worker does with one job: read the
// message from the blob store, run the FilterCommand over it, store the
// filtered message and the verdict record, and answer with the verdict.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/record"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Reply and status when the store, not the filter, failed.
const (
	storeFailReply  = "451 4.3.0 Temporary failure, please try again later"
	storeFailStatus = "FILTER-ERROR"
)

// recordTimeout bounds writing the verdict record, which happens even when
// the job's deadline has passed: the record is for audit and replay.
const recordTimeout = 30 * time.Second

// Worker runs one worker's FilterCommand over jobs.
type Worker struct {
	ID     string // e.g. hostname-pid, in every verdict
	Store  blob.Store
	Filter filter.Filter // nil: no FilterCommand, the message is delivered as received
	Logger *slog.Logger

	Metrics *monitor.WorkerMetrics // nil: nothing counted

	// Abandon, if set, gives up the jobs in progress when it ends, rather
	// than let them finish after Run's ctx: an edge's in-process workers
	// once its sessions, which alone wait for their verdicts, are gone.
	Abandon context.Context

	records sync.WaitGroup // verdict records still being stored
}

func (w *Worker) log() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}

// Handle decides one job; it has the queue.Handler signature. ctx ends at
// the job's deadline. It always returns a verdict: any failure of its own
// is a TEMPFAIL, so the edge answers 4xx and the sender retries.
func (w *Worker) Handle(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
	log := w.log().With("id", job.GetMessageId(), "attempt", attempt)
	w.Metrics.Busy(1)
	defer w.Metrics.Busy(-1)

	// An earlier attempt finished but its reply or ack was lost: answer
	// the same again rather than run the filter twice.
	if v, err := record.Load(ctx, w.Store, job); err == nil {
		log.Info("verdict already recorded; not filtering again",
			"action", jobResult(v.GetAction()), "status", v.GetStatus(), "by", v.GetWorkerId())
		w.Metrics.Job(jobResult(v.GetAction()))
		return v
	} else if !errors.Is(err, blob.ErrNotFound) {
		log.Warn("cannot read an earlier verdict record; filtering", "key", job.GetRecordKey(), "err", err)
	}

	started := time.Now()
	v := w.decide(ctx, job, log)
	v.MessageId = job.GetMessageId()
	v.WorkerId = w.ID
	v.Attempt = attempt
	v.Started = timestamppb.New(started)
	v.Finished = timestamppb.Now()

	// A 4xx of the filter's or the store's making (a program not found,
	// a crash, a timeout) is the operator's to fix: WARN, with the reason.
	level := slog.LevelInfo
	if v.Action == sluicev1.Verdict_ACTION_TEMPFAIL {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "filtered",
		"action", jobResult(v.Action), "status", v.Status, "detail", v.Detail, "exit", v.ExitCode,
		"size", v.DeliverSize, "duration_ms", v.Finished.AsTime().Sub(started).Milliseconds())

	w.record(ctx, job, v, log)
	w.Metrics.Job(jobResult(v.Action))
	return v
}

// recordWait is how long the verdict waits for its record to be stored.
// The record lets a redelivered job be answered without running the
// filter again, but a store that hangs must not hold the answer back
// while the sender waits: past recordWait the verdict goes out and the
// record is stored behind it (Run waits for it before returning).
const recordWait = 2 * time.Second

// record stores the verdict record, waiting at most recordWait for it.
func (w *Worker) record(ctx context.Context, job *sluicev1.FilterJob, v *sluicev1.Verdict, log *slog.Logger) {
	stored := make(chan error, 1)
	w.records.Add(1)
	go func() {
		defer w.records.Done()
		err := w.storeRecord(ctx, job, v)
		if err != nil {
			log.Error("cannot store the verdict record", "key", job.GetRecordKey(), "err", err)
		}
		stored <- err
	}()
	t := time.NewTimer(recordWait)
	defer t.Stop()
	select {
	case <-stored:
	case <-t.C:
		log.Warn("the store is slow; answering before the verdict record is stored", "key", job.GetRecordKey())
	}
}

// decide runs the filter (if any) and maps its result to a verdict.
func (w *Worker) decide(ctx context.Context, job *sluicev1.FilterJob, log *slog.Logger) *sluicev1.Verdict {
	if w.Filter == nil {
		// Nothing to run: deliver the message as received, no copy.
		return &sluicev1.Verdict{
			Action:      sluicev1.Verdict_ACTION_ACCEPT,
			DeliverKey:  job.GetMessageKey(),
			DeliverSize: job.GetMessageSize(),
		}
	}

	in, err := w.Store.Get(ctx, job.GetMessageKey())
	if err != nil {
		return storeFailure(fmt.Errorf("open message: %w", err))
	}
	defer in.Close()

	// The filter's output streams into the store: the body is never held
	// whole in memory.
	out := &output{ctx: ctx, store: w.Store, key: job.GetFilteredKey()}
	ran := time.Now()
	res, runErr := w.Filter.Run(ctx, EnvOf(job), in, out)
	w.Metrics.FilterRan(time.Since(ran))
	unchanged := runErr == nil && res.Action == filter.Accept && res.Unchanged
	// Whatever reached the store is not to be delivered unless accepted:
	// failing the Put leaves no object behind.
	p := out.finish(runErr == nil && res.Action == filter.Accept && !unchanged)

	switch {
	case runErr != nil:
		return storeFailure(runErr)
	case res.Action == filter.Accept && !unchanged && p.err != nil:
		return storeFailure(fmt.Errorf("store filtered message: %w", p.err))
	}

	v, err := VerdictOf(res)
	if err != nil {
		log.Error("filter returned an unknown action", "action", int(res.Action))
		return storeFailure(err)
	}
	switch {
	case v.Action == sluicev1.Verdict_ACTION_ACCEPT && unchanged:
		// The filter left the message as it was: deliver it, no copy.
		v.DeliverKey = job.GetMessageKey()
		v.DeliverSize = job.GetMessageSize()
	case v.Action == sluicev1.Verdict_ACTION_ACCEPT:
		v.DeliverKey = job.GetFilteredKey()
		v.DeliverSize = p.n
	}
	return v
}

// output is a filter's output on its way into the store, through a
// pipe. The Put starts with the first byte written, so that a filter
// that leaves the message as it was (filter.Result.Unchanged) costs the
// store nothing.
type output struct {
	ctx   context.Context
	store blob.Store
	key   string
	pw    *io.PipeWriter
	done  chan putResult
}

type putResult struct {
	n   int64
	err error
}

func (o *output) Write(p []byte) (int, error) {
	if o.pw == nil {
		o.start()
	}
	return o.pw.Write(p)
}

func (o *output) start() {
	pr, pw := io.Pipe()
	o.pw, o.done = pw, make(chan putResult, 1)
	go func() {
		n, err := o.store.Put(o.ctx, o.key, pr, -1)
		pr.CloseWithError(err) // unblock the filter if the store gave up
		o.done <- putResult{n, err}
	}()
}

// finish ends the Put: with keep, what was written is stored (an empty
// object if nothing was); without, the Put fails and leaves nothing.
func (o *output) finish(keep bool) putResult {
	if o.pw == nil {
		if !keep {
			return putResult{}
		}
		o.start()
	}
	if keep {
		o.pw.Close()
	} else {
		o.pw.CloseWithError(errNotDelivered)
	}
	return <-o.done
}

// VerdictOf maps a filter's result to the verdict a worker answers with;
// for an accept the caller fills in DeliverKey and DeliverSize. Replay
// uses it too, so that old and new verdicts compare like for like.
func VerdictOf(res filter.Result) (*sluicev1.Verdict, error) {
	v := &sluicev1.Verdict{
		Reply:    res.Reply,
		Status:   res.Status,
		Detail:   res.Detail,
		ExitCode: int32(res.ExitCode),
	}
	switch res.Action {
	case filter.Accept:
		v.Action = sluicev1.Verdict_ACTION_ACCEPT
		v.Reply = ""
		if e := res.Envelope; e != nil {
			v.EnvelopeChanged, v.EnvelopeSender, v.EnvelopeRecipients = true, e.Sender, e.Recipients
		}
	case filter.Reject:
		v.Action = sluicev1.Verdict_ACTION_REJECT
	case filter.Drop:
		v.Action = sluicev1.Verdict_ACTION_DROP
	case filter.TempFail:
		v.Action = sluicev1.Verdict_ACTION_TEMPFAIL
	default:
		return nil, fmt.Errorf("filter returned unknown action %d", res.Action)
	}
	return v, nil
}

// jobResult is the metrics' word for a job that ended with action a. An
// unknown action makes the edge answer 4xx: a temporary failure.
func jobResult(a sluicev1.Verdict_Action) string {
	switch a {
	case sluicev1.Verdict_ACTION_ACCEPT:
		return monitor.ResultAccept
	case sluicev1.Verdict_ACTION_REJECT:
		return monitor.ResultReject
	case sluicev1.Verdict_ACTION_DROP:
		return monitor.ResultDrop
	}
	return monitor.ResultTempFail
}

// skipResult is the metrics' word for a job the queue ended without
// running it, for reason.
func skipResult(reason string) string {
	if reason == queue.SkipExpired {
		return monitor.ResultSkippedExpired
	}
	return monitor.ResultSkippedInvalid
}

// errNotDelivered aborts the Put of a filter output nobody will deliver.
var errNotDelivered = errors.New("filter output not delivered")

func storeFailure(err error) *sluicev1.Verdict {
	return &sluicev1.Verdict{
		Action:   sluicev1.Verdict_ACTION_TEMPFAIL,
		Reply:    storeFailReply,
		Status:   storeFailStatus,
		Detail:   err.Error(),
		ExitCode: -1,
	}
}

// EnvOf is the filter environment of a job's message, as the edge saw it.
func EnvOf(job *sluicev1.FilterJob) filter.Env {
	return filter.Env{
		Sender:     job.Sender, // nil when no MAIL was accepted
		Recipients: job.GetRecipients(),
		Client:     job.GetClientAddr(),
		Server:     job.GetServerAddr(),
		Remote:     job.RemoteAddr,
		RemoteHelo: job.RemoteHelo,
		TLSVersion: job.GetTlsVersion(),
		TLSCipher:  job.GetTlsCipher(),
		Helo:       job.GetClientHelo(),
		MessageID:  job.GetMessageId(),
	}
}

func (w *Worker) storeRecord(ctx context.Context, job *sluicev1.FilterJob, v *sluicev1.Verdict) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	return record.Write(ctx, w.Store, job, v)
}

// Consumer hands jobs to a handler, at most slots at a time, until ctx
// ends; *queue.Queue is one, over NATS JetStream.
type Consumer interface {
	Consume(ctx context.Context, slots int, h queue.Handler, opts ...queue.ConsumeOption) error
}

// Run consumes jobs with slots filters at most running at once until ctx
// is done, then waits for the running ones.
func Run(ctx context.Context, q Consumer, w *Worker, slots int) error {
	log := w.log()
	log.Info("worker started", "worker", w.ID, "slots", slots, "filter", w.Filter != nil)
	var opts []queue.ConsumeOption
	if w.Metrics != nil {
		w.Metrics.AddSlots(slots)
		defer w.Metrics.AddSlots(-slots)
		opts = append(opts, queue.OnSkip(func(reason string) { w.Metrics.Job(skipResult(reason)) }))
	}
	if w.Abandon != nil {
		opts = append(opts, queue.AbandonWith(w.Abandon))
	}
	err := q.Consume(ctx, slots, w.Handle, opts...)
	w.records.Wait()
	if err != nil {
		log.Error("worker stopped", "worker", w.ID, "err", err)
		return fmt.Errorf("worker: %w", err)
	}
	log.Info("worker stopped", "worker", w.ID)
	return nil
}
