package config

import (
	"testing"
	"time"
)

func TestParseCInt(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "5": 5, "+5": 5, "-3": -3, "  12": 12, "007": 7, "2147483647": 2147483647} {
		if got, ok := parseCInt(in); !ok || got != want {
			t.Errorf("%q: %d %v", in, got, ok)
		}
	}
	for _, in := range []string{"", " ", "+", "-", "1a", "0x10", "1.5", "12 ", "2147483648", "99999999999999999999"} {
		if got, ok := parseCInt(in); ok {
			t.Errorf("%q: accepted as %d", in, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90": 90 * time.Second, "90s": 90 * time.Second, "1h30m": 90 * time.Minute, " 2m ": 2 * time.Minute} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1s", "-1", "1d", "forever", "99999999999999999999"} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("%q: accepted as %v", in, got)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "100": 100, "1k": 1024, "1K": 1024, "2KiB": 2048, "3 m": 3 << 20,
		"64MiB": 64 << 20, "1g": 1 << 30, "2GIB": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1MB", "1.5M", "M", "1T", "9223372036854775807G", "99999999999999999999"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("%q: accepted as %d", in, got)
		}
	}
}

func TestParseBool(t *testing.T) {
	for _, in := range []string{"1", "yes", "TRUE", "t", "On"} {
		if b, ok := parseBool(in); !ok || !b {
			t.Errorf("%q: %v %v", in, b, ok)
		}
	}
	for _, in := range []string{"0", "No", "false", "F", "OFF"} {
		if b, ok := parseBool(in); !ok || b {
			t.Errorf("%q: %v %v", in, b, ok)
		}
	}
	for _, in := range []string{"", "y", "n", "2", "enable"} {
		if _, ok := parseBool(in); ok {
			t.Errorf("%q accepted", in)
		}
	}
}
