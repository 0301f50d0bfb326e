//go:build !linux

package blob

import "syscall"

func vgwSysProcAttr() *syscall.SysProcAttr { return nil }
