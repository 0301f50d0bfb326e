package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"testing/iotest"
)

// Message bodies of /work/shared/compat/scenarios.py.
var (
	scMSG = "From: Alice <alice@example.com>\r\n" +
		"To: Bob <bob@example.com>\r\n" +
		"Subject: oracle test\r\n" +
		"Message-ID: <oracle-1@example.com>\r\n" +
		"\r\n" +
		"Hello Bob.\r\n" +
		"Bye.\r\n"
	scMSG2 = "From: Carol <carol@example.com>\r\n" +
		"To: Dave <dave@example.com>\r\n" +
		"Subject: second message\r\n" +
		"\r\n" +
		"Second body.\r\n"
	scSMUGGLE = "Subject: legit\r\n\r\nlegit body\r\n.\n" +
		"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nsmuggled body\r\n"
)

// dataDialog is what a client sends after its DATA command (the scenario's
// body, the ".\r\n" the harness adds and any raw bytes after it).
type dataDialog struct {
	name   string
	stream string
	want   string // decoded message (reading 1 of unstuffed_variants)
	rest   string // bytes left unread after the terminator
	bare   int    // bare CR/LF normalised
}

var dataDialogs = []dataDialog{
	{name: "a01 plain message", stream: scMSG + ".\r\n", want: scMSG},
	{name: "k01 second message and commands follow", stream: scMSG + ".\r\nMAIL FROM:<carol@example.com>\r\n",
		want: scMSG, rest: "MAIL FROM:<carol@example.com>\r\n"},
	{name: "k01 MSG2", stream: scMSG2 + ".\r\n", want: scMSG2},
	{name: "a06 no blank line", stream: "Subject: no body\r\nX-Other: 1\r\n.\r\n", want: "Subject: no body\r\nX-Other: 1\r\n"},
	{name: "a08 dot stuffing", stream: "Subject: dots\r\n\r\n..leading dot\r\n.. \r\n...\r\nend\r\n.\r\n",
		want: "Subject: dots\r\n\r\n.leading dot\r\n. \r\n..\r\nend\r\n"},
	{name: "a16 empty first message, QUIT after it is a command",
		stream: ".\r\nQUIT\r\n\r\n.\r\n", want: "", rest: "QUIT\r\n\r\n.\r\n"},
	{name: "b10 100 KB", stream: "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 100) + ".\r\n",
		want: "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 100)},
	{name: "i04 5000- and 9000-byte lines",
		stream: "Subject: long\r\n\r\n" + strings.Repeat("z", 5000) + "\r\n" + strings.Repeat("w", 9000) + "\r\nend\r\n.\r\n",
		want:   "Subject: long\r\n\r\n" + strings.Repeat("z", 5000) + "\r\n" + strings.Repeat("w", 9000) + "\r\nend\r\n"},
	{name: "i05 bare LF", stream: "Subject: lf\n\nline1\nline2\r\nline3\r\n.\r\n",
		want: "Subject: lf\r\n\r\nline1\r\nline2\r\nline3\r\n", bare: 3},
	{name: "i06/i07 smuggling: <CRLF>.<LF> is content", stream: scSMUGGLE + ".\r\n",
		want: "Subject: legit\r\n\r\nlegit body\r\n\r\n" +
			"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
			"Subject: smuggled\r\n\r\nsmuggled body\r\n", bare: 1},
	{name: "i08 <LF>.<LF> and <LF>.<CRLF> are content", stream: "Subject: x\r\n\r\na\n.\nb\n.\r\nc\r\n.\r\n",
		want: "Subject: x\r\n\r\na\r\n.\r\nb\r\n.\r\nc\r\n", bare: 3},
	{name: "i13 .CRLF after a bare LF is content", stream: "x\n.\r\n.\r\n", want: "x\r\n.\r\n", bare: 1},
	{name: "<CR>.<CR> is content", stream: "a\r.\rb\r\n.\r\n", want: "a\r\n.\r\nb\r\n", bare: 2},
	{name: "<CRLF>.<CR>x: stuffing dot, then bare CR", stream: "a\r\n.\rb\r\n.\r\n", want: "a\r\n\r\nb\r\n", bare: 1},
	{name: "CR CR LF", stream: "a\r\r\nb\r\n.\r\n", want: "a\r\n\r\nb\r\n", bare: 1},
	{name: "NUL bytes kept", stream: "Subject: nul\r\n\r\na\x00b\r\n\x00\r\n.\r\n", want: "Subject: nul\r\n\r\na\x00b\r\n\x00\r\n"},
	{name: "no final CRLF before the terminator is impossible: '.' mid-line is content",
		stream: "abc.\r\n.\r\n", want: "abc.\r\n"},
	{name: "line of dots", stream: "..\r\n...\r\n.x\r\n.\r\n", want: ".\r\n..\r\nx\r\n"},
	{name: "terminator right after a stuffed line", stream: "..\r\n.\r\n", want: ".\r\n"},
	{name: "l03 chunks", stream: "Subject: slow\r\n\r\nfirst\r\n" + "second\r\n" + ".\r\n",
		want: "Subject: slow\r\n\r\nfirst\r\nsecond\r\n"},
}

// readers gives differently chunked views of the same stream, to cross
// every buffer boundary.
func readers(stream string) map[string]func() *bufio.Reader {
	return map[string]func() *bufio.Reader{
		"buf4096":  func() *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(stream), 4096) },
		"buf16":    func() *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(stream), 16) },
		"onebyte":  func() *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(stream)), 16) },
		"halfread": func() *bufio.Reader { return bufio.NewReader(iotest.HalfReader(strings.NewReader(stream))) },
	}
}

