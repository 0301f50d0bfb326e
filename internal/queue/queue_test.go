package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// open opens a queue and closes it when the test ends.
func open(t *testing.T, o Options) *Queue {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.StoreDir == "" && len(o.URLs) == 0 && o.Server == nil {
		o.StoreDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	q.pullWait = 300 * time.Millisecond // quick shutdowns; Consume waits for its pull to end
	return q
}

// consume runs q.Consume until the test ends (or stop is called) and
// checks that it returned nil.
func consume(t *testing.T, q *Queue, slots int, h Handler, opts ...ConsumeOption) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Consume(ctx, slots, h, opts...) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Consume: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Consume did not return after its ctx ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func submitter(t *testing.T, q *Queue, edge string) *Submitter {
	t.Helper()
	s, err := q.NewSubmitter(context.Background(), edge)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newJob(id string, deadline time.Time) *sluicev1.FilterJob {
	return &sluicev1.FilterJob{
		MessageId:  id,
		EdgeId:     "edge1",
		MessageKey: "2024/01/01/" + id + "/message.eml",
		Received:   timestamppb.Now(),
		Deadline:   timestamppb.New(deadline),
		Recipients: []string{"rcpt@example.org"},
	}
}

// accept is a handler that accepts every job, naming worker.
func accept(worker string) Handler {
	return func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		return &sluicev1.Verdict{
			MessageId:  job.MessageId,
			Action:     sluicev1.Verdict_ACTION_ACCEPT,
			DeliverKey: job.MessageKey,
			WorkerId:   worker,
		}
	}
}

func submit(t *testing.T, s *Submitter, job *sluicev1.FilterJob, timeout time.Duration) (*sluicev1.Verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.Submit(ctx, job)
}

func mustSubmit(t *testing.T, s *Submitter, job *sluicev1.FilterJob) *sluicev1.Verdict {
	t.Helper()
	v, err := submit(t, s, job, 20*time.Second)
	if err != nil {
		t.Fatalf("Submit %s: %v", job.MessageId, err)
	}
	if v.MessageId != job.MessageId {
		t.Fatalf("verdict for %q, want %q", v.MessageId, job.MessageId)
	}
	return v
}

func streamState(t *testing.T, q *Queue) jetstream.StreamState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := q.js.Stream(ctx, q.opts.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func consumerInfo(t *testing.T, q *Queue) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := q.consumer().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestEmbeddedInProcess(t *testing.T) {
	q := open(t, Options{Name: "inproc"})
	if q.Server() == nil {
		t.Fatal("no embedded server")
	}
	if addr := q.Server().Addr(); addr != nil {
		t.Fatalf("embedded server listens on %v; want no TCP port", addr)
	}
	if err := q.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	consume(t, q, 2, accept("w1"))
	s := submitter(t, q, "edge1")
	job := newJob("m1", time.Now().Add(10*time.Second))
	v := mustSubmit(t, s, job)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || v.WorkerId != "w1" || v.Attempt != 1 {
		t.Errorf("verdict %v", v)
	}
	if job.ReplySubject != DefaultVerdictPrefix+".edge1" {
		t.Errorf("reply subject %q", job.ReplySubject)
	}
	// Acked: the work queue is empty again.
	eventually(t, "empty stream", func() bool { return streamState(t, q).Msgs == 0 })
}

func TestEmbeddedListen(t *testing.T) {
	edge := open(t, Options{Listen: "127.0.0.1:0", User: "sluice", Password: "secret"})
	addr, ok := edge.Server().Addr().(*net.TCPAddr)
	if !ok || addr.Port == 0 || !addr.IP.IsLoopback() {
		t.Fatalf("embedded server address %v", edge.Server().Addr())
	}
	url := fmt.Sprintf("nats://%s", addr)

	// Without the credentials an outside worker is refused.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if q, err := Open(ctx, Options{URLs: []string{url}, Logger: testLogger(t)}); err == nil {
		q.Close()
		t.Fatal("Open without credentials succeeded")
	}

	worker := open(t, Options{URLs: []string{url}, User: "sluice", Password: "secret", Name: "tcp-worker"})
	if worker.Server() != nil {
		t.Error("a TCP client reports an embedded server")
	}
	if err := worker.Ready(context.Background()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	consume(t, worker, 1, accept("tcp-worker"))
	s := submitter(t, edge, "edge1")
	if v := mustSubmit(t, s, newJob("m1", time.Now().Add(10*time.Second))); v.WorkerId != "tcp-worker" {
		t.Errorf("verdict from %q", v.WorkerId)
	}
}

func TestOpenGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close() // nobody listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	q, err := Open(ctx, Options{URLs: []string{url}, Logger: testLogger(t)})
	if err == nil {
		q.Close()
		t.Fatal("Open with no server succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open: %v, want it to mention the deadline", err)
	}
	if _, err := Open(context.Background(), Options{Subject: "a.*"}); err == nil {
		t.Error("Open with a wildcard subject succeeded")
	}
}

func TestSharedConsumer(t *testing.T) {
	edge := open(t, Options{})
	const jobs = 200
	var mu sync.Mutex
	handled := map[string]int{}
	byWorker := map[string]int{}
	for i := range 3 {
		w := open(t, Options{Server: edge.Server(), Name: fmt.Sprintf("w%d", i)})
		name := fmt.Sprintf("w%d", i)
		consume(t, w, 4, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
			mu.Lock()
			handled[job.MessageId]++
			byWorker[name]++
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			return accept(name)(ctx, job, attempt)
		})
	}
	s := submitter(t, edge, "edge1")
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	limit := make(chan struct{}, 50)
	start := time.Now()
	for i := range jobs {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			id := fmt.Sprintf("job-%03d", i)
			v, err := submit(t, s, newJob(id, time.Now().Add(30*time.Second)), 30*time.Second)
			if err == nil && (v.MessageId != id || v.Action != sluicev1.Verdict_ACTION_ACCEPT) {
				err = fmt.Errorf("wrong verdict %v for %s", v, id)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	t.Logf("%d jobs in %v", jobs, time.Since(start))
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != jobs {
		t.Errorf("%d distinct jobs handled, want %d", len(handled), jobs)
	}
	for id, n := range handled {
		if n != 1 {
			t.Errorf("job %s handled %d times", id, n)
		}
	}
	if len(byWorker) < 2 {
		t.Errorf("jobs went to %v; want them shared", byWorker)
	}
	t.Logf("jobs per worker: %v", byWorker)
}

func TestSlotsRespected(t *testing.T) {
	q := open(t, Options{})
	const slots, jobs = 3, 8
	var running, peak atomic.Int32
	gate := make(chan struct{})
	consume(t, q, slots, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-gate
		running.Add(-1)
		return accept("w")(ctx, job, attempt)
	})
	s := submitter(t, q, "edge1")
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() { mustSubmit(t, s, newJob(fmt.Sprintf("m%d", i), time.Now().Add(30*time.Second))) })
	}
	eventually(t, "all slots busy", func() bool { return running.Load() == slots })
	eventually(t, "all jobs in the stream", func() bool { return streamState(t, q).Msgs == jobs })
	// The worker holds only the jobs it runs; the rest wait in the stream
	// for whichever worker frees a slot first.
	ci := consumerInfo(t, q)
	if ci.NumAckPending != slots || ci.NumPending != jobs-slots {
		t.Errorf("ack pending %d, pending %d; want %d and %d", ci.NumAckPending, ci.NumPending, slots, jobs-slots)
	}
	close(gate)
	wg.Wait()
	if p := peak.Load(); p != slots {
		t.Errorf("peak concurrency %d, want %d", p, slots)
	}
}

