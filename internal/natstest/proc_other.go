//go:build !linux

package natstest

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; t.Cleanup stops the
// servers.
func sysProcAttr() *syscall.SysProcAttr { return nil }
