package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-mail/sluice/internal/config"
)

// Every test bounds itself; the package must fit in a few minutes on a
// 2-core machine.
const testTimeout = 3 * time.Minute

// TestScaling: 2 edges and 3 workers share the queue; a few hundred
// messages are each filtered once and delivered once, and every worker
// takes a share.
func TestScaling(t *testing.T) {
	s := newStack(t, defaultTiming, 2, 3)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	start := time.Now()
	l := (&load{prefix: "scale", addrs: s.edgeAddrs(), sessions: 6, count: 50}).start(ctx)
	res := l.wait()
	t.Logf("%d messages in %v; replies:%s", len(res), time.Since(start).Round(time.Millisecond), replies(res))

	c := checkInvariants(t, res, s.up.Transactions())
	if c.ok != c.sent {
		t.Errorf("with nothing broken, %d of %d messages got 250", c.ok, c.sent)
	}
	runs := readRuns(t, s.runlog)
	perWorker := map[string]int{}
	sent := map[string]bool{}
	for _, r := range res {
		sent[r.token] = true
		st := starts(runs[r.token])
		if len(st) != 1 {
			t.Errorf("%s filtered %d times (%v), want once", r.token, len(st), st)
		}
		for _, w := range st {
			perWorker[w]++
		}
	}
	for tok := range runs {
		if !sent[tok] {
			t.Errorf("filter ran for %q, never sent", tok)
		}
	}
	t.Logf("filter runs per worker: %v (pids %v)", perWorker, s.workerPIDs())
	for _, w := range s.workers {
		if perWorker[w.name] == 0 {
			t.Errorf("worker %s ran no filter", w.name)
		}
	}
	s.checkAlive()
	s.logSummary()
}

