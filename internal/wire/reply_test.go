package wire

import (
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	cases := []struct {
		name  string
		input string
		code  int
		lines []string
		err   error
		rest  string
	}{
		{"single", "250 2.0.0 upstream: noop ok\r\nNEXT", 250, []string{"250 2.0.0 upstream: noop ok"}, nil, "NEXT"},
		{"multi-line (j09)", "250-2.0.0 upstream: first line\r\n250 2.0.0 upstream: queued\r\n", 250,
			[]string{"250-2.0.0 upstream: first line", "250 2.0.0 upstream: queued"}, nil, ""},
		{"code alone", "250-a\r\n250\r\n", 250, []string{"250-a", "250"}, nil, ""},
		{"bare LF", "220-x\n220 y\n", 220, []string{"220-x", "220 y"}, nil, ""},
		{"empty text", "354 \r\n", 354, []string{"354 "}, nil, ""},
		{"bad code", "25x ok\r\n", 0, nil, ErrBadReply, ""},
		{"no separator", "250ok\r\n", 0, nil, ErrBadReply, ""},
		{"short", "25\r\n", 0, nil, ErrBadReply, ""},
		{"code mismatch", "250-a\r\n251 b\r\n", 0, nil, ErrBadReply, ""},
		{"EOF before", "", 0, nil, io.EOF, ""},
		{"EOF mid-line", "250 ok", 0, nil, io.ErrUnexpectedEOF, ""},
		{"EOF mid-reply", "250-a\r\n", 0, nil, io.ErrUnexpectedEOF, ""},
		{"line too long", "250 " + strings.Repeat("x", 4093) + "\r\n", 0, nil, ErrBadReply, ""},
		{"longest line", "250 " + strings.Repeat("x", 4092) + "\r\n", 250, []string{"250 " + strings.Repeat("x", 4092)}, nil, ""},
		{"too many lines", strings.Repeat("250-x\r\n", 512) + "250 x\r\n", 0, nil, ErrBadReply, ""},
		{"most lines", strings.Repeat("250-x\r\n", 511) + "250 x\r\n", 250, append(strings.Split(strings.Repeat("250-x,", 511), ",")[:511], "250 x"), nil, ""},
	}
	for _, tc := range cases {
		for rname, mk := range readers(tc.input) {
			br := mk()
			rep, err := ReadReply(br)
			if !errors.Is(err, tc.err) {
				t.Fatalf("%s %s: err %v, want %v", tc.name, rname, err, tc.err)
			}
			if err != nil {
				continue
			}
			if rep.Code != tc.code || !reflect.DeepEqual(rep.Lines, tc.lines) {
				t.Fatalf("%s %s: got %d %.80q", tc.name, rname, rep.Code, rep.Lines)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Fatalf("%s: rest %q", tc.name, rest)
			}
		}
	}
}

func TestReplyMethods(t *testing.T) {
	rep := Reply{Code: 250, Lines: []string{"250-2.0.0 first", "250 2.0.0 queued as X"}}
	if got := string(rep.Bytes()); got != "250-2.0.0 first\r\n250 2.0.0 queued as X\r\n" {
		t.Fatalf("Bytes %q", got)
	}
	if rep.Class() != 2 || rep.Text() != "2.0.0 queued as X" {
		t.Fatalf("Class %d Text %q", rep.Class(), rep.Text())
	}
	if (Reply{Code: 250, Lines: []string{"250"}}).Text() != "" {
		t.Fatal("Text of a bare code")
	}
}

func TestParseReply(t *testing.T) {
	good := map[string]string{
		"550 5.7.1 no":        "550 5.7.1 no",
		"451 4.7.1 later\r\n": "451 4.7.1 later",
		"250 dropped\n":       "250 dropped",
		"550":                 "550",
	}
	for in, want := range good {
		rep, err := ParseReply(in)
		if code, _ := strconv.Atoi(want[:3]); err != nil || len(rep.Lines) != 1 || rep.Lines[0] != want || rep.Code != code {
			t.Fatalf("%q: %+v %v", in, rep, err)
		}
	}
	for _, in := range []string{"550-5.7.1 continuation", "virus found", "55", "5500 x", "550 a\rb", "550 a\nb", "550 a\x00", ""} {
		if rep, err := ParseReply(in); !errors.Is(err, ErrBadReply) {
			t.Fatalf("%q: accepted as %+v", in, rep)
		}
	}
}

