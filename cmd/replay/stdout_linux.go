package main

import (
	"os"
	"syscall"
)

// reportOutput keeps the report to itself: it moves the process's stdout
// to a new descriptor for the report and points descriptor 1 at stderr.
// A file-mode filter inherits the process's stdout (as under proxsmtpd),
// and whatever it prints there must not end up inside a JSON report.
func reportOutput() *os.File {
	fd, err := syscall.Dup(1)
	if err != nil {
		return os.Stdout
	}
	syscall.CloseOnExec(fd) // filters get descriptor 1, not this one
	if err := syscall.Dup3(2, 1, 0); err != nil {
		syscall.Close(fd)
		return os.Stdout
	}
	return os.NewFile(uintptr(fd), "/dev/stdout")
}
