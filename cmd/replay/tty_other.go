//go:build !linux

package main

import "os"

// isTerminal is false here: progress is logged, not drawn.
func isTerminal(*os.File) bool { return false }
