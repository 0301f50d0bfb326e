package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/sluice-mail/sluice/internal/natstest"
	"github.com/sluice-mail/sluice/internal/testcert"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// The queue against real nats-server processes: a 3-node JetStream
// cluster with streams of 3 replicas (internal/natstest). Leader elections
// take up to ~7 s here, so deadlines are generous and every JetStream call
// is short and retried.

// clusterInfo is the stream's info, retried through leader elections.
func clusterInfo(t *testing.T, q *Queue) *jetstream.StreamInfo {
	t.Helper()
	var last error
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		info, err := q.streamInfo()
		if err == nil {
			return info
		}
		last = err
	}
	t.Fatalf("stream info: %v", last)
	return nil
}

func (q *Queue) streamInfo() (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	st, err := q.js.Stream(ctx, q.opts.Stream)
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

func clusterConsumerInfo(t *testing.T, q *Queue) *jetstream.ConsumerInfo {
	t.Helper()
	var last error
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		info, err := q.consumer().Info(ctx)
		cancel()
		if err == nil {
			return info
		}
		last = err
	}
	t.Fatalf("consumer info: %v", last)
	return nil
}

// waitFor polls cond for up to timeout, failing the test after.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// clusterOpts are the options every cluster test starts from.
func clusterOpts(c *natstest.Cluster, name string) Options {
	return Options{URLs: c.URLs(), Replicas: 3, AckWait: 5 * time.Second, Name: name}
}

func TestClusterStreamAndConsumer(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	o := clusterOpts(c, "edge")
	o.MaxAge, o.AckWait, o.MaxDeliver = 10*time.Minute, 5*time.Second, 4
	q := open(t, o)

	info := clusterInfo(t, q)
	cfg := info.Config
	if cfg.Replicas != 3 || cfg.Retention != jetstream.WorkQueuePolicy || cfg.Storage != jetstream.FileStorage ||
		cfg.MaxAge != 10*time.Minute || cfg.Duplicates != duplicateWindow ||
		!slices.Equal(cfg.Subjects, []string{DefaultSubject, DefaultSubject + ".>"}) {
		t.Errorf("stream config: replicas %d, retention %v, storage %v, max age %v, duplicates %v, subjects %v",
			cfg.Replicas, cfg.Retention, cfg.Storage, cfg.MaxAge, cfg.Duplicates, cfg.Subjects)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 || info.Cluster.Name != "sluice-test" {
		t.Fatalf("stream cluster info %+v: want a leader and 2 replicas in sluice-test", info.Cluster)
	}
	ci := clusterConsumerInfo(t, q)
	if ci.Config.Durable != DefaultConsumer || ci.Config.AckPolicy != jetstream.AckExplicitPolicy ||
		ci.Config.AckWait != 5*time.Second || ci.Config.MaxDeliver != 4 {
		t.Errorf("consumer config: durable %q, ack %v, ack wait %v, max deliver %d",
			ci.Config.Durable, ci.Config.AckPolicy, ci.Config.AckWait, ci.Config.MaxDeliver)
	}
	if ci.Cluster == nil || ci.Cluster.Leader == "" || len(ci.Cluster.Replicas) != 2 {
		t.Errorf("consumer cluster info %+v: want it replicated like its stream", ci.Cluster)
	}
	t.Logf("stream leader %s, consumer leader %s", info.Cluster.Leader, ci.Cluster.Leader)

	// A round trip through a worker on its own connection.
	w := open(t, clusterOpts(c, "worker"))
	consume(t, w, 2, accept("w1"))
	s := submitter(t, q, "edge1")
	if v := mustSubmit(t, s, newJob("m1", time.Now().Add(20*time.Second))); v.WorkerId != "w1" || v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Errorf("verdict %v", v)
	}

	// Opening again with other settings updates the stream and consumer
	// in place; jobs keep flowing through the old connections.
	o.MaxAge, o.AckWait, o.MaxDeliver = 20*time.Minute, 7*time.Second, 6
	open(t, o)
	info = clusterInfo(t, q)
	if info.Config.MaxAge != 20*time.Minute || info.Config.Replicas != 3 {
		t.Errorf("after update: max age %v, replicas %d", info.Config.MaxAge, info.Config.Replicas)
	}
	ci = clusterConsumerInfo(t, q)
	if ci.Config.AckWait != 7*time.Second || ci.Config.MaxDeliver != 6 {
		t.Errorf("after update: ack wait %v, max deliver %d", ci.Config.AckWait, ci.Config.MaxDeliver)
	}
	mustSubmit(t, s, newJob("m2", time.Now().Add(20*time.Second)))
	waitFor(t, 10*time.Second, "an empty work queue", func() bool {
		info, err := q.streamInfo()
		return err == nil && info.State.Msgs == 0
	})
}

