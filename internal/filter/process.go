package filter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stderrTail is how much of the filter's stderr is kept: only the last
	// non-blank line matters, and a chatty filter must not cost memory.
	stderrTail = 8 << 10

	// defaultKillGrace is the wait between SIGTERM and SIGKILL.
	defaultKillGrace = 2 * time.Second

	// hardStop is how long the pipes may stay open once the process group
	// is gone or SIGKILLed: only a process that left the group (setsid) can
	// hold them that long, and Run must not wait for it.
	hardStop = time.Second

	// pollGroup is how often a terminating process group is checked.
	pollGroup = 50 * time.Millisecond

	copyBuffer = 32 << 10
)

// stopReason says why sluice stopped the filter before it finished.
type stopReason int

const (
	notStopped   stopReason = iota
	stopTimeout             // the total deadline passed
	stopCanceled            // ctx was done
	stopIO                  // reading the message or writing the output failed
	stopStuck               // the shell exited, something it started held the pipes open
)

// outcome is what one run of the shell produced.
type outcome struct {
	startErr error
	waitErr  error
	state    *os.ProcessState // nil when the shell did not start or could not be waited for
	stop     stopReason
	stderr   []byte
	written  int64 // bytes written to the stdout writer
	inErr    error // reading the message
	outErr   error // writing the output
}

func (s Spec) killGrace() time.Duration {
	if s.KillGrace > 0 {
		return s.KillGrace
	}
	return defaultKillGrace
}

// execute runs spec.Command as /bin/sh -c in its own process group and
// supervises it until the shell has exited and its pipes are closed. stdin
// is streamed to the filter's stdin (nil: /dev/null); the filter's stdout
// is streamed to stdout (nil: the process's own stdout, as proxsmtpd's file
// mode does). stderr is always captured, bounded.
func execute(ctx context.Context, spec Spec, env []string, stdin io.Reader, stdout io.Writer) (o outcome) {
	cmd := exec.Command("/bin/sh", "-c", spec.Command)
	cmd.Env = env
	// Its own process group, so that a timeout can kill the real filter
	// too: dash runs it as a child of sh (B29, B32).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	var childEnds, ourEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			_ = f.Close()
		}
	}
	defer func() { closeAll(ourEnds) }()

	errR, errW, err := os.Pipe()
	if err != nil {
		o.startErr = fmt.Errorf("stderr pipe: %w", err)
		return o
	}
	childEnds, ourEnds = append(childEnds, errW), append(ourEnds, errR)
	cmd.Stderr = errW

	var inW *os.File
	if stdin != nil {
		inR, w, err := os.Pipe()
		if err != nil {
			closeAll(childEnds)
			o.startErr = fmt.Errorf("stdin pipe: %w", err)
			return o
		}
		inW = w
		childEnds, ourEnds = append(childEnds, inR), append(ourEnds, inW)
		cmd.Stdin = inR
	}

	var outR *os.File
	if stdout != nil {
		r, outW, err := os.Pipe()
		if err != nil {
			closeAll(childEnds)
			o.startErr = fmt.Errorf("stdout pipe: %w", err)
			return o
		}
		outR = r
		childEnds, ourEnds = append(childEnds, outW), append(ourEnds, outR)
		cmd.Stdout = outW
	} else {
		cmd.Stdout = os.Stdout
	}

	err = cmd.Start()
	closeAll(childEnds)
	if err != nil {
		o.startErr = err
		return o
	}

	var deadline <-chan time.Time
	if spec.Timeout > 0 {
		t := time.NewTimer(spec.Timeout)
		defer t.Stop()
		deadline = t.C
	}

	failed := make(chan struct{})
	var failOnce sync.Once
	fail := func() { failOnce.Do(func() { close(failed) }) }
	var ioFailed <-chan struct{} = failed // nil once stopped

	var copiers sync.WaitGroup
	tail := &tailBuffer{max: stderrTail}
	copiers.Go(func() {
		// Read errors only happen once the pipe is force-closed.
		_, _ = io.CopyBuffer(tail, errR, make([]byte, 4<<10))
	})
	if outR != nil {
		copiers.Go(func() {
			o.written, o.outErr = copyOut(stdout, outR)
			if o.outErr != nil {
				fail()
			}
		})
	}
	pipesDone := make(chan struct{})
	go func() {
		copiers.Wait()
		close(pipesDone)
	}()

	fed := make(chan struct{})
	if inW != nil {
		go func() {
			defer close(fed)
			if o.inErr = feed(inW, stdin); o.inErr != nil {
				fail()
			}
		}()
	} else {
		close(fed)
	}

	exited := make(chan struct{})
	go func() {
		o.waitErr = cmd.Wait()
		close(exited)
	}()

	var (
		ctxDone             = ctx.Done()
		exitedC             = exited
		drain, hard         <-chan time.Time
		killing, killed     chan struct{}
		isExited, isDrained bool
	)
	stop := func(r stopReason) {
		o.stop = r
		deadline, ctxDone, ioFailed, drain = nil, nil, nil, nil
		killed = make(chan struct{})
		killing = killed
		go terminate(cmd.Process, spec.killGrace(), exited, killed)
	}
	for !isExited || !isDrained {
		select {
		case <-exitedC:
			exitedC, isExited = nil, true
			if !isDrained && o.stop == notStopped {
				// Only a background process of the filter can still hold
				// the pipes; give it a moment, then stop it (COMPAT 5).
				drain = time.After(spec.killGrace())
			}
		case <-pipesDone:
			pipesDone, isDrained = nil, true
		case <-deadline:
			stop(stopTimeout)
		case <-ctxDone:
			stop(stopCanceled)
		case <-ioFailed:
			stop(stopIO)
		case <-drain:
			stop(stopStuck)
		case <-killing:
			killing = nil
			hard = time.After(hardStop)
		case <-hard:
			// Something outside the group (it called setsid) still holds
			// the pipes. Closing our ends unblocks the copiers.
			hard = nil
			_ = errR.Close()
			if outR != nil {
				_ = outR.Close()
			}
		}
	}
	if inW != nil {
		// Unblocks a feeder stuck writing to a pipe nobody reads.
		_ = inW.Close()
	}
	<-fed
	if killed != nil {
		<-killed
	}
	o.state = cmd.ProcessState
	o.stderr = tail.Bytes()
	return o
}

