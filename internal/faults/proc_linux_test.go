package faults

import "syscall"

// sysProcAttr makes the kernel kill an edge or worker if the test binary
// dies without running its clean-up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
