package wire

import (
	"bufio"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadLine(t *testing.T) {
	type result struct {
		line string
		err  error
	}
	long := func(n int, eol string) string { return "NOOP " + strings.Repeat("x", n-5-len(eol)) + eol }
	cases := []struct {
		name  string
		input string
		want  []result
	}{
		{"CRLF and bare LF (i11)", "EHLO a\r\nNOOP\nQUIT\r\n", []result{{"EHLO a", nil}, {"NOOP", nil}, {"QUIT", nil}, {"", io.EOF}}},
		{"empty line", "\r\n\n", []result{{"", nil}, {"", nil}, {"", io.EOF}}},
		{"i03 4221 bytes with CRLF is accepted", long(4221, "\r\n") + "NOOP\r\n",
			[]result{{strings.TrimSuffix(long(4221, "\r\n"), "\r\n"), nil}, {"NOOP", nil}, {"", io.EOF}}},
		{"4221 bytes with bare LF is accepted", long(4221, "\n"),
			[]result{{strings.TrimSuffix(long(4221, "\n"), "\n"), nil}, {"", io.EOF}}},
		{"B15 4222 bytes is too long, the session stays in step", long(4222, "\r\n") + "NOOP\r\n",
			[]result{{"", ErrLineTooLong}, {"NOOP", nil}, {"", io.EOF}}},
		{"4222 bytes with bare LF", long(4222, "\n") + "NOOP\r\n", []result{{"", ErrLineTooLong}, {"NOOP", nil}}},
		{"i02 5000 bytes", long(5007, "\r\n") + "NOOP\r\n", []result{{"", ErrLineTooLong}, {"NOOP", nil}}},
		{"i10 NUL: the line is dropped whole", "NOOP a\x00b\r\nNOOP\r\n", []result{{"", ErrBadLine}, {"NOOP", nil}, {"", io.EOF}}},
		{"bare CR inside", "NOOP a\rb\r\nNOOP\r\n", []result{{"", ErrBadLine}, {"NOOP", nil}}},
		{"CR CR LF", "NOOP\r\r\nQUIT\r\n", []result{{"", ErrBadLine}, {"QUIT", nil}}},
		{"ESC and DEL", "NOOP \x1b[1m\r\nNOOP \x7f\r\nNOOP\ta\r\n", []result{{"", ErrBadLine}, {"", ErrBadLine}, {"NOOP\ta", nil}}},
		{"vertical tab hides a verb", "\x0bRSET\r\n", []result{{"", ErrBadLine}}},
		{"CR then bare LF line", "NOOP\r\nx\ry\n", []result{{"NOOP", nil}, {"", ErrBadLine}, {"", io.EOF}}},
		{"too long and NUL: too long", long(5000, "\r\n")[:100] + "\x00" + long(5000, "\r\n"), []result{{"", ErrLineTooLong}}},
		{"EOF mid-line", "NOOP", []result{{"", io.ErrUnexpectedEOF}}},
		{"EOF after CR", "NOOP\r", []result{{"", io.ErrUnexpectedEOF}}},
		{"EOF mid long line", strings.Repeat("y", 9000), []result{{"", io.ErrUnexpectedEOF}}},
		{"EOF at once", "", []result{{"", io.EOF}}},
	}
	for _, tc := range cases {
		for rname, mk := range readers(tc.input) {
			br := mk()
			for i, w := range tc.want {
				line, err := ReadLine(br)
				if line != w.line || !errors.Is(err, w.err) {
					t.Fatalf("%s %s: line %d: got %.40q, %v; want %.40q, %v", tc.name, rname, i, line, err, w.line, w.err)
				}
			}
		}
	}
}

func TestReadLineErrorPassedThrough(t *testing.T) {
	boom := errors.New("boom")
	br := bufio.NewReader(io.MultiReader(strings.NewReader("NOO"), iotest.ErrReader(boom)))
	if _, err := ReadLine(br); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

// TestReadLineBoundedMemory reads a 32 MB line: ReadLine may hold at most
// MaxLine bytes of it.
func TestReadLineBoundedMemory(t *testing.T) {
	src := io.MultiReader(io.LimitReader(repeatByte('z'), 32<<20), strings.NewReader("\r\nNOOP\r\n"))
	br := bufio.NewReaderSize(src, 4096)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadLine(br)
	runtime.ReadMemStats(&after)
	if err != ErrLineTooLong {
		t.Fatalf("err %v", err)
	}
	// Generous slack for the runtime's own allocations; holding the line would be 32 MB.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("allocated %d bytes for one line", grew)
	}
	if l, err := ReadLine(br); l != "NOOP" || err != nil {
		t.Fatalf("next line %q %v", l, err)
	}
}
