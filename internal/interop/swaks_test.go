package interop

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// filterScript is a FilterCommand running one of testdata/filters through
// /bin/sh, so that it does not depend on the file's mode bits.
func filterScript(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "filters", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return "/bin/sh " + p
}

// dataReply is the server's answer to the end of the message: the line
// after the 354 in a swaks transcript.
func dataReply(t *testing.T, out string) string {
	t.Helper()
	lines := serverLines(out)
	for i, l := range lines {
		if strings.HasPrefix(l, "354") && i+1 < len(lines) {
			return lines[i+1]
		}
	}
	t.Fatalf("no reply after 354 in the swaks transcript:\n%s", out)
	return ""
}

func checkSwaksOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("swaks exit status %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCatFilterDelivers: swaks -> edge (cat, Header) -> smtp-sink, and the
// message arrives unchanged but for the Header, with its envelope.
func TestCatFilterDelivers(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\nHeader: X-Filtered: by sluice for %i at %d\n")

	// Lines starting with dots: swaks stuffs them, the edge must unstuff
	// for the filter and stuff again towards smtp-sink, which unstuffs.
	const text = "token-cat-4711\n.dotline\n..twodots\n.\nend"
	r := swaks(t, e.addr, nil, "--h-Subject", "interop cat", "--body", text)
	checkSwaksOK(t, r)
	// The edge answers DATA itself; the final reply is smtp-sink's, relayed.
	if got := dataReply(t, r.stdout); got != "250 2.0.0 Ok" {
		t.Errorf("reply after the message = %q, want smtp-sink's %q", got, "250 2.0.0 Ok")
	}

	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1", len(ms))
	}
	m := ms[0]
	for name, want := range map[string]string{
		"X-Helo-Args": "client.example.org",
		"X-Mail-Args": "<alice@example.com>",
		"X-Rcpt-Args": "<bob@example.com>",
		"Subject":     "interop cat",
		"From":        "alice@example.com",
	} {
		if got := m.header(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	xf := m.header("X-Filtered")
	date, ok := strings.CutPrefix(xf, "by sluice for 127.0.0.1 at ")
	if !ok {
		t.Errorf("X-Filtered: %q, want \"by sluice for 127.0.0.1 at <date>\"", xf)
	} else if _, err := mail.ParseDate(date); err != nil {
		t.Errorf("X-Filtered date %q is not an RFC 5322 date: %v", date, err)
	}
	if n := strings.Count(string(m.raw), "X-Filtered:"); n != 1 {
		t.Errorf("%d X-Filtered headers, want 1", n)
	}
	if body := m.body(); !strings.Contains(body, text+"\n") {
		t.Errorf("body is not the text sent (%q):\n%s", text, body)
	}
	if strings.Contains(string(m.raw), "\r") {
		t.Errorf("a stray CR reached the upstream:\n%q", m.raw)
	}
}

// TestFilterVerdicts: the filter's reject, silent drop and temporary
// failure reach the swaks client as the filter wrote them, and nothing
// reaches smtp-sink; a clean message afterwards is delivered.
func TestFilterVerdicts(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: "+filterScript(t, "verdict.sh")+"\n")

	for _, tc := range []struct {
		name, word string
		exit       int // swaks: 26 = server did not accept mail following data
		reply      string
	}{
		{"reject", "INTEROP-REJECT", 26, "550 5.7.1 interop: rejected by the filter"},
		{"drop", "INTEROP-DROP", 0, "250 2.0.0 interop: dropped by the filter"},
		{"tempfail", "INTEROP-TEMPFAIL", 26, "451 4.7.1 interop: try again later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := swaks(t, e.addr, nil, "--body", "please "+tc.word)
			if r.code != tc.exit {
				t.Errorf("swaks exit status %d, want %d\n%s", r.code, tc.exit, r.stdout)
			}
			if got := dataReply(t, r.stdout); got != tc.reply {
				t.Errorf("reply after the message = %q, want the filter's %q", got, tc.reply)
			}
			if ms := sink.messages(t); len(ms) != 0 {
				t.Errorf("smtp-sink got %d messages, want none:\n%s", len(ms), ms[0].raw)
			}
		})
	}

	// The control: the same path delivers, and only this message arrived.
	checkSwaksOK(t, swaks(t, e.addr, nil, "--body", "INTEROP-DELIVER"))
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 || !strings.Contains(ms[0].body(), "INTEROP-DELIVER") {
		t.Fatalf("smtp-sink got %d messages, want only the control message", len(ms))
	}
}

// TestFileModeFilterEditsMessage: a FilterType file filter edits $EMAIL
// with sed -i (a new file renamed over the old) and appends a line; the
// upstream gets the edited message with clean line endings.
func TestFileModeFilterEditsMessage(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterType: file\nFilterCommand: "+filterScript(t, "edit-in-place.sh")+"\n")

	checkSwaksOK(t, swaks(t, e.addr, nil, "--h-Subject", "interop file", "--body", "token-file-0815"))
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1", len(ms))
	}
	m := ms[0]
	if got := m.header("Subject"); got != "[edited] interop file" {
		t.Errorf("Subject: %q, want the filter's edit %q", got, "[edited] interop file")
	}
	body := m.body()
	if !strings.Contains(body, "token-file-0815") || !strings.Contains(body, "edited-by: interop file-mode filter") {
		t.Errorf("body is not the edited message:\n%s", body)
	}
	if strings.Contains(string(m.raw), "\r") {
		t.Errorf("a stray CR reached the upstream:\n%q", m.raw)
	}
}