// terminate sends SIGTERM to the shell's process group and, if anything in
// it is still alive after grace, SIGKILL. It closes done when the group is
// gone or SIGKILL was sent.
func terminate(p *os.Process, grace time.Duration, exited <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	pgid := p.Pid
	signal := func(sig syscall.Signal) {
		_ = syscall.Kill(-pgid, sig)
		// The shell itself too, in case it left the group (exec setsid ...);
		// os.Process knows whether it was already reaped.
		_ = p.Signal(sig)
	}
	signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	tick := time.NewTicker(pollGroup)
	defer tick.Stop()
	for {
		select {
		case <-timer.C:
			signal(syscall.SIGKILL)
			return
		case <-tick.C:
			// While the shell is unreaped its pid, and so the group id,
			// cannot be reused; once it is reaped, check the group.
			select {
			case <-exited:
				if !groupAlive(pgid) {
					return
				}
			default:
			}
		}
	}
}

// groupAlive reports whether a process of group pgid is still running.
// kill(2) also counts zombies, and orphans of the filter stay zombies as
// long as PID 1 does not reap them (slowly, or never in a container
// without an init), so /proc has the last word where it exists.
func groupAlive(pgid int) bool {
	if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, pgrp, ok := procStat(pid)
		if ok && pgrp == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// procStat reads a process's state and process group from /proc.
func procStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pgrp, true
}

// feed streams the message to the filter's stdin. A filter that stops
// reading is not an error: its output is still delivered (B30, b10).
// Only a failure to read the message is returned.
func feed(w *os.File, r io.Reader) error {
	defer w.Close()
	buf := make([]byte, copyBuffer)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // EPIPE, or the pipe was closed after the filter ended
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// copyOut streams the filter's stdout to out and returns the bytes written
// and the error of out, if any. Read errors only happen once the pipe is
// force-closed, and the outcome says why then.
func copyOut(out io.Writer, r *os.File) (int64, error) {
	cw := &countWriter{w: out}
	_, err := io.CopyBuffer(cw, r, make([]byte, copyBuffer))
	if cw.err != nil {
		return cw.n, cw.err
	}
	if errors.Is(err, io.ErrShortWrite) {
		return cw.n, err
	}
	return cw.n, nil
}

// countWriter counts what reaches w and remembers w's error, to tell it
// apart from errors on the other side of a copy.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

// errReader remembers r's error, to tell it apart from errors on the other
// side of a copy.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// tailBuffer keeps the last max bytes written to it, in at most 2*max
// bytes of memory.
type tailBuffer struct {
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return n, nil
}

func (t *tailBuffer) Bytes() []byte {
	if len(t.buf) > t.max {
		return t.buf[len(t.buf)-t.max:]
	}
	return t.buf
}
