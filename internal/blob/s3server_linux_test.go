package blob

import "syscall"

// vgwSysProcAttr makes the kernel stop versitygw if the test binary dies
// without running its clean-up (a -timeout panic, a kill).
func vgwSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