// skips records the reasons an OnSkip hook was called with.
type skips struct {
	mu      sync.Mutex
	reasons []string
}

func (s *skips) add(reason string) { s.mu.Lock(); s.reasons = append(s.reasons, reason); s.mu.Unlock() }

func (s *skips) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reasons...)
}

func TestExpiredJobNeverRuns(t *testing.T) {
	q := open(t, Options{})
	var calls atomic.Int32
	var skipped skips
	consume(t, q, 2, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		calls.Add(1)
		return accept("w")(ctx, job, attempt)
	}, OnSkip(skipped.add))
	s := submitter(t, q, "edge1")
	_, err := submit(t, s, newJob("old", time.Now().Add(-time.Second)), 1500*time.Millisecond)
	var se *SubmitError
	if !errors.As(err, &se) || se.Step != StepVerdict || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit of an expired job: %v, want a verdict timeout", err)
	}
	if !strings.Contains(err.Error(), "old") {
		t.Errorf("error %q does not name the job", err)
	}
	eventually(t, "expired job removed", func() bool { return streamState(t, q).Msgs == 0 })
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for an expired job", n)
	}
	// The consumer goes on with live jobs.
	mustSubmit(t, s, newJob("new", time.Now().Add(10*time.Second)))
	eventually(t, "OnSkip called", func() bool { return len(skipped.get()) > 0 })
	if got := skipped.get(); len(got) != 1 || got[0] != SkipExpired {
		t.Errorf("OnSkip called with %q, want one %q", got, SkipExpired)
	}
}