func decodeAll(t testing.TB, br *bufio.Reader, small bool) ([]byte, *DataReader, error) {
	t.Helper()
	d := NewDataReader(br, 0, false)
	var r io.Reader = d
	if small {
		r = iotest.OneByteReader(d) // Read with 1-byte buffers: exercises the pending half CRLF
	}
	out, err := io.ReadAll(r)
	return out, d, err
}

func TestDataDialogs(t *testing.T) {
	for _, tc := range dataDialogs {
		t.Run(tc.name, func(t *testing.T) {
			variants := unstuffedVariants([]byte(tc.stream))
			if len(variants) == 0 || string(variants[0]) != tc.want {
				t.Fatalf("test table disagrees with expect.py's reading 1: want %q, variants %q", tc.want, variants)
			}
			for rname, mk := range readers(tc.stream) {
				for _, small := range []bool{false, true} {
					br := mk()
					out, d, err := decodeAll(t, br, small)
					if err != nil {
						t.Fatalf("%s small=%v: decode: %v", rname, small, err)
					}
					if string(out) != tc.want {
						t.Fatalf("%s small=%v: decoded %q, want %q", rname, small, out, tc.want)
					}
					if d.Size() != int64(len(out)) || d.BareLineEndings() != tc.bare {
						t.Fatalf("%s: Size %d BareLineEndings %d, want %d %d", rname, d.Size(), d.BareLineEndings(), len(out), tc.bare)
					}
					rest, _ := io.ReadAll(br)
					if string(rest) != tc.rest {
						t.Fatalf("%s: left %q after the terminator, want %q", rname, rest, tc.rest)
					}
				}
			}
			// The upstream gets stuff(filter input) with a cat filter.
			var up bytes.Buffer
			n, err := WriteData(&up, strings.NewReader(tc.want), DataWriterOptions{})
			if err != nil || n != int64(up.Len()) {
				t.Fatalf("WriteData: %d, %v (wrote %d)", n, err, up.Len())
			}
			if want := string(stuff([]byte(tc.want))) + ".\r\n"; up.String() != want {
				t.Fatalf("upstream data %q, want %q", up.String(), want)
			}
			checkWire(t, up.Bytes())
		})
	}
}

