package s3test

import "syscall"

// sysProcAttr makes the kernel stop versitygw if the test binary dies
// without running its clean-up (a -timeout panic, a kill).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