func TestUndecodableJobDropped(t *testing.T) {
	q := open(t, Options{})
	var calls atomic.Int32
	var skipped skips
	consume(t, q, 1, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		calls.Add(1)
		return accept("w")(ctx, job, attempt)
	}, OnSkip(skipped.add))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := q.js.Publish(ctx, DefaultSubject, []byte("\xff\xff not protobuf")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "garbage removed", func() bool { return streamState(t, q).Msgs == 0 })
	if calls.Load() != 0 {
		t.Error("handler ran for garbage")
	}
	eventually(t, "OnSkip called", func() bool { return len(skipped.get()) > 0 })
	if got := skipped.get(); len(got) != 1 || got[0] != SkipInvalid {
		t.Errorf("OnSkip called with %q, want one %q", got, SkipInvalid)
	}
}

func TestDeduplication(t *testing.T) {
	q := open(t, Options{})
	var calls atomic.Int32
	gate := make(chan struct{})
	consume(t, q, 4, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		calls.Add(1)
		<-gate
		return accept("w")(ctx, job, attempt)
	})
	s := submitter(t, q, "edge1")
	verdicts := make(chan *sluicev1.Verdict, 2)
	for range 2 {
		go func() {
			v, err := submit(t, s, newJob("same", time.Now().Add(20*time.Second)), 20*time.Second)
			if err != nil {
				t.Error(err)
			}
			verdicts <- v
		}()
	}
	eventually(t, "both submits waiting", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.waiters["same"]) == 2
	})
	eventually(t, "handler running", func() bool { return calls.Load() == 1 })
	close(gate)
	for range 2 {
		if v := <-verdicts; v == nil || v.MessageId != "same" {
			t.Fatalf("verdict %v", v)
		}
	}
	// A third publish of the same id is still a duplicate: it is never
	// stored, so nothing answers it.
	_, err := submit(t, s, newJob("same", time.Now().Add(20*time.Second)), time.Second)
	var se *SubmitError
	if !errors.As(err, &se) || se.Step != StepVerdict {
		t.Fatalf("third submit: %v, want no verdict", err)
	}
	st := streamState(t, q)
	if st.LastSeq != 1 || st.Msgs != 0 {
		t.Errorf("stream last seq %d, msgs %d; want one message ever, none left", st.LastSeq, st.Msgs)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestSlowHandlerNotRedelivered(t *testing.T) {
	// The handler runs for three AckWaits; heartbeats every AckWait/3
	// keep the job. AckWait is 2 s rather than less so that a loaded
	// machine (CI runs this under the race detector beside other
	// packages) does not miss a heartbeat window.
	q := open(t, Options{AckWait: 2 * time.Second})
	var calls atomic.Int32
	consume(t, q, 2, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		calls.Add(1)
		time.Sleep(6 * time.Second)
		return accept("w")(ctx, job, attempt)
	})
	s := submitter(t, q, "edge1")
	v := mustSubmit(t, s, newJob("slow", time.Now().Add(20*time.Second)))
	if v.Attempt != 1 {
		t.Errorf("attempt %d, want 1", v.Attempt)
	}
	// A redelivery would have reached the second, free slot by now.
	time.Sleep(2500 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times; the job was redelivered", n)
	}
	if ci := consumerInfo(t, q); ci.Delivered.Consumer != 1 {
		t.Errorf("consumer delivered %d times", ci.Delivered.Consumer)
	}
}

