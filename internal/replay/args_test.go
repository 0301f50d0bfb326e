package replay

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseArgsSelection(t *testing.T) {
	now := time.Date(2026, 11, 26, 15, 4, 5, 0, time.UTC)
	day := func(s string) time.Time { d, _ := time.Parse(DayLayout, s); return d }
	f, rest, err := ParseArgs([]string{"--since", "2026-11-20T14:00", "--until=2026-11-22T00:00:00+01:00",
		"--id", "dc8vlchksdu9ph0j9am0,dc8vlchksdu9ph0j9amg", "--id=dc8vlchksdu9ph0j9an0",
		"--outcome", "rejected,dropped", "--from", "*@example.com", "--to", "bob@*", "--to", "carol@*",
		"--sample", "10%", "--html", "r.html", "--deliver-to", "127.0.0.1:25", "-f", "x.conf"}, now)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Select
	if !slices.Equal(rest, []string{"-f", "x.conf"}) ||
		!s.After.Equal(time.Date(2026, 11, 20, 14, 0, 0, 0, time.UTC)) ||
		!s.Before.Equal(time.Date(2026, 11, 21, 23, 0, 0, 0, time.UTC)) ||
		!f.Since.Equal(day("2026-11-20")) || !f.Until.Equal(day("2026-11-21")) ||
		len(s.IDs) != 3 || !slices.Equal(s.Outcomes, []string{"reject", "drop"}) ||
		!slices.Equal(s.From, []string{"*@example.com"}) || !slices.Equal(s.To, []string{"bob@*", "carol@*"}) ||
		s.Sample != 0.1 || f.HTML != "r.html" || f.DeliverTo != "127.0.0.1:25" {
		t.Errorf("%+v, rest %q", f, rest)
	}

	// Days are whole days: no instants.
	f, _, err = ParseArgs([]string{"--since", "2026-11-20", "--until", "today"}, now)
	if err != nil || !f.Select.After.IsZero() || !f.Select.Before.IsZero() || !f.Until.Equal(day("2026-11-26")) {
		t.Errorf("days: %+v %v", f, err)
	}
	// An instant at midnight ends the day before.
	f, _, err = ParseArgs([]string{"--until", "2026-11-22T00:00"}, now)
	if err != nil || !f.Until.Equal(day("2026-11-21")) || !f.Since.Equal(day("2026-11-20")) {
		t.Errorf("midnight: %+v %v", f, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "2026-11-20T25:00"}, "--since: invalid time"},
		{[]string{"--since", "2026-11-20T14:00", "--until", "2026-11-20T13:00"}, "is not after --since"},
		{[]string{"--id", "msga"}, "--id: \"msga\" is not a message id"},
		{[]string{"--id", ","}, "--id: no message id given"},
		{[]string{"--outcome", "bounced"}, "--outcome: unknown outcome"},
		{[]string{"--from", "[a-"}, "--from: invalid pattern"},
		{[]string{"--to", ""}, "--to: invalid pattern"},
		{[]string{"--sample", "0%"}, "--sample: invalid sample"},
		{[]string{"--sample", "150%"}, "--sample: invalid sample"},
		{[]string{"--html", ""}, "--html: give the file"},
		{[]string{"--deliver-to", "localhost"}, "--deliver-to: want HOST:PORT"},
	} {
		_, _, err := ParseArgs(c.args, now)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}