// TestWorkerKill: kill -9 of a worker while its filter runs.
func TestWorkerKill(t *testing.T) {
	// ack_wait 5s < job_timeout 30s: the dead worker's jobs are redelivered
	// in time, run by another worker, and delivered once.
	t.Run("Redelivered", func(t *testing.T) {
		tm := timing{filterTimeout: 4, ackWait: 5 * time.Second, jobTimeout: 30 * time.Second, filterSleep: "2", slots: 2}
		s := newStack(t, tm, 2, 3)
		res, victimTok, _ := killWorkerUnderLoad(t, s, 6)
		c := checkInvariants(t, res, s.up.Transactions())
		if c.ok != c.sent {
			t.Errorf("%d of %d messages got 250; a dead worker's jobs should be redelivered within job_timeout", c.ok, c.sent)
		}
		runs := readRuns(t, s.runlog)
		redelivered := 0
		for _, r := range res {
			st := starts(runs[r.token])
			switch {
			case len(st) == 1:
			case len(st) == 2 && st[0] == "w1" && st[1] != "w1":
				redelivered++
			default:
				t.Errorf("%s filtered by %v: want once, or once by w1 (killed) and once by another worker", r.token, st)
			}
		}
		if st := starts(runs[victimTok]); len(st) != 2 {
			t.Errorf("%s was in w1's filter when w1 was killed; runs: %v, want a second run elsewhere", victimTok, st)
		}
		t.Logf("%d messages filtered again after the kill", redelivered)
		s.checkAlive(s.workers[0])
		s.logSummary()
	})

	// Issue 10, target 4: with the default ack_wait (8 s) and a 0.5 s
	// filter, the killed worker's job runs elsewhere and its sender gets a
	// 250 soon; the faults summary reports how soon (not asserted: the
	// machine is shared).
	t.Run("DefaultAckWait", func(t *testing.T) {
		tm := timing{filterTimeout: 30, ackWait: config.DefaultAckWait, jobTimeout: 2 * time.Minute, filterSleep: "0.5", slots: 2}
		s := newStack(t, tm, 2, 3)
		res, victimTok, killedAt := killWorkerUnderLoad(t, s, 6)
		c := checkInvariants(t, res, s.up.Transactions())
		if c.ok != c.sent {
			t.Errorf("%d of %d messages got 250", c.ok, c.sent)
		}
		for _, r := range res {
			if r.token == victimTok {
				report(t, fmt.Sprintf("w1 killed mid-filter: its message answered %v after the kill (ack_wait %v, filter 0.5 s), %v after it began",
					r.end.Sub(killedAt).Round(10*time.Millisecond), tm.ackWait, r.end.Sub(r.start).Round(10*time.Millisecond)))
			}
		}
		if st := starts(readRuns(t, s.runlog)[victimTok]); len(st) != 2 {
			t.Errorf("%s was in w1's filter when w1 was killed; runs: %v, want a second run elsewhere", victimTok, st)
		}
		s.checkAlive(s.workers[0])
	})

	// job_timeout 5s < ack_wait 10s: the edge gives up before the job is
	// redelivered; the sender gets 4xx, and the late redelivery is skipped,
	// never run.
	t.Run("DeadlinePassed", func(t *testing.T) {
		tm := timing{filterTimeout: 3, ackWait: 10 * time.Second, jobTimeout: 5 * time.Second, filterSleep: "2", slots: 2}
		s := newStack(t, tm, 2, 3)
		killedAt := time.Now()
		res, victimTok, _ := killWorkerUnderLoad(t, s, 4)
		// Past the redelivery of the dead worker's jobs.
		if d := time.Until(killedAt.Add(tm.ackWait + 5*time.Second)); d > 0 {
			t.Logf("waiting %v for the redelivery of w1's jobs", d.Round(time.Millisecond))
			time.Sleep(d)
		}
		c := checkInvariants(t, res, s.up.Transactions())
		runs := readRuns(t, s.runlog)
		for _, r := range res {
			if r.token != victimTok {
				continue
			}
			if r.connErr || r.code < 400 || r.code >= 500 {
				t.Errorf("%s was in w1's filter when w1 was killed and job_timeout < ack_wait: got %s, want 4xx", r.token, r)
			}
		}
		for _, r := range res {
			if st := starts(runs[r.token]); len(st) != 1 {
				t.Errorf("%s filtered by %v, want once (a redelivered job past its deadline must not run)", r.token, st)
			}
		}
		if c.temp == 0 {
			t.Error("no 4xx although a worker died with jobs whose deadline ends before their redelivery")
		}
		skipped := 0
		for _, w := range s.workers[1:] {
			skipped += len(w.logLines("deadline passed"))
		}
		t.Logf("the other workers logged %d jobs skipped for a passed deadline", skipped)
		s.checkAlive(s.workers[0])
		s.logSummary()
	})
}

