package natstest

import "syscall"

// sysProcAttr makes the kernel kill a server when the thread that started
// it ends: a test binary killed by -timeout or a signal leaves nothing
// behind. The launcher starts every process from one locked thread, so
// that the Go runtime cannot retire that thread while they run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