func TestConsumeShutdownFinishesInFlight(t *testing.T) {
	q := open(t, Options{})
	started := make(chan struct{})
	var jobCtxErr atomic.Value
	stop := consume(t, q, 2, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		close(started)
		time.Sleep(time.Second)
		jobCtxErr.Store(fmt.Sprint(ctx.Err()))
		return accept("w")(ctx, job, attempt)
	})
	s := submitter(t, q, "edge1")
	verdict := make(chan *sluicev1.Verdict, 1)
	go func() {
		v, err := submit(t, s, newJob("m1", time.Now().Add(20*time.Second)), 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		verdict <- v
	}()
	<-started
	stop() // cancels ctx and waits for Consume to return
	if got := jobCtxErr.Load(); got != "<nil>" {
		t.Errorf("job context error %v; shutdown must not cancel running jobs", got)
	}
	if v := <-verdict; v == nil || v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Errorf("verdict %v", v)
	}
	eventually(t, "job acked", func() bool { return streamState(t, q).Msgs == 0 })
}

func TestReconnectAfterServerRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	so := Options{StoreDir: t.TempDir(), Listen: listen, Logger: testLogger(t)}
	ns, err := StartServer(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() }) // runs after the queue's own clean-up

	q := open(t, Options{URLs: []string{"nats://" + listen}})
	consume(t, q, 2, accept("w"))
	s := submitter(t, q, "edge1")
	mustSubmit(t, s, newJob("before", time.Now().Add(10*time.Second)))

	ns.Shutdown()
	ns.WaitForShutdown()
	eventually(t, "disconnect seen", func() bool { return q.Ready(context.Background()) != nil })
	ns, err = StartServer(so)
	if err != nil {
		t.Fatal(err)
	}
	// Same process, same Queue, same Submitter and Consume loop.
	mustSubmit(t, s, newJob("after", time.Now().Add(30*time.Second)))
	eventually(t, "ready again", func() bool { return q.Ready(context.Background()) == nil })
}

// Issue 10: the embedded server keeps the job stream in memory (its jobs
// die with the edge's sessions anyway); a stream an older version left
// on file in the same store is moved to memory by the server's owner,
// and a client joining by URL keeps what it finds.
func TestEmbeddedStreamInMemory(t *testing.T) {
	dir := t.TempDir()
	old, err := StartServer(Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// An older version's stream, on file, with a job its edge never saw
	// through.
	prev := open(t, Options{Server: old})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := prev.js.DeleteStream(ctx, DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := prev.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: DefaultStream, Subjects: []string{DefaultSubject, DefaultSubject + ".>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := prev.js.Publish(ctx, DefaultSubject, []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	prev.Close()
	old.Shutdown()
	old.WaitForShutdown()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	q := open(t, Options{StoreDir: dir, Listen: listen})
	info := streamInfo(t, q)
	if info.Config.Storage != jetstream.MemoryStorage || info.State.Msgs != 0 {
		t.Errorf("embedded stream: storage %v with %d jobs, want memory and the orphan dropped", info.Config.Storage, info.State.Msgs)
	}
	w := open(t, Options{URLs: []string{"nats://" + listen}})
	if st := streamInfo(t, w).Config.Storage; st != jetstream.MemoryStorage {
		t.Errorf("after a worker joined by URL: storage %v, want memory kept", st)
	}
	consume(t, w, 1, accept("w"))
	s := submitter(t, q, "edge1")
	mustSubmit(t, s, newJob("in memory", time.Now().Add(10*time.Second)))
	eventually(t, "job acked", func() bool { return streamState(t, q).Msgs == 0 })
}

func streamInfo(t *testing.T, q *Queue) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := q.js.Stream(ctx, q.opts.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo()
}
