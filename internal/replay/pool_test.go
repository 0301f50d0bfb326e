package replay

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/queue"
)

// embeddedNATS starts a real embedded nats-server with JetStream for the
// test.
func embeddedNATS(t *testing.T) *server.Server {
	t.Helper()
	ns, err := queue.StartServer(queue.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// dial is one NATS client of ns, closed when the test ends.
func dial(t *testing.T, ns *server.Server) *queue.Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q, err := queue.Dial(ctx, queue.Options{Server: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// testFilters builds a job's FilterCommand as a worker would, without its
// configuration, and counts the builds.
func testFilters(t *testing.T) func(FilterSpec) (filter.Filter, error) {
	tmp := t.TempDir()
	return func(f FilterSpec) (filter.Filter, error) {
		mode := filter.Pipe
		if f.Type == "file" {
			mode = filter.File
		}
		return filter.Command{Command: f.Command, Mode: mode, Timeout: f.Timeout(), TempDir: tmp}, nil
	}
}

// startWorkers runs n pool servers, each on its own connection, as n
// worker processes would; they stop when the returned func is called or
// the test ends.
func startWorkers(t *testing.T, ns *server.Server, store blob.Store, pool string, n int) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, n)
	for range n {
		q := dial(t, ns)
		s := &PoolServer{NC: q.Conn(), JS: q.JetStream(), Store: store, Pools: []string{pool}, Slots: 2,
			Memory: true, TempDir: t.TempDir(), Filter: testFilters(t),
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		go func() {
			defer func() { done <- struct{}{} }()
			if err := s.Serve(ctx); err != nil {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	// The consumer is there once a server set it up.
	q := dial(t, ns)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := q.JetStream().Consumer(context.Background(), PoolStream, poolConsumer(pool)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pool server set up the consumer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		for range n {
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// The same replay on the pool and here gives the same rows: the pool's
// workers read the store, select on the record and run the job's filter
// as a local run does.
func TestPoolMatchesLocal(t *testing.T) {
	store, day0, ids := storeMix(t)
	ns := embeddedNATS(t)
	startWorkers(t, ns, store, "rules", 2)

	newFilter := script(t, "new.sh", `body=$(cat; echo x)
case "$body" in *hi*) echo "550 5.7.1 Now spam" >&2; exit 1;; esac
printf 'X-New: 1\r\n%s' "${body%x}"
`)
	spec := FilterSpec{Command: newFilter, Type: "pipe", TimeoutMS: 30000}
	run := func(t *testing.T, sel Selection, pool bool, done map[string]Result) ([]Result, Summary) {
		t.Helper()
		o := Options{Store: store, Since: day0, Until: day0.AddDate(0, 0, 2), Select: sel, Concurrency: 3,
			Timeout: 30 * time.Second, Done: done,
			Filter: filter.Command{Command: newFilter, Timeout: 30 * time.Second, TempDir: t.TempDir()}}
		if pool {
			q := dial(t, ns)
			p, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "rules", spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			o.Pool, o.Filter = p, nil
		}
		var rs []Result
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		sum, err := Run(ctx, o, func(r Result) error { rs = append(rs, r); return nil })
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return rs, sum
	}
	for _, sel := range []Selection{{}, {Outcomes: []string{"reject", "drop"}}, {From: []string{"*@example.com"}}} {
		local, lsum := run(t, sel, false, nil)
		pooled, psum := run(t, sel, true, nil)
		if len(local) == 0 || len(pooled) != len(local) || lsum != psum {
			t.Fatalf("%v: local %d results %+v, pool %d %+v", sel, len(local), lsum, len(pooled), psum)
		}
		for i := range local {
			l, p := local[i], pooled[i]
			l.NewMS, p.NewMS = 0, 0 // the only field that may differ
			if TextLine(l) != TextLine(p) || l.Subject != p.Subject || l.Received != p.Received || l.FirstTo != p.FirstTo {
				t.Errorf("%v: row %d\nlocal %s %+v\npool  %s %+v", sel, i, TextLine(l), l, TextLine(p), p)
			}
		}
	}
	// The rows themselves, exactly.
	rows, sum := run(t, Selection{}, true, nil)
	var lines []string
	for _, r := range rows {
		lines = append(lines, strings.TrimPrefix(TextLine(r), r.Day+" "+r.ID+" "))
	}
	want := []string{
		`from=alice@example.com to=1 accept -> reject "550 5.7.1 Now spam" changed`,
		`from=spammer@bad.example to=2 reject "550 5.7.1 Spam" -> accept changed`,
		`from=<> to=1 drop "250 2.0.0 Dropped" -> accept changed`,
		`from=alice@example.com to=1 reject "451 4.7.1 Later" -> accept changed`,
		`from=bob@example.com to=1 accept -> accept changed content=changed`,
	}
	if !slices.Equal(lines, want) || sum.Changed != 5 || !sum.Complete {
		t.Errorf("rows:\n%s\nwant:\n%s\n%+v", strings.Join(lines, "\n"), strings.Join(want, "\n"), sum)
	}

	// Resuming: the results of an interrupted run are taken over, only
	// the others run.
	done := map[string]Result{ids["hello"]: rows[0], ids["offer"]: rows[1]}
	resumed, rsum := run(t, Selection{}, true, done)
	if len(resumed) != 5 || rsum.Changed != 5 || !rsum.Complete || resumed[0].NewMS != rows[0].NewMS || resumed[1].NewMS != rows[1].NewMS {
		t.Errorf("resumed: %+v", rsum)
	}
}

// A pool nobody serves is a clear error at once; one whose workers are
// gone stops the run with ErrNoWorker, its summary incomplete.
func TestPoolWithoutWorkers(t *testing.T) {
	store, day0, _ := storeMix(t)
	ns := embeddedNATS(t)
	q := dial(t, ns)
	spec := FilterSpec{Command: "cat", TimeoutMS: 30000}

	_, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "nobody", spec, nil)
	if !errors.Is(err, ErrNoWorker) || !strings.Contains(err.Error(), "worker.replay_pools: nobody") {
		t.Errorf("no stream: %v", err)
	}
	stop := startWorkers(t, ns, store, "gone", 1)
	_, err = OpenPool(context.Background(), q.Conn(), q.JetStream(), "nobody", spec, nil)
	if !errors.Is(err, ErrNoWorker) || !strings.Contains(err.Error(), "no consumer replay-nobody") {
		t.Errorf("no consumer: %v", err)
	}

	stop() // the consumer stays, nobody takes its jobs
	p, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "gone", spec,
		slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	p.NoWorkerAfter = time.Second
	p.StuckAfter = 3 * time.Second // the stopped worker may hold a job it took
	wctx, stopWatch := context.WithTimeout(context.Background(), 90*time.Second)
	defer stopWatch()
	ctx, cancel := context.WithCancelCause(wctx)
	defer cancel(nil)
	go p.Watch(ctx, cancel)
	started := time.Now()
	sum, err := Run(ctx, Options{Store: store, Since: day0, Until: day0.AddDate(0, 0, 2), Concurrency: 4, Pool: p,
		Timeout: 30 * time.Second}, func(Result) error { return nil })
	if !errors.Is(err, ErrNoWorker) || sum.Complete || !strings.Contains(sum.Stopped, "none") || sum.Messages != 0 {
		t.Errorf("after %s: err %v, summary %+v", time.Since(started), err, sum)
	}
	// Its jobs are dropped from the stream on Close.
	p.Close()
	st, err := q.JetStream().Stream(context.Background(), PoolStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Errorf("jobs left after Close: %v %+v", err, info.State)
	}
}

// A job runs on a worker that needs no restart for a new filter: two
// replays with two filters on the same running worker.
func TestPoolTakesNewFilters(t *testing.T) {
	store, day0, _ := storeMix(t)
	ns := embeddedNATS(t)
	startWorkers(t, ns, store, "p", 1)
	marks := t.TempDir()
	for _, name := range []string{"first", "second"} {
		q := dial(t, ns)
		cmd := "touch " + filepath.Join(marks, name) + ".$$; cat"
		p, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "p", FilterSpec{Command: cmd, TimeoutMS: 30000}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		sum, err := Run(ctx, Options{Store: store, Since: day0, Until: day0.AddDate(0, 0, 2), Pool: p,
			Timeout: 30 * time.Second}, func(Result) error { return nil })
		cancel()
		p.Close()
		if err != nil || sum.Messages != 5 || !sum.Complete {
			t.Fatalf("%s: %v %+v", name, err, sum)
		}
		runs, _ := filepath.Glob(filepath.Join(marks, name) + ".*")
		if len(runs) != 5 {
			t.Errorf("%s: the filter ran %d times, want 5", name, len(runs))
		}
	}
	if _, err := os.Stat(marks); err != nil {
		t.Fatal(err)
	}
}

// A command killed before it could drop its jobs: the first worker that
// finds nobody taking its result drops the rest of that run unrun.
func TestPoolDropsJobsOfAGoneRun(t *testing.T) {
	store, day0, _ := storeMix(t)
	ns := embeddedNATS(t)
	startWorkers(t, ns, store, "p", 1)() // the consumer stays; nobody takes jobs now
	marks := t.TempDir()
	q := dial(t, ns)
	p, err := OpenPool(context.Background(), q.Conn(), q.JetStream(), "p",
		FilterSpec{Command: "touch " + filepath.Join(marks, "run") + ".$$; cat", TimeoutMS: 30000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := q.JetStream().Consumer(context.Background(), PoolStream, poolConsumer("p"))
	if err != nil {
		t.Fatal(err)
	}
	pending := func() (uint64, int) {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.NumPending, info.NumAckPending
	}
	// The stopped worker's last pull requests expire first (5 s): a job
	// one of them took would wait out the ack wait.
	for deadline := time.Now().Add(20 * time.Second); ; {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pull requests still waiting", info.NumWaiting)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		Run(ctx, Options{Store: store, Since: day0, Until: day0.AddDate(0, 0, 2), Pool: p, Concurrency: 5,
			Timeout: 30 * time.Second}, func(Result) error { return nil })
	}()
	for n, _ := pending(); n < 5; n, _ = pending() {
		time.Sleep(10 * time.Millisecond)
	}
	// Killed: no more subscription, no purge.
	p.sub.Unsubscribe()
	cancel()
	<-ran

	startWorkers(t, ns, store, "p", 1)
	deadline := time.Now().Add(20 * time.Second)
	for n, a := pending(); n > 0 || a > 0; n, a = pending() {
		if time.Now().After(deadline) {
			t.Fatalf("jobs of the gone run still there: %d pending, %d in progress", n, a)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if runs, _ := filepath.Glob(filepath.Join(marks, "run") + ".*"); len(runs) > 2 {
		t.Errorf("the filter ran %d times for a gone run; at most the worker's 2 slots should", len(runs))
	}
}