// checkWire asserts the behaviour.md#data properties of data sent upstream:
// no bare CR/LF, the only end of data is the final one, lines starting with
// '.' are stuffed.
func checkWire(t testing.TB, up []byte) {
	t.Helper()
	if i := bareEOL(up); i >= 0 {
		t.Fatalf("bare CR/LF at %d in %q", i, up)
	}
	if !bytes.Equal(up, []byte(".\r\n")) && !bytes.HasSuffix(up, []byte("\r\n.\r\n")) {
		t.Fatalf("does not end with <CRLF>.<CRLF>: %q", up)
	}
	if c, ok := dataContent(up); !ok || len(c)+3 != len(up) {
		t.Fatalf("end of data before the end: %q", up)
	}
	lines := bytes.Split(up[:len(up)-3], []byte("\r\n"))
	for _, l := range lines {
		if bytes.HasPrefix(l, []byte(".")) && !bytes.HasPrefix(l, []byte("..")) {
			t.Fatalf("unstuffed line %q in %q", l, up)
		}
	}
}

func TestDataA08UpstreamByteExact(t *testing.T) {
	// a08: with a cat filter the upstream receives exactly the client's data.
	stream := "Subject: dots\r\n\r\n..leading dot\r\n.. \r\n...\r\nend\r\n.\r\n"
	out, _, err := decodeAll(t, bufio.NewReader(strings.NewReader(stream)), false)
	if err != nil {
		t.Fatal(err)
	}
	var up bytes.Buffer
	if _, err := WriteData(&up, bytes.NewReader(out), DataWriterOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := dataContent([]byte(stream))
	if up.String() != string(c)+".\r\n" {
		t.Fatalf("upstream %q, want %q", up.String(), string(c)+".\r\n")
	}
}

func TestDataSmugglingStaysContent(t *testing.T) {
	for _, stream := range []string{
		scSMUGGLE + ".\r\n",
		"a\r\n.\nMAIL FROM:<m@x>\r\n.\r\n",
		"a\n.\nMAIL FROM:<m@x>\r\n.\r\n",
		"a\r.\rMAIL FROM:<m@x>\r\n.\r\n",
		"a\n.\r\nMAIL FROM:<m@x>\r\n.\r\n",
	} {
		out, _, err := decodeAll(t, bufio.NewReader(strings.NewReader(stream)), false)
		if err != nil {
			t.Fatalf("%q: %v", stream, err)
		}
		if !bytes.Contains(out, []byte("MAIL FROM:<m")) {
			t.Fatalf("%q: smuggled command not kept as content: %q", stream, out)
		}
		var up bytes.Buffer
		if _, err := WriteData(&up, bytes.NewReader(out), DataWriterOptions{}); err != nil {
			t.Fatal(err)
		}
		checkWire(t, up.Bytes())
		// A lax upstream (ends DATA at <LF>.<LF>, <LF>.<CRLF> or <CR>.<CR>) also sees one message.
		for _, end := range []string{"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n"} {
			if i := strings.Index(up.String(), end); i >= 0 && i < up.Len()-4 {
				t.Fatalf("%q: %q at %d in upstream data %q", stream, end, i, up.String())
			}
		}
	}
}

func TestDataRejectBare(t *testing.T) {
	stream := "Subject: lf\n\nline1\r\n.\r\nQUIT\r\n"
	br := bufio.NewReaderSize(strings.NewReader(stream), 16)
	d := NewDataReader(br, 0, true)
	out, err := io.ReadAll(d)
	if !errors.Is(err, ErrBareLineEnding) {
		t.Fatalf("err %v, want ErrBareLineEnding", err)
	}
	if string(out) != "Subject: lf" {
		t.Fatalf("before the error: %q", out)
	}
	if _, err := d.Read(make([]byte, 10)); !errors.Is(err, ErrBareLineEnding) {
		t.Fatalf("error not sticky: %v", err)
	}
	if err := d.Discard(); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Fatalf("after Discard: %q", rest)
	}
	if n, err := d.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after Discard: %d %v", n, err)
	}
	// Without bare endings, rejectBare changes nothing.
	out, err = io.ReadAll(NewDataReader(bufio.NewReader(strings.NewReader(scMSG+".\r\n")), 0, true))
	if err != nil || string(out) != scMSG {
		t.Fatalf("clean message with rejectBare: %q %v", out, err)
	}
}