func TestClusterAuth(t *testing.T) {
	// Another user's NKey, which the servers do not know.
	strangerSeed := func(t *testing.T) string {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		name := filepath.Join(t.TempDir(), "stranger.nk")
		if err := os.WriteFile(name, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	type bad struct {
		name string
		o    Options
		want string // in the error
		// closed: nats.go gives up on the connection (the same
		// authorization error twice), so Open returns before its deadline.
		closed bool
	}
	for _, tc := range []struct {
		name string
		opts []natstest.Option
		good func(c *natstest.Cluster) Options
		bad  func(t *testing.T, c *natstest.Cluster) []bad
	}{
		{
			name: "user",
			opts: []natstest.Option{natstest.WithUser("sluice", "s3cret")},
			good: func(*natstest.Cluster) Options { return Options{User: "sluice", Password: "s3cret"} },
			bad: func(*testing.T, *natstest.Cluster) []bad {
				return []bad{
					{"wrong password", Options{User: "sluice", Password: "wrong"}, "authorization violation", true},
					{"no credentials", Options{}, "authorization violation", true},
				}
			},
		},
		{
			name: "token",
			opts: []natstest.Option{natstest.WithToken("t0ken")},
			good: func(*natstest.Cluster) Options { return Options{Token: "t0ken"} },
			bad: func(*testing.T, *natstest.Cluster) []bad {
				return []bad{{"wrong token", Options{Token: "other"}, "authorization violation", true}}
			},
		},
		{
			name: "nkey",
			opts: []natstest.Option{natstest.WithNKey()},
			good: func(c *natstest.Cluster) Options { return Options{NKeyFile: c.NKeySeedFile()} },
			bad: func(t *testing.T, c *natstest.Cluster) []bad {
				return []bad{
					{"unknown nkey", Options{NKeyFile: strangerSeed(t)}, "authorization violation", true},
					{"missing seed file", Options{NKeyFile: filepath.Join(t.TempDir(), "none.nk")}, "nkey file", true},
				}
			},
		},
		{
			name: "tls",
			opts: []natstest.Option{natstest.WithTLS()},
			good: func(c *natstest.Cluster) Options {
				f := c.TLS()
				return Options{TLSCA: f.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}
			},
			bad: func(t *testing.T, c *natstest.Cluster) []bad {
				f := c.TLS()
				other, err := testcert.GenerateTLS(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return []bad{
					{"no client certificate", Options{TLSCA: f.CA}, "tls", false},
					{"wrong CA", Options{TLSCA: other.CA, TLSCert: f.ClientCert, TLSKey: f.ClientKey}, "certificate signed by unknown authority", false},
					{"certificate of another CA", Options{TLSCA: f.CA, TLSCert: other.ClientCert, TLSKey: other.ClientKey}, "tls", false},
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := natstest.StartCluster(t, 3, tc.opts...)
			o := tc.good(c)
			o.URLs, o.Replicas, o.Name = c.URLs(), 3, "good"
			q := open(t, o)
			consume(t, q, 1, accept("w"))
			mustSubmit(t, submitter(t, q, "edge1"), newJob("m1", time.Now().Add(20*time.Second)))

			for _, b := range tc.bad(t, c) {
				b.o.URLs, b.o.Replicas, b.o.Logger = c.URLs(), 3, testLogger(t)
				ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
				q, err := Open(ctx, b.o)
				cancel()
				if err == nil {
					q.Close()
					t.Errorf("%s: Open succeeded", b.name)
					continue
				}
				t.Logf("%s: %v", b.name, err)
				if !strings.Contains(strings.ToLower(err.Error()), b.want) {
					t.Errorf("%s: error %q does not say %q", b.name, err, b.want)
				}
				if b.closed && errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: Open waited for its deadline on a connection that cannot succeed", b.name)
				}
				if b.want == "authorization violation" && !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("%s: error %v is not nats.ErrAuthorization", b.name, err)
				}
			}
		})
	}
}

// recorder keeps the ids of jobs whose ack failed, from the queue's log.
type recorder struct {
	next  slog.Handler
	attrs []slog.Attr
	mu    *sync.Mutex
	acks  map[string]int // job id -> "ack failed" warnings
}

func newRecorder(next slog.Handler) *recorder {
	return &recorder{next: next, mu: new(sync.Mutex), acks: map[string]int{}}
}

func (r *recorder) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || r.next.Enabled(ctx, l)
}

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	if strings.Contains(rec.Message, "ack failed") {
		id := ""
		attrs := slices.Clone(r.attrs)
		rec.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
		for _, a := range attrs {
			if a.Key == "id" {
				id = a.Value.String()
			}
		}
		r.mu.Lock()
		r.acks[id]++
		r.mu.Unlock()
	}
	if r.next.Enabled(ctx, rec.Level) {
		return r.next.Handle(ctx, rec)
	}
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(slices.Clone(r.attrs), as...)
	c.next = r.next.WithAttrs(as)
	return &c
}

