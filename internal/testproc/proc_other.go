//go:build !linux

package testproc

import (
	"os/exec"
	"syscall"
)

func lockThread() {}

// setDeathSignal does nothing: only Linux has parent-death signals.
func setDeathSignal(*exec.Cmd, syscall.Signal) {}
