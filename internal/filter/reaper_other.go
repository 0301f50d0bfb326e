//go:build !linux

package filter

import "errors"

var errNoSubreaper = errors.New("child subreapers need Linux")

func setChildSubreaper() error { return errNoSubreaper }

func bootTicks() (int64, error) { return 0, errNoSubreaper }
