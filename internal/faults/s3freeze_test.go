package faults

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The S3 server hangs: versitygw stopped with SIGSTOP accepts connections
// and answers nothing, for longer than job_timeout, at three points of the
// message path. Besides the failure rule, every sender must have its
// reply no later than its final dot + job_timeout (and a little slack):
// a sender that gave up retries, and an edge that delivers after that
// delivers twice.

// replySlack is what the deadline rule allows past job_timeout: the
// edge's own work once it gives up, on a busy 2-core machine.
const replySlack = 5 * time.Second

// freezeWhile freezes the store for down while l runs, then waits until
// n more of l's messages went through; it returns the freeze's window.
func (s *stack) freezeWhile(t *testing.T, l *load, n int, down time.Duration) (from, to time.Time) {
	t.Helper()
	var thaw func()
	return fault(t, l, n, down, func() { thaw = s.freezeS3(down + time.Minute) }, func() { thaw() })
}

// freezeS3 stops versitygw and returns thaw, which continues it (once;
// also when the test ends). Should the test binary die meanwhile, a
// detached shell continues it after limit, so that it can act on the
// SIGTERM the test binary's death sends it.
func (s *stack) freezeS3(limit time.Duration) (thaw func()) {
	s.t.Helper()
	pid := s.s3.PID()
	if pid == 0 {
		s.t.Fatal("versitygw is not running")
	}
	guard := exec.Command("/bin/sh", "-c", fmt.Sprintf("sleep %d; kill -CONT %d", int(limit.Seconds())+1, pid))
	guard.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its sleep goes with it
	if err := guard.Start(); err != nil {
		s.t.Fatalf("freeze guard: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		syscall.Kill(-guard.Process.Pid, syscall.SIGKILL)
		guard.Wait()
		s.t.Fatalf("SIGSTOP versitygw: %v", err)
	}
	s.t.Logf("versitygw (pid %d) frozen", pid)
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				s.t.Errorf("SIGCONT versitygw: %v", err)
			}
			syscall.Kill(-guard.Process.Pid, syscall.SIGKILL)
			guard.Wait()
			s.t.Logf("versitygw (pid %d) continued", pid)
		})
	}
	s.t.Cleanup(thaw) // before the stack's own clean-up stops versitygw
	return thaw
}

// checkReplyDeadline fails t for every message answered later than its
// final dot + job_timeout + replySlack; a reply that never came counts
// when the client gave up on it. It returns the latest reply.
func checkReplyDeadline(t *testing.T, res []result, jobTimeout time.Duration) time.Duration {
	t.Helper()
	var latest time.Duration
	n := 0
	for _, r := range res {
		if r.dot.IsZero() {
			continue
		}
		n++
		d := r.answered.Sub(r.dot)
		latest = max(latest, d)
		if d > jobTimeout+replySlack {
			t.Errorf("answered %v after its final dot, past job_timeout (%v) + %v: %s",
				d.Round(time.Millisecond), jobTimeout, replySlack, r)
		}
	}
	t.Logf("%d final dots; the latest reply came %v after its dot (job_timeout %v)", n, latest.Round(time.Millisecond), jobTimeout)
	return latest
}

// checkFrozenWindow fails t for a 250 to a message begun and answered
// while the store was frozen, and unless some message got a 4xx. Unlike
// checkFaultWindow it needs no 4xx inside the window: a message meeting
// the freeze is answered only at its deadline, often after the thaw.
func checkFrozenWindow(t *testing.T, c counts, in []result) {
	t.Helper()
	for _, r := range in {
		if r.code == 250 && !r.connErr {
			t.Errorf("250 while the store was frozen: %s", r)
		}
	}
	if c.temp == 0 {
		t.Error("no 4xx although the store was frozen for longer than job_timeout")
	}
}

