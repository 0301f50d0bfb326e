// Package daemon detaches the edge as proxsmtpd does without -d: the
// command started from a shell, an init script or a Type=forking unit
// returns once the daemon serves, exit status 0, and the daemon goes on
// in a session of its own with no terminal and its standard streams on
// /dev/null.
//
// A Go process cannot fork, so the command starts itself again: Spawn
// runs the same program with the same arguments, in a new session, with
// the write end of a pipe as file descriptor 3, named in the environment.
// The new process (Resume) starts the edge, then Ready writes to the pipe
// and lets go of the caller's standard streams. Spawn's caller exits with
// 0 on that word, or with the daemon's own exit status when it ended
// first: a start-up failure reaches the shell, with the message the
// daemon wrote to the stderr it shares until then.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// envReadyFD names, in the daemon's environment, the descriptor Ready
// writes to. Resume removes it, so that no filter ever sees it.
const envReadyFD = "SLUICE_DAEMON_READY_FD"

// readyWord is what the daemon writes once it serves.
const readyWord = "ready\n"

// Child is the detached process's side; nil in a process that was not
// started by Spawn.
type Child struct {
	ready *os.File
}

// Resume returns the Child when this process is the one Spawn started,
// else nil. Call it first thing: it takes the variable out of the
// environment before anything copies it.
func Resume() *Child {
	v, ok := os.LookupEnv(envReadyFD)
	if !ok {
		return nil
	}
	_ = os.Unsetenv(envReadyFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	// Not to be inherited by the filters.
	syscall.CloseOnExec(fd)
	return &Child{ready: os.NewFile(uintptr(fd), "daemon-ready")}
}

// Ready tells the waiting command that the daemon serves, then points
// standard input, output and error at /dev/null, as daemon(3) does: the
// terminal, the init script's pipe or the unit's journal stream is no
// longer held.
func (c *Child) Ready() error {
	if c == nil {
		return nil
	}
	_, err := io.WriteString(c.ready, readyWord)
	_ = c.ready.Close()
	null, nerr := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if nerr != nil {
		return errors.Join(err, nerr)
	}
	defer null.Close()
	for fd := range 3 {
		if derr := syscall.Dup3(int(null.Fd()), fd, 0); derr != nil {
			err = errors.Join(err, fmt.Errorf("dup2 /dev/null onto %d: %w", fd, derr))
		}
	}
	return err
}

// Spawn starts this program again, detached, with the same arguments and
// environment, and waits until it is ready (0) or has ended (its exit
// status, at least 1). Its standard error is stderr until it is ready.
func Spawn(stderr *os.File) int {
	prog, err := self()
	if err != nil {
		fmt.Fprintf(stderr, "%s: couldn't run as daemon: %v\n", filepath.Base(os.Args[0]), err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: couldn't run as daemon: %v\n", filepath.Base(os.Args[0]), err)
		return 1
	}
	defer r.Close()
	// Descriptors this process inherited (a pipe of whoever started it)
	// would keep that open in the daemon: only 0-2 and the pipe go on.
	closeInheritedOnExec()
	cmd := &exec.Cmd{
		Path:       prog,
		Args:       os.Args,
		Env:        append(os.Environ(), envReadyFD+"=3"),
		Stderr:     stderr,
		ExtraFiles: []*os.File{w},
		// A session of its own: no controlling terminal, no signals from
		// the shell's job control.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		fmt.Fprintf(stderr, "%s: couldn't run as daemon: %v\n", filepath.Base(os.Args[0]), err)
		return 1
	}
	word, _ := io.ReadAll(io.LimitReader(r, int64(len(readyWord))))
	if string(word) == readyWord {
		// The daemon is on its own; its parent (init) reaps it.
		_ = cmd.Process.Release()
		return 0
	}
	// The pipe closed without the word: the daemon ended (or closed it
	// and will end); its exit status is the command's.
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "%s: the daemon ended before it was ready: %v\n", filepath.Base(os.Args[0]), err)
		return 1
	}
	fmt.Fprintf(stderr, "%s: the daemon ended before it was ready\n", filepath.Base(os.Args[0]))
	return 1
}

// closeInheritedOnExec marks every descriptor above 2 close-on-exec: Go
// opens its own so, and any other was inherited.
func closeInheritedOnExec() {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, f := range fds {
		if fd, err := strconv.Atoi(f.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// self is the program to start again, named as this one was: the path
// it was started by when that has a slash (so that the daemon's process
// name is that file's, which `killproc`, `pidof` and start-stop-daemon
// --name look for, also through a symbolic link such as
// /usr/sbin/proxsmtpd -> sluice-edge), else from PATH, else the
// executable the kernel ran.
func self() (string, error) {
	name := os.Args[0]
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err == nil {
			return name, nil
		}
	} else if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
	}
	return os.Executable()
}
