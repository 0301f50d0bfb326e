//go:build !linux

package main

import "os"

// reportOutput is stdout; elsewhere than Linux a file-mode filter's own
// stdout output lands in the report too.
func reportOutput() *os.File { return os.Stdout }