func (r *recorder) WithGroup(name string) slog.Handler {
	c := *r
	c.next = r.next.WithGroup(name)
	return &c
}

func (r *recorder) ackFailures() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.acks)
}

// runLog counts handler runs per job id, with their delivery attempts.
type runLog struct {
	mu       sync.Mutex
	attempts map[string][]uint32
}

func (l *runLog) handler(worker string) Handler {
	return func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		l.mu.Lock()
		l.attempts[job.MessageId] = append(l.attempts[job.MessageId], attempt)
		l.mu.Unlock()
		time.Sleep(time.Duration(10+rand.IntN(20)) * time.Millisecond) // a quick filter
		return accept(worker)(ctx, job, attempt)
	}
}

func (l *runLog) snapshot() map[string][]uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]uint32, len(l.attempts))
	for k, v := range l.attempts {
		out[k] = slices.Clone(v)
	}
	return out
}

func TestClusterNodeKillUnderLoad(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	rec := newRecorder(testLogger(t).Handler())
	logger := slog.New(rec)
	admin := open(t, clusterOpts(c, "admin"))
	info := clusterInfo(t, admin)
	victim := c.Index(info.Cluster.Leader)
	if victim < 0 {
		t.Fatalf("stream leader %q is no node of the cluster", info.Cluster.Leader)
	}
	ci := clusterConsumerInfo(t, admin)
	t.Logf("stream leader %s (node %d), consumer leader %s: killing the stream leader", info.Cluster.Leader, victim, ci.Cluster.Leader)

	// edge0 and worker0 know only the victim's URL, so they are connected
	// to it when it dies and must fail over to the servers it told them
	// about; the others know every URL and connect at random.
	pinned := []string{c.Node(victim).ClientURL}
	const edges, workers, perEdge, inflight = 2, 3, 150, 20
	var queues []*Queue
	newQueue := func(name string, urls []string) *Queue {
		o := clusterOpts(c, name)
		o.URLs, o.Logger = urls, logger
		q := open(t, o)
		queues = append(queues, q)
		return q
	}
	runs := &runLog{attempts: map[string][]uint32{}}
	for i := range workers {
		urls := c.URLs()
		if i == 0 {
			urls = pinned
		}
		consume(t, newQueue(fmt.Sprintf("worker%d", i), urls), 4, runs.handler(fmt.Sprintf("w%d", i)))
	}
	subs := make([]*Submitter, edges)
	for i := range edges {
		urls := c.URLs()
		if i == 0 {
			urls = pinned
		}
		subs[i] = submitter(t, newQueue(fmt.Sprintf("edge%d", i), urls), fmt.Sprintf("edge%d", i))
	}
	var onVictim []string
	for _, q := range queues {
		if q.nc.ConnectedServerName() == c.Node(victim).Name {
			onVictim = append(onVictim, q.opts.Name)
		}
	}
	t.Logf("clients connected to %s: %v", c.Node(victim).Name, onVictim)

	type outcome struct {
		v   *sluicev1.Verdict
		err error
		at  time.Time
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]outcome{}
		verdicts atomic.Int32
		wg       sync.WaitGroup
	)
	start := time.Now()
	for e, s := range subs {
		ids := make(chan string)
		go func() {
			for i := range perEdge {
				ids <- fmt.Sprintf("e%d-%03d", e, i)
			}
			close(ids)
		}()
		for range inflight {
			wg.Go(func() {
				for id := range ids {
					job := newJob(id, time.Now().Add(25*time.Second))
					job.EdgeId = fmt.Sprintf("edge%d", e)
					ctx, cancel := context.WithDeadline(context.Background(), job.Deadline.AsTime())
					v, err := s.Submit(ctx, job)
					cancel()
					if err == nil && (v.MessageId != id || v.Action != sluicev1.Verdict_ACTION_ACCEPT) {
						err = fmt.Errorf("wrong verdict %v", v)
					}
					mu.Lock()
					outcomes[id] = outcome{v, err, time.Now()}
					mu.Unlock()
					if err == nil {
						verdicts.Add(1)
					}
				}
			})
		}
	}
	// Kill the stream leader a third of the way through.
	waitFor(t, 60*time.Second, "a third of the verdicts", func() bool { return verdicts.Load() >= edges*perEdge/3 })
	c.Kill(victim)
	killedAt := time.Now()
	wg.Wait()
	elapsed := time.Since(start)

	// Rejoin: the node comes back with its store and catches up.
	c.Restart(victim)
	if err := c.WaitHealthy(victim, 60*time.Second); err != nil {
		t.Errorf("restarted node did not rejoin: %v", err)
	}
	waitFor(t, 60*time.Second, "3 current replicas with the restarted node", func() bool {
		info, err := admin.streamInfo()
		if err != nil || info.Cluster == nil {
			return false
		}
		names := []string{info.Cluster.Leader}
		for _, p := range info.Cluster.Replicas {
			if !p.Current || p.Offline {
				return false
			}
			names = append(names, p.Name)
		}
		return len(names) == 3 && slices.Contains(names, c.Node(victim).Name)
	})
	info = clusterInfo(t, admin)
	t.Logf("after restart: stream leader %s, replicas %d, all current", info.Cluster.Leader, len(info.Cluster.Replicas))
	// Everything still works through the same connections.
	for e, s := range subs {
		mustSubmit(t, s, newJob(fmt.Sprintf("after-%d", e), time.Now().Add(30*time.Second)))
	}
	// Every job leaves the work queue: acked, or ended for its deadline.
	waitFor(t, 60*time.Second, "an empty work queue", func() bool {
		info, err := admin.streamInfo()
		return err == nil && info.State.Msgs == 0
	})

	// The tally.
	mu.Lock()
	defer mu.Unlock()
	allRuns := runs.snapshot()
	acks := rec.ackFailures()
	var ok, pubErr, verdictErr, other, firstAfter int
	var times []time.Time // of the verdicts after the kill
	for id, o := range outcomes {
		var se *SubmitError
		switch {
		case o.err == nil:
			ok++
			if len(allRuns[id]) == 0 {
				t.Errorf("%s: a verdict, but the handler never ran", id)
			}
			if o.at.After(killedAt) {
				firstAfter++
				times = append(times, o.at)
			}
		case errors.As(o.err, &se) && se.Step == StepPublish:
			pubErr++
		case errors.As(o.err, &se) && se.Step == StepVerdict:
			verdictErr++
		default:
			other++
			t.Errorf("%s: %v", id, o.err)
		}
	}
	if len(outcomes) != edges*perEdge {
		t.Errorf("%d outcomes for %d jobs", len(outcomes), edges*perEdge)
	}
	// The longest time without any verdict after the kill: the fail-over.
	slices.SortFunc(times, time.Time.Compare)
	var pause time.Duration
	prev := killedAt
	for _, at := range times {
		pause = max(pause, at.Sub(prev))
		prev = at
	}
	var twice, redelivered, dupPublish int
	for id, att := range allRuns {
		if strings.HasPrefix(id, "after-") {
			continue
		}
		for _, a := range att[1:] {
			if a > 1 {
				redelivered++
			}
		}
		if len(att) < 2 {
			continue
		}
		twice++
		if att[1] == 1 {
			dupPublish++ // a second copy of the job, not a redelivery
		}
		if acks[id] == 0 {
			t.Errorf("job %s ran %d times (attempts %v) though no ack of it failed", id, len(att), att)
		} else {
			t.Logf("job %s ran %d times (attempts %v) after %d failed acks", id, len(att), att, acks[id])
		}
	}
	t.Logf("jobs %d in %v: verdicts %d (%d before the kill, %d after), no verdict %d (publish %d, verdict wait %d); "+
		"handler runs for %d jobs, %d ran twice or more (%d as a second copy), %d redeliveries, %d failed acks; longest pause in verdicts after the kill %v",
		edges*perEdge, elapsed.Round(time.Millisecond), ok, ok-firstAfter, firstAfter, pubErr+verdictErr, pubErr, verdictErr,
		len(allRuns), twice, dupPublish, redelivered, len(acks), pause.Round(time.Millisecond))
	if dupPublish > 0 {
		t.Errorf("%d jobs were stored twice: publish de-duplication failed", dupPublish)
	}
	if ok == 0 || firstAfter == 0 {
		t.Errorf("verdicts: %d, %d after the kill; want jobs to keep flowing", ok, firstAfter)
	}
}

