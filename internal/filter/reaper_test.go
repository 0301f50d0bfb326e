package filter

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The filter package's tests start no child processes of their own
	// that could orphan theirs, so the test binary may be a subreaper.
	if err := EnableSubreaper(); err != nil && runtime.GOOS == "linux" {
		fmt.Fprintln(os.Stderr, "EnableSubreaper:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// tag is a sleep argument no other process has: `sleep 1000.<random>`
// runs as long as `sleep 1000` and can be found in /proc by it.
func tag() string { return fmt.Sprintf("1000.%09d", rand.IntN(1e9)) }

// tagged returns the pids of running (not zombie) processes with arg on
// their command line.
func tagged(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(arg)) || gone(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// assertEnded waits a little for every process tagged arg to end; any
// left are failures, and killed.
func assertEnded(t *testing.T, arg string, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		pids := tagged(arg)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Errorf("processes %v (sleep %s) still run after the filter's run", pids, arg)
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			return
		}
	}
}

// started returns shell text that starts cmd (which must hold "sleep
// "+arg) in the background and waits until it has begun: a filter that
// exits before its escapee ran would prove nothing.
func started(t *testing.T, arg, cmd string) string {
	mark := filepath.Join(t.TempDir(), "started")
	return fmt.Sprintf("%s & while [ ! -e %s ]; do sleep 0.01; done; ",
		strings.Replace(cmd, "sleep "+arg, "sh -c 'touch "+mark+"; exec sleep "+arg+"'", 1), mark)
}

// assertRunning checks that a process tagged arg runs.
func assertRunning(t *testing.T, arg, why string) {
	t.Helper()
	if len(tagged(arg)) == 0 {
		t.Errorf("sleep %s was killed %s", arg, why)
	}
}

func skipWithoutSubreaper(t *testing.T) {
	t.Helper()
	if subreaper.r.Load() == nil {
		t.Skip("no subreaper on this system")
	}
}

// TestDescendantsEndWithTheRun: whatever a filter started, in its process
// group or out of it, ends with its run.
func TestDescendantsEndWithTheRun(t *testing.T) {
	skipWithoutSubreaper(t)
	const quiet = " </dev/null >/dev/null 2>&1"
	tests := []struct {
		name, cmd string // %[1]s: the tag
		mode      Mode
	}{
		{"setsid", "setsid sleep %[1]s" + quiet, Pipe},
		{"double fork", "( setsid sleep %[1]s" + quiet + " & )", Pipe},
		{"background in the group", "sleep %[1]s" + quiet, Pipe},
		{"file mode", "setsid sleep %[1]s" + quiet, File},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arg := tag()
			cmd := started(t, arg, fmt.Sprintf(tt.cmd, arg))
			if tt.mode == Pipe {
				cmd += "cat"
			}
			res, out, err := run(t, Spec{Command: cmd, Mode: tt.mode}, stdEnv(), msg)
			if err != nil || res.Action != Accept || out != msg {
				t.Fatalf("Run = %+v, %q, %v; want Accept", res, out, err)
			}
			assertEnded(t, arg, 2*time.Second)
			assertForgotten(t)
		})
	}
	t.Run("daemon in a new session that forks", func(t *testing.T) {
		// Its children are orphaned in turn when it is killed.
		arg := tag()
		mark := filepath.Join(t.TempDir(), "forked")
		loop := fmt.Sprintf("while :; do sleep %s & touch %s; sleep 0.02; done", arg, mark)
		cmd := fmt.Sprintf("setsid sh -c '%s'%s & while [ ! -e %s ]; do sleep 0.01; done; cat", loop, quiet, mark)
		res, out, err := run(t, Spec{Command: cmd}, stdEnv(), msg)
		if err != nil || res.Action != Accept || out != msg {
			t.Fatalf("Run = %+v, %q, %v; want Accept", res, out, err)
		}
		assertEnded(t, arg, 2*time.Second)
		assertForgotten(t)
	})
}

// TestEscapeeHoldingStdout: a process that left the group and holds the
// filter's stdout is killed when the run is stopped at FilterTimeout,
// whether the shell is still running or not, and the run ends without
// waiting for it.
func TestEscapeeHoldingStdout(t *testing.T) {
	skipWithoutSubreaper(t)
	for _, tt := range []struct {
		name, cmd string
		timeout   time.Duration
	}{
		{"after the shell exited", "true", 300 * time.Millisecond},
		{"while the shell runs", "sleep 60", 300 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			arg := tag()
			cmd := "cat; " + started(t, arg, "setsid sleep "+arg) + tt.cmd
			start := time.Now()
			res, _, err := run(t, Spec{Command: cmd, Timeout: tt.timeout, KillGrace: 200 * time.Millisecond}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			assertTempFail(t, res)
			// The timeout, the grace, the group's end and a scan (about
			// 0.6 s), not the grace and the hard stop as well (1.5 s).
			if took := time.Since(start); took > 1300*time.Millisecond {
				t.Errorf("Run took %s", took)
			}
			assertEnded(t, arg, 200*time.Millisecond)
		})
	}
}

