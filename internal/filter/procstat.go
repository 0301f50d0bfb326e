package filter

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// procStat is what sluice reads of a process in /proc/PID/stat.
type procStat struct {
	state byte  // R, S, D, Z, ...
	ppid  int   // parent
	pgrp  int   // process group
	start int64 // start time, clock ticks since boot
}

// readStat reads /proc/PID/stat; false when the process is gone or /proc
// is not there.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	return parseStat(b)
}

// parseStat parses "pid (comm) state ppid pgrp session ... starttime ...",
// proc(5). comm may hold spaces and parentheses: the fields start after
// the last ')'.
func parseStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	// Fields 3 (state) to 22 (starttime), counted from 1 as in proc(5).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22-2 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[4-3])
	pgrp, err2 := strconv.Atoi(f[5-3])
	start, err3 := strconv.ParseInt(f[22-3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || ppid < 0 || pgrp < 0 || start < 0 || f[0][0] <= ' ' {
		return procStat{}, false
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, start: start}, true
}

// dead reports whether the process has ended: a zombie waiting for its
// parent, or on its way out.
func (p procStat) dead() bool { return p.state == 'Z' || p.state == 'X' || p.state == 'x' }

// maxChildrenFile is the most read of one thread's children list, in
// one read: the kernel lists a thread's children reliably only within one.
const maxChildrenFile = 64 << 10

// ownChildren returns the pids of this process's children. The kernel
// keeps a list per thread (an orphan goes to any thread of its new
// parent), each in /proc/self/task/TID/children: a few reads, whatever the
// number of processes on the host. Where those files are missing
// (CONFIG_PROC_CHILDREN), a pass over /proc finds them.
func ownChildren() []int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return children(os.Getpid())
	}
	buf := make([]byte, maxChildrenFile)
	var pids []int
	for _, t := range tasks {
		f, err := os.Open("/proc/self/task/" + t.Name() + "/children")
		if errors.Is(err, fs.ErrNotExist) && t.Name() == strconv.Itoa(os.Getpid()) {
			return children(os.Getpid())
		}
		if err != nil {
			continue // the thread is gone; its children went to another
		}
		n, _ := f.Read(buf)
		f.Close()
		if n == len(buf) {
			return children(os.Getpid())
		}
		for _, field := range strings.Fields(string(buf[:n])) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// children returns the pids of the processes whose parent is ppid, by a
// pass over /proc.
func children(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok && st.ppid == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}
