package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func FuzzReadLine(f *testing.F) {
	for _, s := range []string{"EHLO a\r\nNOOP\n", "NOOP a\x00b\r\nNOOP\r\n", "x\ry\r\n", "NOOP", "",
		"NOOP " + strings.Repeat("x", 4214) + "\r\n", "NOOP " + strings.Repeat("x", 4215) + "\r\nQUIT\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		consumed := 0
		for {
			line, err := ReadLine(br)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				if bytes.IndexByte(in[consumed:], '\n') >= 0 || (err == io.EOF) != (consumed == len(in)) {
					t.Fatalf("%v with %q left", err, in[consumed:])
				}
				return
			}
			// Each call consumes exactly one line up to its LF; the
			// content checks below catch a reader out of step.
			end := consumed + bytes.IndexByte(in[consumed:], '\n') + 1
			if end == consumed {
				t.Fatalf("line returned with no LF left: %q, %v", line, err)
			}
			raw := in[consumed:end]
			consumed = end
			switch err {
			case nil:
				if len(raw) > MaxLine || strings.ContainsAny(line, "\x00\r\n") {
					t.Fatalf("accepted %q (raw %d bytes)", line, len(raw))
				}
				if want := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r"); line != want {
					t.Fatalf("line %q, want %q", line, want)
				}
			case ErrLineTooLong:
				if len(raw) <= MaxLine {
					t.Fatalf("%d-byte line rejected as too long", len(raw))
				}
			case ErrBadLine:
				body := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
				if !strings.ContainsAny(body, "\x00\r") {
					t.Fatalf("%q rejected as bad", raw)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
	})
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "250-a\n250\n", "25x\r\n", "250-a\r\n251 b\r\n", "250 ok", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, err := ReadReply(bufio.NewReaderSize(bytes.NewReader(in), 16))
		if err != nil {
			if !errors.Is(err, ErrBadReply) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(rep.Lines) == 0 || len(rep.Lines) > maxReplyLines {
			t.Fatalf("%d lines", len(rep.Lines))
		}
		for i, l := range rep.Lines {
			c, final, err := parseReplyLine(l)
			if err != nil || c != rep.Code || final != (i == len(rep.Lines)-1) || strings.ContainsAny(l, "\n") {
				t.Fatalf("line %d %q of %+v", i, l, rep)
			}
		}
		again, err := ReadReply(bufio.NewReader(bytes.NewReader(rep.Bytes())))
		if err != nil || again.Code != rep.Code || strings.Join(again.Lines, "\n") != strings.Join(rep.Lines, "\n") {
			t.Fatalf("Bytes does not read back: %+v vs %+v (%v)", again, rep, err)
		}
		if len(rep.Lines) == 1 && !strings.ContainsAny(rep.Lines[0], "\x00\r") {
			p, err := ParseReply(rep.Lines[0])
			if err != nil || p.Code != rep.Code {
				t.Fatalf("ParseReply(%q): %+v %v", rep.Lines[0], p, err)
			}
		}
	})
}

// FuzzParsePath: whatever a client sends, an accepted path relays as a
// line that reads back as the same path, and the address holds nothing
// that could split it differently elsewhere.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"MAIL FROM:<a@b>", "mail from: <> SIZE=1", "MAIL FROM:a@b SIZE=10", "RCPT TO:<c@d> NOTIFY=NEVER",
		"rcpt to: carol@example.com", "MAIL FROM:<a\x00b>", "MAIL FROM:<", "RCPT TO:", `RCPT TO:<"a>b"@c>`,
		"RCPT\tTO:<@r,@s:u@d>", " MAIL FROM:<a@[IPv6:::1]>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c := ParseCommand(line)
		for _, fn := range []func(string) (Path, error){ParseMail, ParseRcpt} {
			p, err := fn(c.Arg)
			if err != nil {
				if p.Addr != "" || p.Params != nil {
					t.Fatalf("%q: error %v but %+v", line, err, p)
				}
				continue
			}
			if hasControl(p.Addr) || len(p.Addr) > MaxPath {
				t.Fatalf("%q: address %q", line, p.Addr)
			}
			again, err := fn(p.Arg())
			if err != nil || again.Addr != p.Addr || !reflect.DeepEqual(again.Params, p.Params) {
				t.Fatalf("%q: relayed as %q, which reads %+v, %v; was %+v", line, p.Arg(), again, err, p)
			}
			if c2 := ParseCommand(c.Verb + " " + p.Arg()); c2.Arg != p.Arg() {
				t.Fatalf("%q: relayed argument %q splits as %q", line, p.Arg(), c2.Arg)
			}
		}
	})
}

func FuzzParseXForward(f *testing.F) {
	for _, s := range []string{"NAME=remote.example ADDR=192.0.2.10 HELO=remote-helo.example", "ADDR=IPV6:2001:db8::25 PROTO=ESMTP",
		"NAME=[UNAVAILABLE] ADDR=[192.0.2.1]", "HELO=a+0D+0Ab", "HELO=first ADDR=192.0.2.14\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		for k, v := range ParseXForward(arg) {
			if !knownXForward(k) || v == "" || hasControl(v) {
				t.Fatalf("%q: %q=%q", arg, k, v)
			}
		}
	})
}