// TestConcurrentRuns: a process that started while two runs were going
// on may belong to either, so it lives until both have ended.
func TestConcurrentRuns(t *testing.T) {
	skipWithoutSubreaper(t)
	dir := t.TempDir()
	bStarted, gate := filepath.Join(dir, "b-started"), filepath.Join(dir, "gate")
	argA, argB := tag(), tag()
	wait := func(f string) string { return "while [ ! -e " + f + " ]; do sleep 0.02; done; " }
	// A starts first and ends while B still runs.
	cmdA := wait(bStarted) + started(t, argA, "setsid sleep "+argA+" </dev/null >/dev/null 2>&1") + "cat"
	cmdB := started(t, argB, "setsid sleep "+argB+" </dev/null >/dev/null 2>&1") + "touch " + bStarted + "; " + wait(gate) + "cat"

	var wg sync.WaitGroup
	results := make([]Result, 2)
	wg.Go(func() { results[1], _, _ = run(t, Spec{Command: cmdB}, stdEnv(), msg) })
	time.Sleep(10 * time.Millisecond)
	res, _, err := run(t, Spec{Command: cmdA}, stdEnv(), msg)
	if err != nil || res.Action != Accept {
		t.Fatalf("run A: %+v, %v", res, err)
	}
	time.Sleep(300 * time.Millisecond) // a scan or two
	assertRunning(t, argB, "while its run was going on")

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if results[1].Action != Accept {
		t.Errorf("run B: %+v", results[1])
	}
	assertEnded(t, argB, 2*time.Second)
	assertEnded(t, argA, 2*time.Second)
	assertForgotten(t)
}

// assertForgotten checks that the reaper forgets the windows of runs that
// are over, once nothing of them is left.
func assertForgotten(t *testing.T) {
	t.Helper()
	r := subreaper.r.Load()
	for end := time.Now().Add(2*sweepEvery + time.Second); ; time.Sleep(50 * time.Millisecond) {
		r.mu.Lock()
		n := len(r.open)
		r.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(end) {
			t.Errorf("%d windows still open", n)
			return
		}
	}
}

// TestOtherChildrenAreLeftAlone: children of the process that are not
// filter runs are not touched, nor reaped, even while runs end around
// them: those in its own process group, and those started outside every
// run.
func TestOtherChildrenAreLeftAlone(t *testing.T) {
	skipWithoutSubreaper(t)
	before := exec.Command("sleep", tag())
	before.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := before.Start(); err != nil {
		t.Fatal(err)
	}
	// Start times have a resolution of 1/userHZ s: one in the same tick
	// as a run's start may be the run's.
	time.Sleep(3 * time.Second / userHZ)
	dir := t.TempDir()
	running, gate := filepath.Join(dir, "running"), filepath.Join(dir, "gate")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	done := make(chan Result, 1)
	escapee := tag()
	go func() {
		cmd := started(t, escapee, "setsid sleep "+escapee+" </dev/null >/dev/null 2>&1") + "touch " + running +
			"; while [ ! -e " + gate + " ]; do sleep 0.02; done; cat"
		res, _ := Run(ctx, Spec{Command: cmd, TempDir: dir}, stdEnv(), strings.NewReader(msg), &bytes.Buffer{})
		done <- res
	}()
	for _, err := os.Stat(running); err != nil; _, err = os.Stat(running) {
		time.Sleep(10 * time.Millisecond)
	}
	// Started during the run, in the test's own process group.
	during := exec.Command("sleep", tag())
	if err := during.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.Action != Accept {
		t.Fatalf("Run = %+v", res)
	}
	assertEnded(t, escapee, 2*time.Second)
	time.Sleep(sweepEvery + 100*time.Millisecond) // and a sweep

	for _, c := range []*exec.Cmd{before, during} {
		if gone(c.Process.Pid) {
			t.Errorf("%v was killed", c.Args)
		}
		_ = c.Process.Kill()
		// Not reaped by anyone else: its own Wait still gets it.
		if err := c.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("%v: Wait = %v, want killed", c.Args, err)
		}
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"1234 (sleep) S 1 1234 1234 0 -1 4194560 101 0 0 0 0 0 0 0 20 0 1 0 56789 8192 200 18446744073709551615",
			procStat{state: 'S', ppid: 1, pgrp: 1234, start: 56789}, true},
		// The command name may hold spaces and parentheses.
		{"77 (a) b (c)) Z 5 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0",
			procStat{state: 'Z', ppid: 5, pgrp: 6, start: 42}, true},
		{"77 (x) S 5 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0", procStat{}, false},
		{"77 (x) SS 5 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42", procStat{}, false},
		{"77 (x) S five 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42", procStat{}, false},
		{"no parenthesis", procStat{}, false},
		{"", procStat{}, false},
	}
	for _, tt := range tests {
		got, ok := parseStat([]byte(tt.in))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	self, ok := readStat(os.Getpid())
	if !ok || self.ppid != os.Getppid() || self.pgrp != syscall.Getpgrp() || self.state != 'R' && self.state != 'S' {
		t.Errorf("readStat(self) = %+v, %v", self, ok)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1234 (sleep) S 1 1234 1234 0 -1 4194560 101 0 0 0 0 0 0 0 20 0 1 0 56789 8192 200"))
	f.Add([]byte("77 (a) b (c)) Z 5 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0"))
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok := parseStat(b)
		if !ok {
			return
		}
		if st.ppid < 0 || st.pgrp < 0 || st.start < 0 || st.state <= ' ' {
			t.Errorf("parseStat(%q) = %+v", b, st)
		}
	})
}

func TestOwnChildren(t *testing.T) {
	c := exec.Command("sleep", tag())
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	for name, pids := range map[string][]int{"ownChildren": ownChildren(), "children": children(os.Getpid())} {
		found := false
		for _, p := range pids {
			found = found || p == c.Process.Pid
		}
		if !found {
			t.Errorf("%s = %v, without the child %d", name, pids, c.Process.Pid)
		}
	}
}
