// Package testproc starts the child processes of tests (servers, edges,
// workers) so that they die with the test binary, even when it is killed
// or times out without running its clean-up.
package testproc

import (
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// Launcher starts processes from one goroutine locked to its OS thread.
// On Linux each child gets a parent-death signal, which the kernel sends
// when the thread that started the child ends; a locked thread that
// outlives the children keeps the Go runtime from ending it early.
type Launcher struct {
	reqs chan func()
	once sync.Once
}

// NewLauncher starts the launching thread; Close ends it once every
// process it started has stopped.
func NewLauncher() *Launcher {
	l := &Launcher{reqs: make(chan func())}
	go l.loop()
	return l
}

func (l *Launcher) loop() {
	lockThread() // never unlocked: the thread exits with the goroutine
	for f := range l.reqs {
		f()
	}
}

// Start starts cmd; the child gets sig if the test binary dies.
func (l *Launcher) Start(cmd *exec.Cmd, sig syscall.Signal) error {
	setDeathSignal(cmd, sig)
	errc := make(chan error, 1)
	l.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// Close ends the launching thread.
func (l *Launcher) Close() { l.once.Do(func() { close(l.reqs) }) }

// Output collects a child's stdout and stderr: exec copies them from
// another goroutine while the test may read what came so far.
type Output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
