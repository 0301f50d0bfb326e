package replay

import (
	"fmt"
	"time"
)

// DayLayout is how days are written on the command line and in reports.
const DayLayout = "2006-01-02"

// MaxDays bounds the days one run lists (one List per day), so that a
// typo in a year does not start thousands of listings.
const MaxDays = 3660

// ParseDay reads a day (UTC) as YYYY-MM-DD, or "today" or "yesterday"
// relative to now. The result is midnight UTC of that day.
func ParseDay(s string, now time.Time) (time.Time, error) {
	switch s {
	case "today":
		return dayOf(now), nil
	case "yesterday":
		return dayOf(now).AddDate(0, 0, -1), nil
	}
	// time.Parse also takes one-digit fields in some layouts and signs in
	// none, but be strict: exactly four, two and two digits.
	if len(s) != len(DayLayout) || s[4] != '-' || s[7] != '-' {
		return time.Time{}, fmt.Errorf("invalid day %q: want YYYY-MM-DD, today or yesterday", s)
	}
	for i := range len(s) {
		if i != 4 && i != 7 && (s[i] < '0' || s[i] > '9') {
			return time.Time{}, fmt.Errorf("invalid day %q: want YYYY-MM-DD, today or yesterday", s)
		}
	}
	d, err := time.ParseInLocation(DayLayout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid day %q: %v", s, err)
	}
	return d, nil
}

// ParseTime reads --since or --until: a day as ParseDay reads it (day is
// true, t is its midnight), or an instant: RFC 3339 with its zone, or
// 2006-01-02T15:04[:05] and 2006-01-02 15:04[:05], UTC.
func ParseTime(s string, now time.Time) (t time.Time, day bool, err error) {
	if len(s) <= len(DayLayout) {
		t, err = ParseDay(s, now)
		return t, true, err
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), false, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, false, nil
		}
	}
	return time.Time{}, false, fmt.Errorf("invalid time %q: want YYYY-MM-DD, today, yesterday, YYYY-MM-DDTHH:MM[:SS] (UTC) or RFC 3339 with a zone", s)
}

// CheckDays checks that since to until is a range Run accepts: in order
// and at most MaxDays long.
func CheckDays(since, until time.Time) error {
	since, until = dayOf(since), dayOf(until)
	if until.Before(since) {
		return fmt.Errorf("--until %s is before --since %s", dayString(until), dayString(since))
	}
	// Compare dates, not durations: days are 24 hours in UTC, but a
	// range of centuries overflows a Duration.
	if since.AddDate(0, 0, MaxDays-1).Before(until) {
		return fmt.Errorf("--since %s to --until %s is more than %d days", dayString(since), dayString(until), MaxDays)
	}
	return nil
}

// dayOf is midnight UTC of t's UTC day.
func dayOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func dayString(t time.Time) string { return t.UTC().Format(DayLayout) }
