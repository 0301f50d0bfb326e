package replay

import (
	"strings"
	"testing"
	"time"
)

var fuzzNow = time.Date(2026, 11, 26, 15, 4, 5, 0, time.FixedZone("CET", 3600))

func FuzzParseDay(f *testing.F) {
	for _, s := range []string{"2026-11-20", "today", "yesterday", "2026-02-29", "2024-02-29", "0000-01-01",
		"9999-12-31", "2026-1-20", "+026-11-20", "2026/11/20", "2026-11-20T00:00:00Z", " 2026-11-20", "", "２026-11-20"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDay(s, fuzzNow)
		if err != nil {
			return
		}
		if d.Location() != time.UTC || d.Hour() != 0 || d.Minute() != 0 || d.Second() != 0 || d.Nanosecond() != 0 {
			t.Fatalf("ParseDay(%q) = %v: not midnight UTC", s, d)
		}
		switch s {
		case "today":
			if d.Format(DayLayout) != "2026-11-26" {
				t.Fatalf("today = %v", d)
			}
		case "yesterday":
			if d.Format(DayLayout) != "2026-11-25" {
				t.Fatalf("yesterday = %v", d)
			}
		default:
			if d.Format(DayLayout) != s {
				t.Fatalf("ParseDay(%q) = %s", s, d.Format(DayLayout))
			}
		}
	})
}

// FuzzParseArgs takes the arguments joined by NUL.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"",
		"-f\x00/etc/proxsmtpd.conf\x00--since\x002026-11-20\x00--until=2026-11-26",
		"--filter-command\x00/usr/local/bin/new-filter --strict\x00--filter-type\x00file\x00--format=json\x00--only-changed",
		"--concurrency\x008\x00--limit\x00100\x00--store-dir\x00/srv/mail\x00-d\x004",
		"--since\x00--until\x00--limit",
		"--until\x002026-11-20\x00--since\x002026-11-21",
		"--\x00--since\x002026-11-20",
		"-h", "--help", "--only-changed=false\x00--format\x00xml", "--filter-command=\x00--concurrency=0",
		"--since=0000-01-01", "--nats-url\x00nats://127.0.0.1:4222\x00-v",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, joined string) {
		var args []string
		if joined != "" {
			args = strings.Split(joined, "\x00")
		}
		own, rest := splitArgs(args)
		if len(own)+len(rest) != len(args) {
			t.Fatalf("splitArgs(%q) = %q + %q: lost or made up arguments", args, own, rest)
		}
		// rest keeps the order of args.
		i := 0
		for _, r := range rest {
			for i < len(args) && args[i] != r {
				i++
			}
			if i == len(args) {
				t.Fatalf("splitArgs(%q): rest %q out of order", args, rest)
			}
			i++
		}

		fl, cfgArgs, err := ParseArgs(args, fuzzNow)
		if err != nil {
			return
		}
		if len(cfgArgs) != len(rest) {
			t.Fatalf("ParseArgs(%q) rest %q, splitArgs %q", args, cfgArgs, rest)
		}
		if err := CheckDays(fl.Since, fl.Until); err != nil {
			t.Fatalf("ParseArgs(%q) accepted days: %v", args, err)
		}
		if fl.Concurrency < 1 || fl.Concurrency > MaxConcurrency || fl.Limit < 0 ||
			(fl.Format != "text" && fl.Format != "json") ||
			(fl.FilterType != "" && fl.FilterType != "pipe" && fl.FilterType != "file") {
			t.Fatalf("ParseArgs(%q) = %+v", args, fl)
		}
	})
}

func TestParseArgs(t *testing.T) {
	fl, rest, err := ParseArgs([]string{"-f", "/etc/proxsmtpd.conf", "--since", "2026-11-20", "--until=2026-11-22",
		"--filter-command", "/bin/new --strict", "--store-dir", "/srv/m", "--format", "json", "--only-changed",
		"--concurrency=4", "--limit", "10", "-d", "4"}, fuzzNow)
	if err != nil {
		t.Fatal(err)
	}
	if fl.Since.Format(DayLayout) != "2026-11-20" || fl.Until.Format(DayLayout) != "2026-11-22" ||
		fl.FilterCommand == nil || *fl.FilterCommand != "/bin/new --strict" || fl.FilterType != "" ||
		fl.Format != "json" || !fl.OnlyChanged || fl.Concurrency != 4 || fl.Limit != 10 {
		t.Errorf("flags %+v", fl)
	}
	if want := []string{"-f", "/etc/proxsmtpd.conf", "--store-dir", "/srv/m", "-d", "4"}; strings.Join(rest, " ") != strings.Join(want, " ") {
		t.Errorf("rest %q, want %q", rest, want)
	}

	// Defaults: yesterday and today (UTC), the configured filter.
	fl, rest, err = ParseArgs(nil, fuzzNow)
	if err != nil || len(rest) != 0 {
		t.Fatal(err, rest)
	}
	if fl.Since.Format(DayLayout) != "2026-11-25" || fl.Until.Format(DayLayout) != "2026-11-26" ||
		fl.FilterCommand != nil || fl.Concurrency != 2 || fl.Format != "text" || fl.Limit != 0 {
		t.Errorf("defaults %+v", fl)
	}
	// An empty --filter-command is a choice: no filter.
	if fl, _, _ = ParseArgs([]string{"--filter-command="}, fuzzNow); fl.FilterCommand == nil || *fl.FilterCommand != "" {
		t.Errorf("--filter-command= : %+v", fl)
	}

	for _, bad := range [][]string{
		{"--since", "2026-11-27", "--until", "2026-11-26"},
		{"--since", "2026-13-01"},
		{"--since", "0001-01-01"},
		{"--until", "tomorrow"},
		{"--filter-type", "reject"},
		{"--format", "xml"},
		{"--concurrency", "0"},
		{"--limit", "-1"},
		{"--limit"},
		{"--only-changed=maybe"},
	} {
		if _, _, err := ParseArgs(bad, fuzzNow); err == nil || err == ErrHelp {
			t.Errorf("ParseArgs(%q) = %v, want an error", bad, err)
		}
	}
	for _, help := range []string{"-h", "--help"} {
		if _, _, err := ParseArgs([]string{"-f", "x", help}, fuzzNow); err != ErrHelp {
			t.Errorf("%s: %v", help, err)
		}
	}
}
