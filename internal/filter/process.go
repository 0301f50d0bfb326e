package filter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
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
	// hold them that long, and Run must not wait for it. The subreaper
	// kills it sooner; without one, sluice cannot reach it.
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
	stopTooLarge            // the filter wrote more than Spec.MaxOutput
)

// outcome is what one run of the shell produced.
type outcome struct {
	startErr     error
	waitErr      error
	state        *os.ProcessState // nil when the shell did not start or could not be waited for
	stop         stopReason
	storeStalled bool // ctx ended while the store held the output copier
	tooLarge     bool // the filter wrote more than Spec.MaxOutput
	stderr       []byte
	written      int64 // bytes written to the stdout writer
	inErr        error // reading the message
	outErr       error // writing the output
}

func (s Spec) killGrace() time.Duration {
	if s.KillGrace > 0 {
		return s.KillGrace
	}
	return defaultKillGrace
}

// shell is a started /bin/sh -c and sluice's ends of its pipes.
type shell struct {
	cmd  *exec.Cmd
	errR *os.File // its stderr
	outR *os.File // its stdout; nil when it writes to the process's own
	inW  *os.File // its stdin; nil for /dev/null

	window *window // nil without the subreaper
}

// startShell starts spec.Command (as /bin/sh -c, or directly when it is
// a simple command: command.go) in its own process group,
// with pipes for stderr and, when asked for, stdin and stdout; without
// them stdin is /dev/null and stdout the process's own, as proxsmtpd's
// file mode has it.
func startShell(spec Spec, env []string, withStdin, withStdout bool) (*shell, error) {
	cmd := command(spec.Command, env)
	cmd.Env = env
	// Its own process group, so that a timeout can kill the real filter
	// too: dash runs it as a child of sh (behaviour.md#filtering), and
	// what a directly started program forks goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = os.Stdout

	sh := &shell{cmd: cmd}
	var childEnds []*os.File
	defer func() { closeFiles(childEnds...) }()
	pipe := func(what string) (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err != nil {
			sh.closeOurs()
			return nil, nil, fmt.Errorf("%s pipe: %w", what, err)
		}
		return r, w, nil
	}

	errR, errW, err := pipe("stderr")
	if err != nil {
		return nil, err
	}
	sh.errR, cmd.Stderr, childEnds = errR, errW, append(childEnds, errW)
	if withStdin {
		inR, inW, err := pipe("stdin")
		if err != nil {
			return nil, err
		}
		sh.inW, cmd.Stdin, childEnds = inW, inR, append(childEnds, inR)
	}
	if withStdout {
		outR, outW, err := pipe("stdout")
		if err != nil {
			return nil, err
		}
		sh.outR, cmd.Stdout, childEnds = outR, outW, append(childEnds, outW)
	}
	if r := subreaper.r.Load(); r != nil {
		sh.window, err = r.startShell(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		sh.closeOurs()
		return nil, err
	}
	return sh, nil
}

// closeOurs closes sluice's ends of the pipes; closing one twice is harmless.
func (sh *shell) closeOurs() { closeFiles(sh.errR, sh.outR, sh.inW) }

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

// execute runs spec.Command and supervises it until the shell has exited
// and its pipes are closed. stdin is streamed to the filter's stdin (nil:
// /dev/null); the filter's stdout is streamed to stdout (nil: the
// process's own stdout, as proxsmtpd's file mode does). stderr is always
// captured, bounded.
func execute(ctx context.Context, spec Spec, env []string, stdin io.Reader, stdout io.Writer) outcome {
	sh, err := startShell(spec, env, stdin != nil, stdout != nil)
	if err != nil {
		return outcome{startErr: err}
	}
	defer sh.closeOurs()
	s := &supervisor{spec: spec, sh: sh, o: &outcome{}, wait: &storeClock{},
		failed: make(chan struct{}), exited: make(chan struct{})}
	if stdout != nil {
		s.out = &output{w: stdout, limit: spec.MaxOutput, wait: s.wait}
	}
	s.startIO(stdin)
	go func() {
		s.o.waitErr = sh.cmd.Wait()
		sh.window.shellDone()
		close(s.exited)
	}()
	s.loop(ctx)

	if sh.inW != nil {
		// Unblocks a feeder stuck writing to a pipe nobody reads.
		_ = sh.inW.Close()
	}
	<-s.fed
	if s.killed != nil {
		<-s.killed
	}
	// Whatever the filter left running, in its group or out of it, ends
	// with the run (with the subreaper).
	sh.window.finish()
	s.o.state = sh.cmd.ProcessState
	s.o.stderr = s.tail.Bytes()
	if s.out != nil {
		s.o.written, s.o.outErr, s.o.tooLarge = s.out.n, s.out.err, s.out.tooLarge
	}
	return *s.o
}

// supervisor watches one run of the shell: its exit, its pipes, the
// deadlines, and failures of the message's store on either side.
type supervisor struct {
	spec Spec
	sh   *shell
	out  *output     // nil when stdout is not read
	wait *storeClock // time spent waiting for the message store
	o    *outcome
	tail *tailBuffer

	failOnce   sync.Once
	failed     chan struct{} // closed when reading the message or writing the output failed, or the output is too large
	failReason stopReason    // why failed was closed
	exited     chan struct{} // closed once the shell was waited for
	pipesDone  chan struct{} // closed once stdout and stderr reached EOF or were closed
	fed        chan struct{} // closed once the feeder is done
	killed     chan struct{} // closed when terminate is done; nil until stopped
}

func (s *supervisor) fail(r stopReason) {
	s.failOnce.Do(func() {
		s.failReason = r
		close(s.failed)
	})
}

// startIO starts the goroutines that feed stdin and read stdout and stderr.
func (s *supervisor) startIO(stdin io.Reader) {
	var copiers sync.WaitGroup
	s.tail = &tailBuffer{max: stderrTail}
	copiers.Go(func() {
		// Read errors only happen once the pipe is force-closed.
		_, _ = io.CopyBuffer(s.tail, s.sh.errR, make([]byte, 4<<10))
	})
	if s.out != nil {
		copiers.Go(func() {
			s.out.copyFrom(s.sh.outR)
			switch {
			case s.out.err != nil:
				s.fail(stopIO)
			case s.out.tooLarge:
				s.fail(stopTooLarge)
			}
		})
	}
	s.pipesDone = make(chan struct{})
	go func() {
		copiers.Wait()
		close(s.pipesDone)
	}()

	s.fed = make(chan struct{})
	if s.sh.inW == nil {
		close(s.fed)
		return
	}
	go func() {
		defer close(s.fed)
		if s.o.inErr = feed(s.sh.inW, stdin, s.wait); s.o.inErr != nil {
			s.fail(stopIO)
		}
	}()
}

// loop waits until the shell has exited and its pipes are closed,
// stopping it when a deadline passes, ctx ends or the store fails.
//
// FilterTimeout counts the time Run waits for the filter, not for the
// store: while the output copier
// is blocked writing to out, a slow store holds the filter up, and that
// is not the filter's doing (issue 6, item 7).
func (s *supervisor) loop(ctx context.Context) {
	w := &watch{ctxDone: ctx.Done(), failed: s.failed, exited: s.exited, pipesDone: s.pipesDone}
	if s.spec.Timeout > 0 {
		w.deadline = newBudget(s.spec.Timeout, s.wait)
	}
	defer w.deadline.stop()
	for w.exited != nil || w.pipesDone != nil {
		select {
		case <-w.exited:
			// A background process of the filter may still hold the
			// pipes: its output is read until they close, as proxsmtpd
			// does, within the same FilterTimeout (behaviour.md#filtering).
			w.exited = nil
		case <-w.pipesDone:
			w.pipesDone = nil
		case <-w.deadline.C():
			if w.deadline.expired() {
				s.stop(w, stopTimeout)
			}
		case <-w.ctxDone:
			// A store that never gave the message or took the output is
			// the store's failure.
			s.o.storeStalled = s.wait.busy()
			s.stop(w, stopCanceled)
		case <-w.failed:
			s.stop(w, s.failReason)
		case <-w.killing:
			// The group is gone or SIGKILLed: so is, with the subreaper,
			// what left the group and may hold the pipes.
			w.killing = nil
			s.sh.window.end()
			w.hard = time.After(hardStop)
		case <-w.hard:
			// Something outside the group (it called setsid) still holds
			// the pipes. Another scan may find it adopted by now; closing
			// our ends unblocks the copiers anyway.
			w.hard = nil
			s.sh.window.end()
			closeFiles(s.sh.errR, s.sh.outR)
		}
	}
}

// watch is what loop waits for; it no longer waits for a nil one.
type watch struct {
	deadline  *budget
	ctxDone   <-chan struct{}
	failed    <-chan struct{}
	exited    <-chan struct{}
	pipesDone <-chan struct{}
	killing   <-chan struct{}
	hard      <-chan time.Time
}

// stop stops the filter for r: its process group gets SIGTERM, then
// SIGKILL, and only the end of the shell and its pipes matter any more.
func (s *supervisor) stop(w *watch, r stopReason) {
	s.o.stop = r
	w.deadline.stop()
	w.deadline, w.ctxDone, w.failed = nil, nil, nil
	s.killed = make(chan struct{})
	w.killing = s.killed
	go terminate(s.sh.cmd.Process, s.spec.killGrace(), s.exited, s.killed)
}

// budget is a timer on the filter's clock: it expires once Run has waited
// d for the filter, not counting the time it waited for the message
// store. A nil budget never expires.
type budget struct {
	store *storeClock
	d     time.Duration
	since time.Time
	base  time.Duration // store time at since
	t     *time.Timer
}

func newBudget(d time.Duration, store *storeClock) *budget {
	return &budget{store: store, d: d, since: time.Now(), base: store.waited(), t: time.NewTimer(d)}
}

// C fires when the budget may have run out; expired says whether it has.
func (b *budget) C() <-chan time.Time {
	if b == nil {
		return nil
	}
	return b.t.C
}

// expired reports whether the budget is used up, and if not sets the
// timer again for what is left.
func (b *budget) expired() bool {
	used := time.Since(b.since) - (b.store.waited() - b.base)
	if used >= b.d {
		return true
	}
	b.t.Reset(b.d - used)
	return false
}

func (b *budget) stop() {
	if b != nil {
		b.t.Stop()
	}
}

// storeClock measures how long Run waits for the message store: the
// feeder reading the message, the copier writing the output. When both
// wait at once, that time counts once.
type storeClock struct {
	mu      sync.Mutex
	waiting int           // reads and writes in progress
	since   time.Time     // when waiting became non-zero
	done    time.Duration // in waits that ended
}

func (c *storeClock) enter() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting == 0 {
		c.since = time.Now()
	}
	c.waiting++
}