// TestEightBitUTF8WithoutAuth: a normal exchange with 8-bit UTF-8 content
// and a UTF-8 sender, no AUTH although the upstream offers it. The client
// sees the upstream's extensions minus what the edge does not relay.
func TestEightBitUTF8WithoutAuth(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\n")

	const (
		subject = "Grüße aus Köln ✓"
		text    = "Ünïcödé ✓ 日本語 token-8bit"
		sender  = "jörg@exämple.org"
	)
	r := swaks(t, e.addr, nil, "--from", sender, "--h-Subject", subject, "--body", text,
		"--add-header", "MIME-Version: 1.0",
		"--add-header", "Content-Type: text/plain; charset=utf-8",
		"--add-header", "Content-Transfer-Encoding: 8bit")
	checkSwaksOK(t, r)

	kws := ehloKeywords(r.stdout)
	for _, want := range []string{"8BITMIME", "AUTH", "ENHANCEDSTATUSCODES"} {
		if !contains(kws, want) {
			t.Errorf("EHLO reply lacks %s (relayed from smtp-sink): %v", want, kws)
		}
	}
	for _, never := range []string{"PIPELINING", "CHUNKING", "XCLIENT", "STARTTLS"} {
		if contains(kws, never) {
			t.Errorf("EHLO reply offers %s, which the edge does not implement: %v", never, kws)
		}
	}
	if strings.Contains(r.stdout, " -> AUTH") {
		t.Errorf("swaks authenticated, it was not asked to:\n%s", r.stdout)
	}

	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1", len(ms))
	}
	raw := string(ms[0].raw)
	if got, want := ms[0].header("X-Mail-Args"), sinkPrintable("<"+sender+">"); got != want {
		t.Errorf("MAIL FROM arguments upstream: %q, want %q", got, want)
	}
	for _, want := range []string{"Subject: " + subject + "\n", text + "\n"} {
		if !strings.Contains(raw, want) {
			t.Errorf("the 8-bit text %q did not arrive byte for byte:\n%s", want, raw)
		}
	}

	// swaks has no option for MAIL parameters: the same exchange by hand,
	// with BODY=8BITMIME and SMTPUTF8, which must reach smtp-sink as sent.
	c, err := textproto.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("%q: %v %s", fmt.Sprintf(format, args...), err, msg)
		}
	}
	step(220, "")
	step(250, "EHLO client.example.org")
	step(250, "MAIL FROM:<%s> BODY=8BITMIME SMTPUTF8", sender)
	step(250, "RCPT TO:<bob@example.com>")
	step(354, "DATA")
	step(250, "Subject: %s\r\n\r\n%s\r\n.", subject, text+" by hand")
	step(221, "QUIT")
	ms = sink.waitMessages(t, 2)
	var hand *dump
	for i := range ms {
		if strings.Contains(ms[i].body(), text+" by hand") {
			hand = &ms[i]
		}
	}
	if hand == nil {
		t.Fatalf("the hand-made message did not arrive")
	}
	if got, want := hand.header("X-Mail-Args"), sinkPrintable("<"+sender+"> BODY=8BITMIME SMTPUTF8"); got != want {
		t.Errorf("MAIL FROM arguments upstream: %q, want %q", got, want)
	}
}