// killWorkerUnderLoad sends messages from the sessions, kills w1 with
// SIGKILL while one of its filters runs, and returns the results and the
// token of that filter's message.
func killWorkerUnderLoad(t testing.TB, s *stack, sessions int) ([]result, string, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	l := (&load{prefix: "kill", addrs: s.edgeAddrs(), sessions: sessions, count: 4}).start(ctx)
	defer l.finish()

	victim := s.workers[0]
	var tok string
	deadline := time.Now().Add(60 * time.Second)
	for tok == "" && time.Now().Before(deadline) {
		for k, rs := range readRuns(t, s.runlog) {
			if st := starts(rs); len(st) == 1 && st[0] == victim.name && len(rs) == 1 {
				tok = k // started on w1, not ended: the filter sleeps
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tok == "" {
		t.Fatal("no filter started on w1 within 60 s")
	}
	pid := victim.pid()
	killedAt := time.Now()
	victim.kill()
	var orphans []int
	for _, p := range s.leftovers() {
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p)); err == nil && strings.Contains(string(env), "FAULTS_WORKER=w1\x00") {
			orphans = append(orphans, p)
		}
	}
	t.Logf("killed w1 (pid %d) while it filtered %s; its filter processes left running: %v", pid, tok, orphans)
	res := l.wait()
	t.Logf("replies:%s", replies(res))
	return res, tok, killedAt
}

// waitOK waits until n messages begun after since got 250, or timeout.
func waitOK(l *load, since time.Time, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok := 0
		for _, r := range l.snapshot() {
			if r.code == 250 && !r.start.Before(since) {
				ok++
			}
		}
		if ok >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d messages begun after %s got 250 within %v", ok, n, since.Format("15:04:05.000"), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// window counts the replies to messages begun after from and answered
// before to: those that met the fault only.
func window(res []result, from, to time.Time) (in []result) {
	for _, r := range res {
		if !r.start.Before(from) && r.end.Before(to) {
			in = append(in, r)
		}
	}
	return in
}

// outage runs the load, breaks a part once messages flow, repairs it after
// down, and returns the results once messages flow again, with the
// fault's window.
func outage(t *testing.T, s *stack, name string, down time.Duration, breakIt, repair func()) (res []result, from, to time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	l := (&load{prefix: name, addrs: s.edgeAddrs(), sessions: 6}).start(ctx)
	defer l.finish()
	if err := waitOK(l, time.Time{}, 20, 60*time.Second); err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	from, to = fault(t, l, 20, down, breakIt, repair)
	res = l.finish()
	t.Logf("fault from %s to %s; replies:%s", from.Format("15:04:05.000"), to.Format("15:04:05.000"), replies(res))
	in := window(res, from, to)
	t.Logf("%d messages begun and answered during the fault:%s", len(in), replies(in))
	return res, from, to
}

// fault breaks a part while l runs, repairs it after down, and waits until
// n more messages of l went through; it returns the fault's window.
func fault(t *testing.T, l *load, n int, down time.Duration, breakIt, repair func()) (from, to time.Time) {
	t.Helper()
	breakIt()
	from = time.Now()
	time.Sleep(down)
	to = time.Now()
	repair()
	if err := waitOK(l, time.Now(), n, 90*time.Second); err != nil {
		t.Errorf("no recovery without restarts: %v", err)
	}
	return from, to
}

// checkNoPerm fails t for any 5xx: an infrastructure failure is never the
// sender's fault.
func checkNoPerm(t *testing.T, res []result) {
	t.Helper()
	for _, r := range res {
		if r.code >= 500 && !r.connErr {
			t.Errorf("5xx for an infrastructure failure: %s", r)
		}
	}
}

// checkFaultWindow fails t for any 250 to a message begun and answered
// while the part was down, and requires some 4xx there.
func checkFaultWindow(t *testing.T, in []result) {
	t.Helper()
	temp := 0
	for _, r := range in {
		switch {
		case r.connErr:
		case r.code == 250:
			t.Errorf("250 while the part was down: %s", r)
		case r.code >= 400 && r.code < 500:
			temp++
		}
	}
	if temp == 0 {
		t.Errorf("no 4xx for the %d messages begun and answered while the part was down", len(in))
	}
}

// TestNATSNodeKill: kill -9 of one NATS node of three under load, twice:
// first the job stream's leader, then the node most edges and workers are
// connected to. Messages keep flowing through each fail-over, and each
// node rejoins when restarted.
func TestNATSNodeKill(t *testing.T) {
	s := newStack(t, defaultTiming, 2, 3)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	l := (&load{prefix: "natsnode", addrs: s.edgeAddrs(), sessions: 6}).start(ctx)
	defer l.finish()
	if err := waitOK(l, time.Time{}, 20, 60*time.Second); err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	for round, pick := range []string{"the stream leader", "the node with the most client connections"} {
		stream, consumer := leaders(t, s)
		conns := connections(s)
		i := s.nats.Index(stream)
		if round == 1 {
			i = slices.Index(conns, slices.Max(conns))
		}
		if i < 0 {
			t.Fatalf("stream leader %q is not a node of the cluster", stream)
		}
		t.Logf("stream leader %s, consumer leader %s, client connections per node %v", stream, consumer, conns)
		s.nats.Kill(i)
		killed := time.Now()
		t.Logf("killed NATS node %d (%s), %s", i, s.nats.Node(i).Name, pick)
		// Two of three nodes keep the quorum: messages must get through
		// with the node down.
		if err := waitOK(l, killed, 20, 90*time.Second); err != nil {
			t.Errorf("with one NATS node of three down: %v", err)
		}
		s.nats.Restart(i)
		restarted := time.Now()
		if err := s.nats.WaitHealthy(i, 60*time.Second); err != nil {
			t.Errorf("node %d did not rejoin: %v", i, err)
		}
		stream, consumer = leaders(t, s)
		t.Logf("node %d rejoined after %v; stream leader %s, consumer leader %s", i,
			time.Since(restarted).Round(time.Millisecond), stream, consumer)
		if err := waitOK(l, restarted, 20, 60*time.Second); err != nil {
			t.Errorf("after the node's restart: %v", err)
		}
	}
	res := l.finish()
	t.Logf("replies:%s", replies(res))
	checkInvariants(t, res, s.up.Transactions())
	checkNoPerm(t, res)
	s.checkAlive()
	s.logSummary()
}

// leaders asks the cluster which nodes lead the job stream and the
// workers' consumer.
func leaders(t *testing.T, s *stack) (stream, consumer string) {
	t.Helper()
	nc, err := nats.Connect(strings.Join(s.nats.URLs(), ","), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		var si *jetstream.StreamInfo
		var ci *jetstream.ConsumerInfo
		st, err := js.Stream(ctx, "SLUICE_JOBS")
		if err == nil {
			si, err = st.Info(ctx)
		}
		if err == nil {
			var c jetstream.Consumer
			if c, err = st.Consumer(ctx, "sluice-workers"); err == nil {
				ci, err = c.Info(ctx)
			}
		}
		cancel()
		if err == nil && si.Cluster != nil && si.Cluster.Leader != "" && ci.Cluster != nil && ci.Cluster.Leader != "" {
			return si.Cluster.Leader, ci.Cluster.Leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream and consumer leaders within 60 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// connections returns each node's client connections (/connz), -1 when
// it does not answer.
func connections(s *stack) []int {
	out := make([]int, s.nats.Len())
	for i := range out {
		out[i] = -1
		resp, err := http.Get(s.nats.Node(i).MonitorURL + "/connz")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var cz struct {
			NumConns int `json:"num_connections"`
		}
		if json.Unmarshal(b, &cz) == nil {
			out[i] = cz.NumConns
		}
	}
	return out
}

// TestS3Outage: the S3 server stopped for a few seconds under load: 4xx
// meanwhile, never 250 or 5xx; then recovery without restarting the edges
// or workers.
func TestS3Outage(t *testing.T) {
	s := newStack(t, defaultTiming, 2, 3)
	res, from, to := outage(t, s, "s3", 5*time.Second, s.s3.Stop, func() {
		if err := s.s3.Start(); err != nil {
			t.Fatalf("restarting versitygw: %v", err)
		}
	})
	checkInvariants(t, res, s.up.Transactions())
	checkNoPerm(t, res)
	checkFaultWindow(t, window(res, from, to))
	s.checkAlive()
	s.logSummary()
}

// TestNATSOutage: every NATS node stopped for more than twice job_timeout
// (a message in flight when NATS went away waits out one job_timeout, the
// next one must be answered while NATS is still down): 4xx meanwhile;
// recovery on reconnect, without restarts.
func TestNATSOutage(t *testing.T) {
	tm := timing{filterTimeout: 3, ackWait: 4 * time.Second, jobTimeout: 6 * time.Second, slots: 2}
	s := newStack(t, tm, 2, 3)
	res, from, to := outage(t, s, "natsall", 15*time.Second, s.nats.StopAll, s.nats.StartAll)
	checkInvariants(t, res, s.up.Transactions())
	checkNoPerm(t, res)
	checkFaultWindow(t, window(res, from, to))
	s.checkAlive()
	s.logSummary()
}

// TestUpstreamDown: the upstream gone (port closed, connections cut) and
// back as a new server on the same port: 4xx/421 meanwhile; recovery.
func TestUpstreamDown(t *testing.T) {
	s := newStack(t, defaultTiming, 2, 3)
	res, from, to := outage(t, s, "upstream", 5*time.Second, s.up.Down, s.up.Up)
	checkInvariants(t, res, s.up.Transactions())
	checkNoPerm(t, res)
	checkFaultWindow(t, window(res, from, to))
	s.checkAlive()
	s.logSummary()
}