func (c *storeClock) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting--; c.waiting == 0 {
		c.done += time.Since(c.since)
	}
}

// waited is the time spent waiting for the store so far.
func (c *storeClock) waited() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting == 0 {
		return c.done
	}
	return c.done + time.Since(c.since)
}

// busy reports whether Run is waiting for the store now.
func (c *storeClock) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting > 0
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
// long as their new parent does not reap them (slowly, or never in a
// container without an init), so /proc has the last word where it exists.
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
		if st, ok := readStat(pid); ok && st.pgrp == pgid && !st.dead() {
			return true
		}
	}
	return false
}

// feed streams the message to the filter's stdin. A filter that stops
// reading is not an error: its output is still delivered (behaviour.md#filtering).
// Only a failure to read the message is returned. The time spent reading
// is the store's (wait).
func feed(w *os.File, r io.Reader, wait *storeClock) error {
	defer w.Close()
	buf := make([]byte, copyBuffer)
	for {
		wait.enter()
		n, err := r.Read(buf)
		wait.leave()
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

// output is where the filter's stdout goes: the store's writer, and what
// Run must know about it: what was written, the store's error, and
// whether the filter wrote too much.
type output struct {
	w        io.Writer
	limit    int64       // Spec.MaxOutput
	wait     *storeClock // the time writes take is the store's
	n        int64       // bytes written; read once the copier is done
	err      error       // w's error; read once the copier is done
	tooLarge bool        // the filter wrote more than limit; read once the copier is done
}

// copyFrom streams r to the store until EOF, the store's failure or the
// limit. Read errors only happen once the pipe is force-closed, and the
// outcome says why then.
func (o *output) copyFrom(r *os.File) {
	buf := make([]byte, copyBuffer)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if o.limit > 0 && o.n+int64(n) > o.limit {
				// Nothing past the limit reaches the store; closing the
				// pipe ends a filter that ignores the signals to come.
				o.tooLarge = true
				_ = r.Close()
				return
			}
			if o.err = o.write(buf[:n]); o.err != nil {
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

func (o *output) write(p []byte) error {
	o.wait.enter()
	n, err := o.w.Write(p)
	o.wait.leave()
	o.n += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return err
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