func TestDataRejectNUL(t *testing.T) {
	stream := "Subject: x\r\n\r\nvirus\x00hidden\r\n.\r\nQUIT\r\n"
	br := bufio.NewReaderSize(strings.NewReader(stream), 16)
	d := NewDataReader(br, 0, false)
	d.RejectNUL()
	out, err := io.ReadAll(d)
	if !errors.Is(err, ErrNUL) || string(out) != "Subject: x\r\n\r\nvirus" {
		t.Fatalf("got %q, %v; want the bytes before the NUL and ErrNUL", out, err)
	}
	if err := d.Discard(); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "QUIT\r\n" {
		t.Fatalf("after Discard: %q", rest)
	}
	// Without RejectNUL the NUL is content, as proxsmtpd keeps it (behaviour.md#data).
	out, err = io.ReadAll(NewDataReader(bufio.NewReader(strings.NewReader(stream)), 0, false))
	if err != nil || string(out) != "Subject: x\r\n\r\nvirus\x00hidden\r\n" {
		t.Fatalf("kept: %q %v", out, err)
	}
}

func TestDataTooBig(t *testing.T) {
	msg := scMSG // 160 bytes decoded
	for _, max := range []int64{int64(len(msg)), int64(len(msg)) + 1, 1000} {
		out, err := io.ReadAll(NewDataReader(bufio.NewReader(strings.NewReader(msg+".\r\n")), max, false))
		if err != nil || string(out) != msg {
			t.Fatalf("max %d: %q %v", max, out, err)
		}
	}
	for _, max := range []int64{1, 10, int64(len(msg)) - 1} {
		for rname, mk := range readers(msg + ".\r\nNOOP\r\n") {
			br := mk()
			d := NewDataReader(br, max, false)
			out, err := io.ReadAll(d)
			if !errors.Is(err, ErrTooBig) {
				t.Fatalf("max %d %s: err %v", max, rname, err)
			}
			if int64(len(out)) != max || string(out) != msg[:max] {
				t.Fatalf("max %d %s: got %d bytes %q", max, rname, len(out), out)
			}
			if err := d.Discard(); err != nil {
				t.Fatalf("Discard: %v", err)
			}
			if d.Size() != int64(len(msg)) {
				t.Fatalf("Size %d after Discard, want %d", d.Size(), len(msg))
			}
			if rest, _ := io.ReadAll(br); string(rest) != "NOOP\r\n" {
				t.Fatalf("after Discard: %q", rest)
			}
		}
	}
}

func TestDataEOF(t *testing.T) {
	for _, stream := range []string{"", "Subject: partial\r\n\r\nhalf", "a\r\n.", "a\r\n.\r", "a\r\n", "a\n.\n"} {
		d := NewDataReader(bufio.NewReader(strings.NewReader(stream)), 0, false)
		if _, err := io.ReadAll(d); err != io.ErrUnexpectedEOF {
			t.Fatalf("%q: %v, want io.ErrUnexpectedEOF", stream, err)
		}
		if err := d.Discard(); err != io.ErrUnexpectedEOF {
			t.Fatalf("%q: Discard %v", stream, err)
		}
	}
	// Network errors come back as they are.
	boom := errors.New("boom")
	d := NewDataReader(bufio.NewReader(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom))), 0, false)
	if out, err := io.ReadAll(d); !errors.Is(err, boom) || string(out) != "abc" {
		t.Fatalf("%q %v", out, err)
	}
}