func TestClusterFullOutage(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	q := open(t, clusterOpts(c, "edge"))
	w := open(t, clusterOpts(c, "worker"))
	runs := &runLog{attempts: map[string][]uint32{}}
	consume(t, w, 2, runs.handler("w"))
	s := submitter(t, q, "edge1")
	mustSubmit(t, s, newJob("before", time.Now().Add(20*time.Second)))

	c.StopAll()
	down := time.Now()
	waitFor(t, 10*time.Second, "the edge to see the outage", func() bool { return q.Ready(context.Background()) != nil })

	// A submit during the outage fails within its own deadline, with a
	// SubmitError the edge turns into a 4xx.
	const budget = 3 * time.Second
	job := newJob("during", time.Now().Add(budget))
	ctx, cancel := context.WithDeadline(context.Background(), job.Deadline.AsTime())
	t0 := time.Now()
	_, err := s.Submit(ctx, job)
	took := time.Since(t0)
	cancel()
	var se *SubmitError
	if !errors.As(err, &se) || se.Step != StepPublish || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit with every server down: %v, want a publish SubmitError at the deadline", err)
	}
	if took > budget+5*time.Second {
		t.Errorf("Submit took %v with a %v deadline", took, budget)
	}
	t.Logf("during the outage: Submit failed after %v: %v", took.Round(time.Millisecond), err)

	time.Sleep(2 * time.Second) // a few seconds down in all
	c.StartAll()
	up := time.Now()
	t.Logf("servers down for %v", up.Sub(down).Round(time.Millisecond))

	// The same Queue, Submitter and Consume loop, no re-Open.
	v := mustSubmit(t, s, newJob("after", time.Now().Add(60*time.Second)))
	t.Logf("first verdict %v after the restart (attempt %d)", time.Since(up).Round(time.Millisecond), v.Attempt)
	waitFor(t, 30*time.Second, "the edge ready again", func() bool { return q.Ready(context.Background()) == nil })
	for i := range 10 {
		mustSubmit(t, s, newJob(fmt.Sprintf("after-%d", i), time.Now().Add(30*time.Second)))
	}
	// The job published into the outage may have left nats.go's reconnect
	// buffer once the servers were back, but its deadline had passed: it
	// must never run.
	waitFor(t, 30*time.Second, "an empty work queue", func() bool {
		info, err := q.streamInfo()
		return err == nil && info.State.Msgs == 0
	})
	if n := len(runs.snapshot()["during"]); n != 0 {
		t.Errorf("the job submitted during the outage ran %d times after its deadline", n)
	}
	if n := len(runs.snapshot()); n != 12 {
		t.Errorf("handler ran for %d jobs, want 12", n)
	}
}

