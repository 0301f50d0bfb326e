package header

import (
	"bytes"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-mail/sluice/internal/wire"
)

var when = time.Date(2026, 11, 25, 23, 35, 13, 0, time.UTC)

const msg = "From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.com>\r\n" +
	"Subject: oracle test\r\n" +
	"Message-ID: <oracle-1@example.com>\r\n" +
	"\r\n" +
	"Hello Bob.\r\n" +
	"Bye.\r\n"

func TestExpand(t *testing.T) {
	cases := []struct {
		name  string
		conf  string // the Header value as written in the config file
		want  string
		warns []string
		onTop bool
	}{
		{"a04", "X-Filtered: by oracle for %i on %l at %d",
			"X-Filtered: by oracle for 192.0.2.1 on 127.0.0.1 at Wed, 25 Nov 2026 23:35:13 +0000 (UTC)\r\n", nil, false},
		{"a05 Received goes on top", "Received: from %i by %l; %d",
			"Received: from 192.0.2.1 by 127.0.0.1; Wed, 25 Nov 2026 23:35:13 +0000 (UTC)\r\n", nil, true},
		{"Received in any case", "rECEIVED: x", "rECEIVED: x\r\n", nil, true},
		{"Received-SPF is not Received", "Received-SPF: pass", "Received-SPF: pass\r\n", nil, false},
		{"a07 escapes (and '% ' is an unknown symbol, as in proxsmtpd)", `X-One: 100% sure\r\nX-Two:\tsecond  end`,
			"X-One: 100sure\r\nX-Two:\tsecond  end\r\n", []string{"invalid header symbol: % "}, false},
		{"%% and \\%", `X-P: 100%% and 5\%i`, "X-P: 100% and 5%i\r\n", nil, false},
		{"a14", "X-Filtered: none", "X-Filtered: none\r\n", nil, false},
		{"%q disappears with a warning", "X-Q: a%qb%zc", "X-Q: abc\r\n",
			[]string{"invalid header symbol: %q", "invalid header symbol: %z"}, false},
		{"unknown multi-byte symbol", "X: a%éb", "X: ab\r\n", []string{"invalid header symbol: %é"}, false},
		{"other escapes", `X: \a\\b\"`, "X: a\\b\"\r\n", nil, false},
		{"trailing % kept", `X: 5%`, "X: 5%\r\n", nil, false},
		{"trailing backslash kept", `X: 5\`, "X: 5\\\r\n", nil, false},
		{"bare LF and CR normalised", `X-A: 1\nX-B: 2\rX-C: 3\r\n`, "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n", nil, false},
		{"blank lines left out", `X-A: 1\n\n \t\nX-B: 2\n`, "X-A: 1\r\nX-B: 2\r\n", nil, false},
		{"Received after a blank line", `\r\nReceived: x`, "Received: x\r\n", nil, true},
		{"two dates", "X: %d / %d", "X: Wed, 25 Nov 2026 23:35:13 +0000 (UTC) / Wed, 25 Nov 2026 23:35:13 +0000 (UTC)\r\n", nil, false},
	}
	for _, tc := range cases {
		tmpl, warns := Parse(tc.conf)
		if !reflect.DeepEqual(warns, tc.warns) {
			t.Errorf("%s: warnings %q, want %q", tc.name, warns, tc.warns)
		}
		if tmpl.IsZero() {
			t.Errorf("%s: zero template", tc.name)
		}
		if got := string(tmpl.Expand("192.0.2.1", "127.0.0.1", when)); got != tc.want {
			t.Errorf("%s: Expand %q, want %q", tc.name, got, tc.want)
		}
		if tmpl.OnTop() != tc.onTop {
			t.Errorf("%s: OnTop %v", tc.name, tmpl.OnTop())
		}
	}
}

func TestZero(t *testing.T) {
	for _, conf := range []string{"", "%q", "%x%y"} {
		tmpl, _ := Parse(conf)
		if !tmpl.IsZero() || tmpl.Expand("1", "2", when) != nil || tmpl.OnTop() {
			t.Errorf("Parse(%q) adds something", conf)
		}
	}
	var zero Template
	if !zero.IsZero() || zero.Expand("1", "2", when) != nil {
		t.Error("zero Template adds something")
	}
	// Only blank lines: nothing to add, rather than a blank line that would end the header block.
	tmpl, _ := Parse(`\r\n \t`)
	if tmpl.Expand("1", "2", when) != nil {
		t.Error("blank template adds a line")
	}
}

func TestCap(t *testing.T) {
	tmpl, _ := Parse("X-Long: " + strings.Repeat("a", 2000))
	got := tmpl.Expand("", "", when)
	if len(got) != MaxLength+2 || !bytes.HasSuffix(got, []byte("a\r\n")) {
		t.Fatalf("%d bytes, ends %q", len(got), got[len(got)-5:])
	}
	// The cap counts the expansion, %i included, and never splits a UTF-8 character.
	tmpl, _ = Parse("X-A: %i\r\nX-B: " + strings.Repeat("é", 600))
	for _, tc := range []struct {
		ipLen int
		tail  string
	}{{1010, "\r\nX-B: \r\n"}, {1, "é\r\n"}, {2, "é\r\n"}, {1016, "1\r\n"}} {
		got = tmpl.Expand(strings.Repeat("1", tc.ipLen), "", when)
		if len(got) > MaxLength+2 || !utf8.Valid(got) || !strings.HasSuffix(string(got), tc.tail) {
			t.Fatalf("ip %d: %d bytes, ends %q", tc.ipLen, len(got), got[len(got)-10:])
		}
	}
}

// TestDateZones: %d is an RFC 5322 date with the right offset, minutes
// included (the +051800 / -03-1800 bug of behaviour.md#header fixed).
func TestDateZones(t *testing.T) {
	cases := []struct{ zone, offset, name string }{
		{"Asia/Kolkata", "+0530", "(IST)"},
		{"America/St_Johns", "-0330", "(NST)"},
		{"Europe/Berlin", "+0100", "(CET)"},
		{"UTC", "+0000", "(UTC)"},
	}
	tmpl, _ := Parse("X-Date: %d")
	for _, tc := range cases {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Fatalf("%s: %v", tc.zone, err)
		}
		now := when.In(loc)
		h := string(tmpl.Expand("", "", now))
		v := strings.TrimSuffix(strings.TrimPrefix(h, "X-Date: "), "\r\n")
		if !strings.Contains(v, " "+tc.offset+" "+tc.name) {
			t.Errorf("%s: %q lacks %s %s", tc.zone, v, tc.offset, tc.name)
		}
		parsed, err := mail.ParseDate(v)
		if err != nil {
			t.Fatalf("%s: net/mail cannot parse %q: %v", tc.zone, v, err)
		}
		if !parsed.Equal(when) {
			t.Errorf("%s: %q parses to %v, want %v", tc.zone, v, parsed, when)
		}
		_, off := parsed.Zone()
		_, wantOff := now.Zone()
		if off != wantOff {
			t.Errorf("%s: offset %d, want %d", tc.zone, off, wantOff)
		}
		// As a Date header it parses too.
		m, err := mail.ReadMessage(strings.NewReader("Date: " + v + "\r\n\r\nbody"))
		if err != nil {
			t.Fatal(err)
		}
		if d, err := m.Header.Date(); err != nil || !d.Equal(when) {
			t.Errorf("%s: header Date %v %v", tc.zone, d, err)
		}
	}
	// A zone without a usable name: no comment.
	if got := FormatDate(when.In(time.FixedZone("", 5*3600+45*60))); got != "Thu, 26 Nov 2026 05:20:13 +0545" {
		t.Errorf("unnamed zone: %q", got)
	}
}

// TestPlacement applies Expand's output with wire.WriteData as the session
// does: behaviour.md#header's placements (a04, a05, a06, a14, a15, a16, a17).
func TestPlacement(t *testing.T) {
	cases := []struct {
		name, conf, body, want string
	}{
		{"a04 before the first blank line", "X-Filtered: by oracle for %i on %l", msg,
			strings.Replace(msg, "\r\n\r\n", "\r\nX-Filtered: by oracle for 192.0.2.1 on 127.0.0.1\r\n\r\n", 1)},
		{"a05 Received on top", "Received: from %i", msg, "Received: from 192.0.2.1\r\n" + msg},
		{"a06 no blank line: after the last line", "X-Filtered: yes", "Subject: no body\r\nX-Other: 1\r\n",
			"Subject: no body\r\nX-Other: 1\r\nX-Filtered: yes\r\n"},
		{"a07 two lines", `X-One: 1\r\nX-Two:\t2`, msg, strings.Replace(msg, "\r\n\r\n", "\r\nX-One: 1\r\nX-Two:\t2\r\n\r\n", 1)},
		{"a14", "X-Filtered: none", msg, strings.Replace(msg, "\r\n\r\n", "\r\nX-Filtered: none\r\n\r\n", 1)},
		{"a15 whitespace-only line", "X-Filtered: yes", "Subject: a\r\n  \r\nbody\r\n", "Subject: a\r\nX-Filtered: yes\r\n  \r\nbody\r\n"},
		{"a16 empty message", "X-Filtered: yes", "", "X-Filtered: yes\r\n"},
		{"a17 message starts with a blank line", "X-Filtered: yes", "\r\nbody\r\n", "X-Filtered: yes\r\n\r\nbody\r\n"},
	}
	for _, tc := range cases {
		tmpl, _ := Parse(tc.conf)
		var up bytes.Buffer
		_, err := wire.WriteData(&up, strings.NewReader(tc.body), wire.DataWriterOptions{
			Header: tmpl.Expand("192.0.2.1", "127.0.0.1", when), HeaderOnTop: tmpl.OnTop()})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSuffix(up.String(), ".\r\n"); got != tc.want {
			t.Errorf("%s: upstream got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func FuzzParseExpand(f *testing.F) {
	for _, s := range []string{"X-Filtered: by oracle for %i on %l at %d", `X-One: 100% sure\r\nX-Two:\tsecond  end`,
		"Received: %d", `\`, "%", "%q", `a\nb\r\rc`, strings.Repeat("é", 600)} {
		f.Add(s, "192.0.2.1", "127.0.0.1")
	}
	f.Fuzz(func(t *testing.T, conf, client, local string) {
		tmpl, warns := Parse(conf)
		for _, w := range warns {
			if !strings.HasPrefix(w, "invalid header symbol: %") {
				t.Fatalf("warning %q", w)
			}
		}
		h := tmpl.Expand(client, local, when)
		if tmpl.IsZero() && h != nil {
			t.Fatal("zero template expanded")
		}
		if h == nil {
			return
		}
		if !bytes.HasSuffix(h, []byte("\r\n")) || len(h) > MaxLength+2 {
			t.Fatalf("%d bytes: %q", len(h), h)
		}
		for i, c := range h {
			if c == '\r' && (i+1 >= len(h) || h[i+1] != '\n') || c == '\n' && (i == 0 || h[i-1] != '\r') {
				t.Fatalf("bare CR/LF at %d in %q", i, h)
			}
		}
		for _, l := range bytes.Split(h[:len(h)-2], []byte("\r\n")) {
			if len(bytes.Trim(l, " \t\v\f")) == 0 {
				t.Fatalf("blank line in %q", h)
			}
		}
		if tmpl.OnTop() && !bytes.EqualFold(h[:min(9, len(h))], []byte("received:")) && client == "" && local == "" {
			t.Fatalf("OnTop but %q", h)
		}
	})
}
