package faults

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/natstest"
)

// BenchmarkScaleOut (issue 10, target 6): with FilterCommand
// `sleep 0.05; cat` and worker.slots 2, one edge on a 3-node NATS cluster
// (replicas 3) and versitygw sends 20 sessions' mail through one worker
// process, then, in the same run, through four (the first and three more
// started beside it, each with the same slots). Reports both msgs/s and
// their ratio (the target is at least 3.5). Every process here shares
// the machine's cores: the NATS nodes, versitygw, the edge, the workers
// and their filters.
func BenchmarkScaleOut(b *testing.B) {
	tm := timing{filterTimeout: 10, ackWait: 15 * time.Second, jobTimeout: 40 * time.Second, slots: 2,
		filterCommand: "sleep 0.05; cat"}
	s := newBase(b, tm, natstest.StartCluster(b, 3))
	for i := range 4 {
		s.workers = append(s.workers, s.newProc(fmt.Sprintf("w%d", i+1), bins.worker))
	}
	s.edges = append(s.edges, s.newProc("e1", bins.edge))
	for _, p := range []*proc{s.workers[0], s.edges[0]} {
		if err := s.start(p); err != nil {
			b.Fatal(err)
		}
	}
	const sessions = 20
	perSession := 10 * b.N
	run := func(name string) float64 {
		b.Helper()
		// A short warm-up: every session connected, the stream's leader
		// and the bucket touched.
		(&load{prefix: name + "-warm", addrs: s.edgeAddrs(), sessions: sessions, count: 1, size: 10 << 10}).start(context.Background()).wait()
		start := time.Now()
		res := (&load{prefix: name, addrs: s.edgeAddrs(), sessions: sessions, count: perSession, size: 10 << 10}).start(context.Background()).wait()
		elapsed := time.Since(start)
		for _, r := range res {
			if r.code != 250 {
				b.Fatalf("%s: %s", name, r)
			}
		}
		return float64(len(res)) / elapsed.Seconds()
	}
	one := run("w1")
	for _, w := range s.workers[1:] {
		if err := s.start(w); err != nil {
			b.Fatal(err)
		}
	}
	four := run("w4")
	b.ReportMetric(one, "1worker-msgs/s")
	b.ReportMetric(four, "4workers-msgs/s")
	b.ReportMetric(four/one, "4-over-1")
}

// BenchmarkFailover (issue 10, target 4): kill -9 of a worker while its
// filters run, with the default nats.ack_wait and a 0.5 s filter, two
// edges and three workers on a 3-node NATS cluster. For the messages the
// killed worker held (filtered again elsewhere), it reports the latest
// answer after the kill (after-kill-max-s: its job ran elsewhere before
// that, so the target "within 10 s" holds when this is under 10 s) and
// their senders' p99 latency from MAIL to the final reply
// (affected-p99-s; target under 15 s).
func BenchmarkFailover(b *testing.B) {
	var after, latency []time.Duration
	for range b.N {
		tm := timing{filterTimeout: 30, ackWait: config.DefaultAckWait, jobTimeout: 2 * time.Minute, filterSleep: "0.5", slots: 2}
		s := newStack(b, tm, 2, 3)
		res, _, killedAt := killWorkerUnderLoad(b, s, 6)
		runs := readRuns(b, s.runlog)
		for _, r := range res {
			if r.code != 250 {
				b.Fatalf("after the kill: %s", r)
			}
			if st := starts(runs[r.token]); len(st) == 2 && st[0] == "w1" {
				after = append(after, r.end.Sub(killedAt))
				latency = append(latency, r.end.Sub(r.start))
			}
		}
		s.stop()
	}
	if len(after) == 0 {
		b.Fatal("no message was filtered again after the kill")
	}
	slices.Sort(after)
	slices.Sort(latency)
	b.ReportMetric(after[len(after)-1].Seconds(), "after-kill-max-s")
	b.ReportMetric(latency[max(0, (len(latency)*99+99)/100-1)].Seconds(), "affected-p99-s")
	b.ReportMetric(float64(len(after))/float64(b.N), "affected-msgs")
}
