package filter

import "golang.org/x/sys/unix"

func setChildSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// bootTicks is the boot clock (CLOCK_BOOTTIME, which counts suspend as
// /proc's start times do) in 1/userHZ s, rounded down like them.
func bootTicks() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return ts.Sec*userHZ + ts.Nsec/(1e9/userHZ), nil
}