func FuzzFilterEHLO(f *testing.F) {
	f.Add([]byte("250-up\r\n250-PIPELINING\r\n250-SIZE 1\r\n250 CHUNKING\r\n"), "sluice.example")
	f.Add([]byte("250 up\r\n"), "h")
	f.Add([]byte("550-no\r\n550 XCLIENT\r\n"), "h")
	f.Fuzz(func(t *testing.T, in []byte, host string) {
		rep, err := ReadReply(bufio.NewReader(bytes.NewReader(in)))
		if err != nil || strings.ContainsAny(host, "\r\n") {
			return
		}
		out, offered := FilterEHLO(rep, host, EHLOOptions{})
		if rep.Class() != 2 {
			if offered != nil || strings.Join(out.Lines, "\n") != strings.Join(rep.Lines, "\n") {
				t.Fatalf("non-2xx reply changed")
			}
			return
		}
		again, err := ReadReply(bufio.NewReader(bytes.NewReader(out.Bytes())))
		if err != nil || again.Code != rep.Code {
			t.Fatalf("output %q is not one reply: %v", out.Lines, err)
		}
		if out.Lines[0][4:] != host || len(out.Lines) > len(rep.Lines) {
			t.Fatalf("output %q", out.Lines)
		}
		for _, l := range out.Lines[1:] {
			kw, _, _ := strings.Cut(strings.ReplaceAll(l[4:], "\t", " "), " ")
			if hidden(kw) {
				t.Fatalf("%q advertised", l)
			}
			if _, ok := offered[strings.ToUpper(kw)]; !ok && kw != "" {
				t.Fatalf("%q missing from offered", kw)
			}
		}
	})
}

func FuzzDataReader(f *testing.F) {
	for _, d := range dataDialogs {
		f.Add([]byte(d.stream), uint16(0))
	}
	f.Add([]byte("a\r\n.\nb\r\n.\r\n"), uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, max uint16) {
		checkDecode(t, stream)
		// The same stream with bare endings rejected or a size limit: an
		// error or the same message, and Discard always finds the same end.
		c, ok := dataContent(stream)
		for _, rb := range []bool{false, true} {
			br := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(stream)), 16)
			d := NewDataReader(br, int64(max), rb)
			out, err := io.ReadAll(d)
			switch {
			case !ok:
				if err != io.ErrUnexpectedEOF && err != ErrTooBig && err != ErrBareLineEnding {
					t.Fatalf("no terminator: %v", err)
				}
			case err == nil:
				if want := unstuffedVariants(stream)[0]; !bytes.Equal(out, want) {
					t.Fatalf("decoded %q, want %q", out, want)
				}
				if max > 0 && len(out) > int(max) {
					t.Fatalf("%d bytes over a limit of %d", len(out), max)
				}
				if rb && d.BareLineEndings() > 0 {
					t.Fatalf("bare line endings accepted")
				}
			case err == ErrTooBig || err == ErrBareLineEnding:
				if err == ErrTooBig && (max == 0 || len(out) != int(max)) {
					t.Fatalf("ErrTooBig after %d bytes, max %d", len(out), max)
				}
				if err == ErrBareLineEnding && !rb {
					t.Fatal("ErrBareLineEnding without rejectBare")
				}
				if err := d.Discard(); err != nil {
					t.Fatalf("Discard: %v", err)
				}
				rest, _ := io.ReadAll(br)
				if len(stream)-len(rest) != len(c)+3 {
					t.Fatalf("Discard stopped at %d, terminator ends at %d", len(stream)-len(rest), len(c)+3)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
	})
}

func FuzzWriteData(f *testing.F) {
	for _, s := range []string{scMSG, "a\n.\nb", ".\r\n", "", "x\r\n.", "Subject: a\r\n \t\r\nb", "\r\n\r\n", "a\r\rb\n\r"} {
		f.Add([]byte(s), []byte("X-Filtered: yes\r\n"), false)
	}
	f.Add([]byte(scMSG), []byte("Received: from x\r\n"), true)
	f.Add([]byte("a\r\n\r\n"), []byte(".h\n"), false)
	f.Fuzz(func(t *testing.T, m, header []byte, onTop bool) {
		var up bytes.Buffer
		n, err := WriteData(&up, iotest.HalfReader(bytes.NewReader(m)), DataWriterOptions{Header: header, HeaderOnTop: onTop})
		if err != nil || n != int64(up.Len()) {
			t.Fatalf("WriteData: %d %v", n, err)
		}
		checkWire(t, up.Bytes())
		if want := refWriteData(m, header, onTop); !bytes.Equal(up.Bytes(), want) {
			t.Fatalf("got %q, want %q", up.Bytes(), want)
		}
		out, err := io.ReadAll(NewDataReader(bufio.NewReader(bytes.NewReader(up.Bytes())), 0, true))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if len(header) == 0 && !bytes.Equal(out, withFinalCRLF(m)) {
			t.Fatalf("round trip %q, want %q", out, withFinalCRLF(m))
		}
		if len(header) > 0 && len(out) != len(withFinalCRLF(m))+len(withFinalCRLF(header)) {
			t.Fatalf("round trip with header: %d bytes, want %d", len(out), len(withFinalCRLF(m))+len(withFinalCRLF(header)))
		}
	})
}
