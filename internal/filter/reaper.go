package filter

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A filter may start processes that leave its process group (setsid, a
// daemon's double fork): the group kill misses them and they outlive the
// run. A child subreaper (PR_SET_CHILD_SUBREAPER) adopts every orphan
// among its descendants instead of init, so that it can end them.
//
// Adopted processes are told apart from the process's own children by
// bookkeeping alone. Every filter run has a window, on the clock of
// /proc/PID/stat's start times (CLOCK_BOOTTIME in 1/userHZ s), from just
// before its shell starts until the run is over, and then until the last
// scan that killed or reaped something of it. A child of this process
// that is not a live filter shell, not in this process's own process
// group (where os/exec children are, unless asked otherwise) and that
// started inside windows was adopted from those runs: it is killed once
// all of them are over (it may belong to any of them), and reaped. One
// that started outside every window is not a filter's and is left alone,
// unreaped (one that started in the same tick as a window's ends counts
// as inside). What a killed process forked is orphaned in turn, started
// before its end and so inside the window, and is found by the next scan.
// What a process that is not killed yet (another run it may come from is
// still going) forks starts inside that run's window. A window is
// forgotten once a whole scan found nothing inside it.
//
// What can go wrong is on the safe side. The kernel's lists of children
// may skip one while another is reaped during the read: a window can
// then close with a leftover alive, which runs on as it would without a
// subreaper. A child of this process started outside its process group
// during a run counts as the run's: hence EnableSubreaper's rule.

const (
	// userHZ is the unit of /proc/PID/stat's start time, USER_HZ, which
	// is 100 on every architecture Linux and Go share.
	userHZ = 100

	// sweepEvery is how often adopted processes of runs that are over are
	// looked for, besides the scans at the end of each run.
	sweepEvery = 2 * time.Second

	// settleWait bounds how long a run waits at its end for what it left
	// behind to die.
	settleWait = time.Second
)

// subreaper is the process-wide state behind EnableSubreaper, the
// package's only global: being a child subreaper is a property of the
// whole process, and so must be the bookkeeping of its adopted children.
// r is nil until EnableSubreaper succeeds, and then never changes.
var subreaper struct {
	mu sync.Mutex
	r  atomic.Pointer[reaper]
}

// EnableSubreaper makes this process a child subreaper, so that every
// descendant of a filter run ends with the run, even one that left the
// filter's process group; it also reaps them. It is a switch for the whole
// process, and stays on.
//
// Call it from main, once, in programs whose only child processes are
// filter shells (the worker, the edge when it runs workers, replay); never
// where other code starts children that may leave orphans (a test binary
// running mail servers), since an adopted process is known only by the
// time it started. Linux only.
func EnableSubreaper() error {
	subreaper.mu.Lock()
	defer subreaper.mu.Unlock()
	if subreaper.r.Load() != nil {
		return nil
	}
	if err := checkStartTimes(); err != nil {
		return fmt.Errorf("filter: child subreaper: %w", err)
	}
	if err := setChildSubreaper(); err != nil {
		return fmt.Errorf("filter: child subreaper: %w", err)
	}
	r := &reaper{
		self:   os.Getpid(),
		pgrp:   syscall.Getpgrp(),
		shells: map[int]*window{},
		open:   map[*window]struct{}{},
	}
	subreaper.r.Store(r)
	go r.sweep()
	return nil
}

// checkStartTimes makes sure that process start times in /proc and the
// boot clock agree, which the windows rely on.
func checkStartTimes() error {
	now, err := bootTicks()
	if err != nil {
		return err
	}
	self, ok := readStat(os.Getpid())
	if !ok {
		return errors.New("cannot read /proc/self/stat")
	}
	if self.start > now {
		return fmt.Errorf("start time %d ticks is after the boot clock's %d: not in 1/%d s", self.start, now, userHZ)
	}
	return nil
}

// reaper keeps the windows of filter runs and ends what they left.
type reaper struct {
	self, pgrp int

	scanMu sync.Mutex // one scan at a time: closing a window needs a whole one

	mu     sync.Mutex
	shells map[int]*window      // live filter shells, by pid
	open   map[*window]struct{} // windows not yet closed
}

// window is one filter run as the reaper sees it.
type window struct {
	r      *reaper
	start  int64 // boot clock ticks, taken before the shell started
	last   int64 // once ended: boot clock ticks at the end, or at the last kill or reap of a scan
	shell  int   // the shell's pid; 0 once it was waited for
	ended  bool  // the run is over: what it started may be killed
	closed chan struct{}
}

// holds reports whether a process that started at ticks may be the run's.
func (w *window) holds(ticks int64) bool {
	return w.start <= ticks && (!w.ended || ticks <= w.last)
}

// startShell starts cmd, a filter's shell, and opens its window. The lock
// held across Start keeps a scan from taking the new shell, or a child it
// forks at once, for an adopted process of no run.
func (r *reaper) startShell(cmd *exec.Cmd) (*window, error) {
	start, err := bootTicks()
	if err != nil {
		return nil, cmd.Start() // cannot happen on Linux; run untracked
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &window{r: r, start: start, shell: cmd.Process.Pid, closed: make(chan struct{})}
	r.shells[w.shell] = w
	r.open[w] = struct{}{}
	return w, nil
}

// shellDone records that the run's shell was waited for: its pid is free.
func (w *window) shellDone() {
	if w == nil {
		return
	}
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if w.r.shells[w.shell] == w {
		delete(w.r.shells, w.shell)
	}
	w.shell = 0
}

// end records that the run is over, when it finished or was stopped, and
// kills what it left that no other run may claim.
func (w *window) end() {
	if w == nil {
		return
	}
	w.r.mu.Lock()
	if !w.ended {
		w.ended = true
		w.last, _ = bootTicks()
	}
	w.r.mu.Unlock()
	w.r.scan()
}

// finish ends the run and waits a little for what it left to die and be
// reaped. It stops waiting when a scan had nothing of the run's to do:
// what is left then belongs to a run still going too, and goes with it.
func (w *window) finish() {
	if w == nil {
		return
	}
	w.end()
	for deadline := time.Now().Add(settleWait); time.Now().Before(deadline); {
		select {
		case <-w.closed:
			return
		case <-time.After(pollGroup):
		}
		if !w.r.scan()[w] {
			return
		}
	}
}

// sweep scans now and then for what runs that are over left.
func (r *reaper) sweep() {
	for range time.Tick(sweepEvery) {
		if r.hasEnded() {
			r.scan()
		}
	}
}

func (r *reaper) hasEnded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for w := range r.open {
		if w.ended {
			return true
		}
	}
	return false
}

// scan kills the adopted processes of runs that are over, reaps those
// that died, and forgets the windows of which nothing is left. It returns
// the windows it acted for.
func (r *reaper) scan() map[*window]bool {
	r.scanMu.Lock()
	defer r.scanMu.Unlock()
	// Listed without the lock: a filter shell that starts meanwhile is
	// registered by the time the lock is ours.
	pids := ownChildren()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen, acted := map[*window]bool{}, map[*window]bool{}
	for _, pid := range pids {
		if _, ok := r.shells[pid]; ok {
			continue
		}
		// Again, under the lock: a shell waited for since the listing may
		// have given its pid to another process.
		st, ok := readStat(pid)
		if !ok || st.ppid != r.self || st.pgrp == r.pgrp {
			continue
		}
		ws := r.windowsAt(st.start)
		for _, w := range ws {
			seen[w] = true
		}
		if len(ws) > 0 && r.endAdopted(pid, st, ws) {
			for _, w := range ws {
				acted[w] = true
			}
		}
	}
	// What the processes killed or reaped forked started before now.
	now, _ := bootTicks()
	for w := range acted {
		if w.ended {
			w.last = max(w.last, now)
		}
	}
	for w := range r.open {
		if w.ended && w.shell == 0 && !seen[w] {
			delete(r.open, w)
			close(w.closed)
		}
	}
	return acted
}

// endAdopted reaps pid if it died, or kills it if every run it may come
// from is over; it reports whether it did either.
func (r *reaper) endAdopted(pid int, st procStat, ws []*window) bool {
	if st.dead() {
		// Only this pid: wait4(-1) would take os/exec's children.
		var status syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &status, syscall.WNOHANG, nil)
		return true
	}
	for _, w := range ws {
		if !w.ended {
			return false
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return true
}

// windowsAt returns the open windows a process started at ticks falls in.
func (r *reaper) windowsAt(ticks int64) []*window {
	var ws []*window
	for w := range r.open {
		if w.holds(ticks) {
			ws = append(ws, w)
		}
	}
	return ws
}