// filtersRunning waits until at least n filters have started and not
// ended.
func (s *stack) filtersRunning(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		running := 0
		for _, rs := range readRuns(s.t, s.runlog) {
			if len(rs) > 0 && rs[len(rs)-1].kind == "start" {
				running++
			}
		}
		if running >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d filters running after %v, want %d", running, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestS3Freeze: versitygw frozen for longer than job_timeout (issue 6,
// items 6 and 8).
func TestS3Freeze(t *testing.T) {
	// While the edges store messages: small ones (read whole before S3
	// is contacted) meet the deadline from their final dot; a large one
	// (6 MiB, parts of 5 MiB) meets the store that stops reading before
	// its dot, and gets 451 after TimeOut, its body read to the end.
	t.Run("EdgeUpload", func(t *testing.T) {
		tm := timing{filterTimeout: 5, ackWait: 10 * time.Second, jobTimeout: 20 * time.Second, slots: 2,
			timeOut: 10, partSize: "5MiB"}
		s := newStack(t, tm, 2, 3)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		small := (&load{prefix: "frzup", addrs: s.edgeAddrs(), sessions: 6}).start(ctx)
		defer small.finish()
		big := (&load{prefix: "frzbig", addrs: s.edgeAddrs(), sessions: 1, size: 6 << 20, pause: time.Second}).start(ctx)
		defer big.finish()
		if err := waitOK(small, time.Time{}, 20, 60*time.Second); err != nil {
			t.Fatalf("before the fault: %v", err)
		}
		// The messages in flight when the store stops are answered at
		// their deadline; the next ones meet the store in their upload.
		down := 2*tm.jobTimeout + 5*time.Second
		from, to := s.freezeWhile(t, small, 20, down)
		bigRes := big.finish()
		res := append(small.finish(), bigRes...)
		t.Logf("frozen from %s to %s; replies:%s", from.Format("15:04:05.000"), to.Format("15:04:05.000"), replies(res))
		in := window(res, from, to)
		t.Logf("%d messages begun and answered while frozen:%s", len(in), replies(in))
		c := checkInvariants(t, res, s.up.Transactions())
		checkNoPerm(t, res)
		checkFrozenWindow(t, c, in)
		checkReplyDeadline(t, res, tm.jobTimeout)
		bigTemp := 0
		for _, r := range bigRes {
			if r.connErr {
				t.Errorf("large message: %s (the edge must read a message to its end while the store hangs)", r)
			}
			if r.code >= 400 && r.code < 500 {
				bigTemp++
			}
		}
		stalled, late := 0, 0
		for _, e := range s.edges {
			stalled += len(e.logLines("FILTER-ERROR", "the store stopped reading the message"))
			late += len(e.logLines("FILTER-ERROR", "job_timeout after the final dot passed"))
		}
		t.Logf("large messages:%s", replies(bigRes))
		t.Logf("uploads the edges gave up: %d for a store that stopped reading, %d at the deadline", stalled, late)
		if stalled == 0 || late == 0 {
			t.Error("the freeze should have met uploads both before and after their final dot")
		}
		if bigTemp == 0 {
			t.Error("no 4xx for a large message while the store was frozen")
		}
		s.checkAlive()
		s.logSummary()
	})

	// While the workers store the filtered copies: the filters run when
	// the store stops; the edges answer 451 at the deadline at the latest.
	t.Run("WorkerUpload", func(t *testing.T) {
		tm := timing{filterTimeout: 8, ackWait: 12 * time.Second, jobTimeout: 25 * time.Second, filterSleep: "3", slots: 2}
		s := newStack(t, tm, 2, 3)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		l := (&load{prefix: "frzw", addrs: s.edgeAddrs(), sessions: 6}).start(ctx)
		defer l.finish()
		if err := waitOK(l, time.Time{}, 10, 60*time.Second); err != nil {
			t.Fatalf("before the fault: %v", err)
		}
		if err := s.filtersRunning(3, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		from, to := s.freezeWhile(t, l, 10, tm.jobTimeout+10*time.Second)
		res := l.finish()
		t.Logf("frozen from %s to %s; replies:%s", from.Format("15:04:05.000"), to.Format("15:04:05.000"), replies(res))
		c := checkInvariants(t, res, s.up.Transactions())
		checkNoPerm(t, res)
		checkFrozenWindow(t, c, window(res, from, to))
		checkReplyDeadline(t, res, tm.jobTimeout)
		s.checkAlive()
		s.logSummary()
	})

	// A verdict is on its way while the edge's look for the stored
	// verdict hangs: the filters reject, the store stops while they run.
	// Each worker sends its verdict once it gave up waiting for its
	// verdict record (2 s), well before job_timeout; the sender must get
	// the filter's reply then, not at the deadline.
	t.Run("StalledPoll", func(t *testing.T) {
		const reject = "550 5.7.1 faults: rejected"
		tm := timing{filterTimeout: 10, ackWait: 15 * time.Second, jobTimeout: 55 * time.Second, filterSleep: "3",
			filterReject: reject, slots: 2}
		s := newStack(t, tm, 2, 2)
		ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
		defer cancel()
		l := (&load{prefix: "frzpoll", addrs: s.edgeAddrs(), sessions: 4, count: 1}).start(ctx)
		defer l.finish()
		if err := s.filtersRunning(4, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		down := tm.jobTimeout + 5*time.Second
		thaw := s.freezeS3(down + time.Minute)
		frozen := time.Now()
		res := l.wait()
		t.Logf("all %d answered %v after the freeze; replies:%s", len(res), time.Since(frozen).Round(time.Millisecond), replies(res))
		// Frozen for longer than job_timeout, as the issue has it: the
		// replies above came while it still was.
		if d := time.Until(frozen.Add(down)); d > 0 {
			time.Sleep(d)
		}
		thaw()
		checkInvariants(t, res, s.up.Transactions())
		checkReplyDeadline(t, res, tm.jobTimeout)
		for _, r := range res {
			if r.connErr || r.reply != reject {
				t.Errorf("%s: want the filter's reply %q", r, reject)
				continue
			}
			// The verdict leaves the worker about 2 s after the filter
			// ends; waiting for the hanging look would take until the
			// deadline.
			if d := r.answered.Sub(r.dot); d > tm.jobTimeout-10*time.Second {
				t.Errorf("%s: answered %v after the final dot, at the deadline (%v): the verdict waited for the hanging look", r,
					d.Round(time.Millisecond), tm.jobTimeout)
			}
		}
		missed := 0
		for _, e := range s.edges {
			missed += len(e.logLines("verdict read from the store"))
		}
		t.Logf("verdicts read from the store: %d; verdict records the workers could not store: %d", missed, recordFailures(s))
		s.checkAlive()
		s.logSummary()
	})
}

// recordFailures counts the verdict records the workers could not store.
func recordFailures(s *stack) int {
	n := 0
	for _, w := range s.workers {
		for _, l := range w.logLines("cannot store the verdict record") {
			if strings.Contains(l, `"level":"ERROR"`) {
				n++
			}
		}
	}
	return n
}