// Issue 8: an edge whose NATS server is a leaf node of the central
// cluster (no JetStream of its own, no default_js_domain) reaches the
// central stream by Domain; the worker in the centre uses it too. Without
// the domain the leaf's client finds no JetStream at all.
func TestDomainThroughLeafNode(t *testing.T) {
	hub := natstest.StartCluster(t, 1, natstest.WithDomain("core"), natstest.WithLeafListener())
	leaf := natstest.StartCluster(t, 1, natstest.WithClusterName("site-a"), natstest.AsLeafOf(hub.Node(0).LeafURL))

	w := open(t, Options{URLs: hub.URLs(), Domain: "core", Name: "worker"})
	consume(t, w, 1, accept("w-core"))
	var q *Queue
	waitFor(t, 30*time.Second, "the leaf node's link to the hub", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		q, err = Open(ctx, Options{URLs: leaf.URLs(), Domain: "core", Name: "edge", Logger: testLogger(t)})
		return err == nil
	})
	t.Cleanup(q.Close)

	// The link is up; without the domain the same leaf is no use.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if q, err := Open(ctx, Options{URLs: leaf.URLs(), Name: "edge-no-domain", Logger: testLogger(t)}); err == nil {
		q.Close()
		t.Fatal("a leaf node's client without nats.domain opened the queue: the test proves nothing")
	}

	s := submitter(t, q, "edge-a")
	if v := mustSubmit(t, s, newJob("m1", time.Now().Add(20*time.Second))); v.WorkerId != "w-core" {
		t.Errorf("verdict %v, want one from the worker in the centre", v)
	}
	if info := clusterInfo(t, q); info.State.Msgs != 0 || info.State.LastSeq != 1 {
		t.Errorf("the central stream: %d jobs waiting, last sequence %d; want 0 and 1", info.State.Msgs, info.State.LastSeq)
	}
}
