package interop

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Generous bounds that only keep a broken run from hanging; nothing here
// asserts speed.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	runTimeout   = 2 * time.Minute
)

// buffer collects a process's output while it runs.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// process is a program started in the background. The test's cleanup
// kills it by PID if it is still running, and shows its output when the
// test failed.
type process struct {
	name   string
	cmd    *exec.Cmd
	stdout buffer
	stderr buffer
	done   chan struct{} // closed once Wait returned
}

func startProcess(t *testing.T, name, dir string, argv ...string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = dir
	p.cmd.Env = childEnv()
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stdout:\n%s\n%s stderr:\n%s", name, p.cmd.Process.Pid, p.stdout.String(), name, p.stderr.String())
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to end and returns its exit status, or -1
// with ok false if it is still running after timeout.
func (p *process) wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// stop sends SIGTERM and waits for the exit status.
func (p *process) stop(t *testing.T) int {
	t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	code, ok := p.wait(stopTimeout)
	if !ok {
		t.Fatalf("%s (pid %d) still running %s after SIGTERM", p.name, p.pid(), stopTimeout)
	}
	return code
}

// waitPort waits until addr accepts connections, failing early if the
// process that should listen there exited.
func (p *process) waitPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if code, exited := p.wait(0); exited {
			t.Fatalf("%s exited (status %d) before listening on %s", p.name, code, addr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: nothing listening on %s after %s: %v", p.name, addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result is what a short-lived command left behind.
type result struct {
	stdout, stderr string
	code           int
}

// runCommand runs a program to its end (bounded by runTimeout) in dir.
func runCommand(t *testing.T, dir string, stdin []byte, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s did not finish within %s\nstdout:\n%s\nstderr:\n%s", argv[0], runTimeout, stdout.String(), stderr.String())
	case err != nil && !errors.As(err, &ee):
		t.Fatalf("running %s: %v", argv[0], err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// freePort picks a loopback port the OS considers free. The programs
// under test take their ports from configuration, so the listener is
// closed again; the window for a clash is small on a test machine.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// isRoot: smtp-sink requires -u as root and refuses it otherwise
// (initgroups fails for a plain user).
func isRoot() bool { return os.Geteuid() == 0 }

// waitFor polls cond until it holds, failing after startTimeout with what
// was awaited.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", startTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