func TestFilterEHLO(t *testing.T) {
	// g01: the upstream offers every extension (behaviour.md#ehlo).
	all := []string{"PIPELINING", "SIZE 10240000", "STARTTLS", "AUTH PLAIN LOGIN", "CHUNKING",
		"BINARYMIME", "CHECKPOINT", "XCLIENT NAME ADDR PROTO HELO",
		"XFORWARD NAME ADDR PROTO HELO", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
		"SMTPUTF8", "XEXCH50"}
	up := Reply{Code: 250, Lines: []string{"250-upstream.example hello client.example"}}
	for i, e := range all {
		sep := "-"
		if i == len(all)-1 {
			sep = " "
		}
		up.Lines = append(up.Lines, "250"+sep+e)
	}
	out, offered := FilterEHLO(up, "sluice.example", EHLOOptions{})
	want := []string{"250-sluice.example", "250-SIZE 10240000", "250-AUTH PLAIN LOGIN", "250-XFORWARD NAME ADDR PROTO HELO",
		"250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250 SMTPUTF8"}
	if out.Code != 250 || !reflect.DeepEqual(out.Lines, want) {
		t.Fatalf("got %q, want %q", out.Lines, want)
	}
	if len(offered) != len(all) || offered["XCLIENT"] != "NAME ADDR PROTO HELO" || offered["PIPELINING"] != "" ||
		offered["SIZE"] != "10240000" || offered["AUTH"] != "PLAIN LOGIN" {
		t.Fatalf("offered %q", offered)
	}
	if _, ok := offered["XEXCH50"]; !ok {
		t.Fatal("XEXCH50 not in offered")
	}

	cases := []struct {
		name string
		in   []string
		want []string
	}{
		{"HELO single line (a02)", []string{"250 upstream.example"}, []string{"250 sluice.example"}},
		{"only hidden extensions", []string{"250-up", "250-PIPELINING", "250 CHUNKING"}, []string{"250 sluice.example"}},
		{"case-insensitive, whole word only", []string{"250-up", "250-starttls", "250-STARTTLSX", "250-Pipelining foo", "250 8BITMIME"},
			[]string{"250-sluice.example", "250-STARTTLSX", "250 8BITMIME"}},
		{"tab after the keyword", []string{"250-up", "250-XCLIENT\tNAME", "250 DSN"}, []string{"250-sluice.example", "250 DSN"}},
		{"default upstream (a01): last line removed", []string{"250-up", "250-SIZE 10240000", "250-VRFY", "250 CHUNKING"},
			[]string{"250-sluice.example", "250-SIZE 10240000", "250 VRFY"}},
		{"bare code lines kept", []string{"250-up", "250-", "250 DSN"}, []string{"250-sluice.example", "250-", "250 DSN"}},
		// Issue 6: XFORWARD hidden from an untrusted client; SIZE never
		// above the edge's own limit (20000000 here).
		{"hide", []string{"250-up", "250-xforward NAME ADDR", "250 DSN"}, []string{"250-sluice.example", "250 DSN"}},
		{"SIZE above the limit", []string{"250-up", "250 SIZE 30000000"}, []string{"250-sluice.example", "250 SIZE 20000000"}},
		{"SIZE below the limit", []string{"250-up", "250 SIZE 999"}, []string{"250-sluice.example", "250 SIZE 999"}},
		{"SIZE unlimited", []string{"250-up", "250-size 0", "250 DSN"}, []string{"250-sluice.example", "250-size 20000000", "250 DSN"}},
		{"SIZE without a number", []string{"250-up", "250-SIZE", "250 DSN"}, []string{"250-sluice.example", "250-SIZE 20000000", "250 DSN"}},
		{"no SIZE: none added", []string{"250-up", "250 DSN"}, []string{"250-sluice.example", "250 DSN"}},
	}
	for _, tc := range cases {
		out, _ := FilterEHLO(Reply{Code: 250, Lines: tc.in}, "sluice.example", EHLOOptions{Hide: []string{"XFORWARD"}, MaxSize: 20000000})
		if !reflect.DeepEqual(out.Lines, tc.want) {
			t.Fatalf("%s: got %q, want %q", tc.name, out.Lines, tc.want)
		}
	}

	fail := Reply{Code: 550, Lines: []string{"550-5.7.1 no", "550 PIPELINING"}}
	out, offered = FilterEHLO(fail, "sluice.example", EHLOOptions{})
	if !reflect.DeepEqual(out, fail) || offered != nil {
		t.Fatalf("non-2xx changed: %+v %v", out, offered)
	}
}