// TestDataReaderLongLineStreams decodes a 4 MB line without CRLF through a
// 4 KB buffer: nothing may hold the line whole.
func TestDataReaderLongLineStreams(t *testing.T) {
	const size = 4 << 20
	src := io.MultiReader(io.LimitReader(repeatByte('q'), size), strings.NewReader("\r\n.\r\n"))
	d := NewDataReader(bufio.NewReaderSize(src, 4096), 0, false)
	buf := make([]byte, 1000)
	var total int64
	for {
		n, err := d.Read(buf)
		if n > len(buf) {
			t.Fatalf("Read returned %d > len(p)", n)
		}
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != size+2 {
		t.Fatalf("decoded %d bytes, want %d", total, size+2)
	}
}

type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// Filter outputs of scenarios.py sent upstream (a09-a13) and the Header
// placements of behaviour.md#header (a04-a06, a14-a17).
func TestWriteDataDialogs(t *testing.T) {
	hdr := []byte("X-Filtered: yes\r\n")
	cases := []struct {
		name   string
		in     string
		header []byte
		onTop  bool
		want   string
	}{
		{"a01 cat", scMSG, nil, false, scMSG + ".\r\n"},
		{"a09 lone dot and .x lines", "Subject: x\r\n\r\nbefore\r\n.\r\n.x line\r\n..y\r\nafter\r\n", nil, false,
			"Subject: x\r\n\r\nbefore\r\n..\r\n..x line\r\n...y\r\nafter\r\n.\r\n"},
		{"a10 replaced", "Subject: replaced\r\n\r\nnew body\r\n", nil, false, "Subject: replaced\r\n\r\nnew body\r\n.\r\n"},
		{"a11 empty output", "", nil, false, ".\r\n"},
		{"a12 no final EOL", "Subject: x\r\n\r\nno newline at end", nil, false, "Subject: x\r\n\r\nno newline at end\r\n.\r\n"},
		{"a13 LF only", "Subject: lf\n\nline one\nline two\n", nil, false, "Subject: lf\r\n\r\nline one\r\nline two\r\n.\r\n"},
		{"bare CR and CR CR LF", "a\rb\r\r\nc\r", nil, false, "a\r\nb\r\n\r\nc\r\n.\r\n"},
		{"last line a lone dot", "x\r\n.", nil, false, "x\r\n..\r\n.\r\n"},
		{"first line a dot", ".\r\n", nil, false, "..\r\n.\r\n"},
		{"a04 header before the blank line", scMSG, hdr, false,
			strings.Replace(scMSG, "\r\n\r\n", "\r\n"+string(hdr)+"\r\n", 1) + ".\r\n"},
		{"a05 Received on top", scMSG, []byte("Received: from 127.0.0.1\r\n"), true, "Received: from 127.0.0.1\r\n" + scMSG + ".\r\n"},
		{"a06 no blank line: after the last line", "Subject: no body\r\nX-Other: 1\r\n", hdr, false,
			"Subject: no body\r\nX-Other: 1\r\nX-Filtered: yes\r\n.\r\n"},
		{"a06 no blank line, no final EOL", "Subject: no body\r\nX-Other: 1", hdr, false,
			"Subject: no body\r\nX-Other: 1\r\nX-Filtered: yes\r\n.\r\n"},
		{"a15 whitespace-only line ends the header block", "Subject: ws\r\n \t \r\nbody\r\n", hdr, false,
			"Subject: ws\r\nX-Filtered: yes\r\n \t \r\nbody\r\n.\r\n"},
		{"folded header is not blank", "Subject: a\r\n folded\r\n\r\nbody\r\n", hdr, false,
			"Subject: a\r\n folded\r\nX-Filtered: yes\r\n\r\nbody\r\n.\r\n"},
		{"whitespace-only last line without EOL", "Subject: a\r\n  ", hdr, false, "Subject: a\r\nX-Filtered: yes\r\n  \r\n.\r\n"},
		{"LF-only blank line", "Subject: a\n\nbody\n", hdr, false, "Subject: a\r\nX-Filtered: yes\r\n\r\nbody\r\n.\r\n"},
		{"a16/a17 message starts with a blank line: top", "\r\nbody\r\n", hdr, false, "X-Filtered: yes\r\n\r\nbody\r\n.\r\n"},
		{"a16 empty message: header alone", "", hdr, false, "X-Filtered: yes\r\n.\r\n"},
		{"empty message, Received", "", []byte("Received: x\r\n"), true, "Received: x\r\n.\r\n"},
		{"header is stuffed and normalised", "A: 1\r\n\r\n", []byte(".X: 1\nY: 2"), false, "A: 1\r\n..X: 1\r\nY: 2\r\n\r\n.\r\n"},
		{"dot line in the header block", ".A: 1\r\n\r\n", hdr, false, "..A: 1\r\nX-Filtered: yes\r\n\r\n.\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if ref := string(refWriteData([]byte(tc.in), tc.header, tc.onTop)); ref != tc.want {
				t.Fatalf("reference model disagrees with the table: %q", ref)
			}
			for _, chunked := range []bool{false, true} {
				var r io.Reader = strings.NewReader(tc.in)
				if chunked {
					r = iotest.OneByteReader(r)
				}
				var up bytes.Buffer
				n, err := WriteData(&up, r, DataWriterOptions{Header: tc.header, HeaderOnTop: tc.onTop})
				if err != nil {
					t.Fatal(err)
				}
				if up.String() != tc.want || n != int64(up.Len()) {
					t.Fatalf("chunked=%v: got %q (n=%d), want %q", chunked, up.String(), n, tc.want)
				}
				checkWire(t, up.Bytes())
			}
		})
	}
}