// sinkPrintable is how smtp-sink writes command arguments in its dumps:
// every byte outside printable ASCII becomes '?'.
func sinkPrintable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// TestLargeAttachment: a 5 MB attachment from swaks arrives intact.
func TestLargeAttachment(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\n")

	payload := make([]byte, 5<<20)
	rand.New(rand.NewSource(5)).Read(payload)
	want := sha256.Sum256(payload)

	r := swaks(t, e.addr, payload, "--suppress-data", "--h-Subject", "interop attachment",
		"--attach-type", "application/octet-stream", "--attach-name", "big.bin", "--attach", "-")
	checkSwaksOK(t, r)
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1", len(ms))
	}

	// Read the dump again as a stream, part by part.
	f, err := os.Open(filepath.Join(sink.dir, ms[0].name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := mail.ReadMessage(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	found := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the MIME parts: %v", err)
		}
		if p.FileName() != "big.bin" {
			continue
		}
		found = true
		if enc := p.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(enc, "base64") {
			t.Fatalf("attachment encoding %q, want base64", enc)
		}
		h := sha256.New()
		n, err := io.Copy(h, base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatalf("decoding the attachment: %v", err)
		}
		if n != int64(len(payload)) || [32]byte(h.Sum(nil)) != want {
			t.Errorf("attachment: %d bytes with another hash, want the %d bytes sent", n, len(payload))
		}
	}
	if !found {
		t.Fatal("no big.bin part in the delivered message")
	}
}

// TestSwaksPipeline: swaks --pipeline against the edge, which does not
// offer PIPELINING although smtp-sink behind it does: swaks sends one
// command at a time and the message is delivered.
func TestSwaksPipeline(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\n")

	// smtp-sink itself offers PIPELINING: the edge must be what removes it.
	direct := swaks(t, sink.addr, nil, "--quit-after", "EHLO")
	if !contains(ehloKeywords(direct.stdout), "PIPELINING") {
		t.Fatalf("smtp-sink does not offer PIPELINING; the test proves nothing:\n%s", direct.stdout)
	}

	r := swaks(t, e.addr, nil, "--pipeline", "--body", "token-pipeline")
	checkSwaksOK(t, r)
	if kws := ehloKeywords(r.stdout); contains(kws, "PIPELINING") {
		t.Errorf("the edge offers PIPELINING: %v", kws)
	}
	// Without PIPELINING swaks waits for each reply: MAIL's reply comes
	// before RCPT is sent.
	lines := strings.Split(r.stdout, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, " -> MAIL FROM:") {
			if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "<-") {
				t.Errorf("swaks pipelined (no reply right after MAIL):\n%s", r.stdout)
			}
			break
		}
	}
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 || !strings.Contains(ms[0].body(), "token-pipeline") {
		t.Fatalf("smtp-sink got %d messages, want the one sent", len(ms))
	}
}

// TestSmugglingBareLineEndings: swaks sends, unaltered (--no-data-fixup),
// a message with bare LF and CR and an SMTP-smuggling attempt ("\n.\r\n"
// then a second transaction). The edge ends the message only at
// CRLF.CRLF and normalises the bare line endings, so smtp-sink, which
// takes a bare LF as a line end, gets one message whose lines are the
// sent text, the lone dot stuffed on the wire, and no second message.
func TestSmugglingBareLineEndings(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\n")

	data := "Subject: smuggle\r\n\r\nbare LF\nbare CR\rbefore\n.\r\n" +
		"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nevil\r\n." // swaks adds the final CRLF
	r := swaks(t, e.addr, []byte(data), "--data", "-", "--no-data-fixup")
	checkSwaksOK(t, r)

	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1 (a second one was smuggled)", len(ms))
	}
	if got := ms[0].header("X-Mail-Args"); got != "<alice@example.com>" {
		t.Errorf("MAIL FROM upstream: %q", got)
	}
	want := "bare LF\nbare CR\nbefore\n.\nMAIL FROM:<evil@example.com>\nRCPT TO:<victim@example.com>\nDATA\n" +
		"Subject: smuggled\n\nevil\n"
	if got := ms[0].body(); got != want+"\n" { // smtp-sink ends each dump with an empty line
		t.Errorf("body upstream:\n%q\nwant:\n%q", got, want+"\n")
	}
}