func TestWriteDataErrors(t *testing.T) {
	boom := errors.New("boom")
	var up bytes.Buffer
	_, err := WriteData(&up, io.MultiReader(strings.NewReader("abc\r\n"), iotest.ErrReader(boom)), DataWriterOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
	if strings.Contains(up.String(), ".\r\n") {
		t.Fatalf("terminator written after a read error: %q", up.String())
	}
	_, err = WriteData(errWriter{boom}, strings.NewReader(scMSG), DataWriterOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("write error: %v", err)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// randomMessage draws bytes where CR, LF, '.', NUL and whitespace are common.
func randomMessage(rng *rand.Rand, n int) []byte {
	const alphabet = "\r\n.. \t\x00aZ"
	b := make([]byte, rng.Intn(n+1))
	for i := range b {
		b[i] = alphabet[rng.Intn(len(alphabet))]
	}
	return b
}

// TestRoundTrip: decoding WriteData(m) gives the CRLF-normalised m with a
// final CRLF, whatever m holds.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		m := randomMessage(rng, 60)
		var up bytes.Buffer
		if _, err := WriteData(&up, bytes.NewReader(m), DataWriterOptions{}); err != nil {
			t.Fatal(err)
		}
		checkWire(t, up.Bytes())
		up.WriteString("NEXT")
		br := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(up.Bytes())), 16)
		out, err := io.ReadAll(NewDataReader(br, 0, true))
		if err != nil {
			t.Fatalf("%q: decode %v", m, err)
		}
		if want := withFinalCRLF(m); !bytes.Equal(out, want) {
			t.Fatalf("%q: round trip %q, want %q", m, out, want)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
			t.Fatalf("%q: left %q", m, rest)
		}
	}
}

// TestDecodeMatchesExpect: for random raw streams DataReader yields reading
// 1 of expect.py's unstuffed_variants and stops at the first raw CRLF.CRLF.
func TestDecodeMatchesExpect(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 20000; i++ {
		stream := randomMessage(rng, 40)
		stream = append(stream, "\r\n.\r\n"...)
		checkDecode(t, stream)
	}
}

func checkDecode(t testing.TB, stream []byte) {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	out, err := io.ReadAll(NewDataReader(br, 0, false))
	c, ok := dataContent(stream)
	if !ok {
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("%q: no terminator, got err %v", stream, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%q: %v", stream, err)
	}
	if want := unstuffedVariants(stream)[0]; !bytes.Equal(out, want) {
		t.Fatalf("%q: decoded %q, want %q", stream, out, want)
	}
	if i := bareEOL(out); i >= 0 {
		t.Fatalf("%q: bare CR/LF in decoded %q", stream, out)
	}
	rest, _ := io.ReadAll(br)
	if consumed := len(stream) - len(rest); consumed != len(c)+3 {
		t.Fatalf("%q: consumed %d bytes, the terminator ends at %d", stream, consumed, len(c)+3)
	}
}

func ExampleWriteData() {
	var up bytes.Buffer
	WriteData(&up, strings.NewReader("Subject: hi\n\n.dot\nend"), DataWriterOptions{Header: []byte("X-Filtered: yes\r\n")})
	fmt.Printf("%q\n", up.String())
	// Output: "Subject: hi\r\nX-Filtered: yes\r\n\r\n..dot\r\nend\r\n.\r\n"
}
