package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/wire"
)

// FuzzSession drives the whole session state machine: a real edge (one
// per fuzz worker process) with a cat filter, XClient, Skip authenticated,
// a Header and a size limit, in front of the recording upstream offering
// every extension. The fuzzer is the client's byte stream, sent at once
// and followed by a half-close. Invariants:
//
//   - no panic, and the edge closes the connection in bounded time;
//   - every reply line is well formed, and there are no more replies than
//     the greeting plus one per line the client sent;
//   - every message the upstream received has no bare CR or LF and ends
//     with CRLF (behaviour.md#data);
//   - every command line the upstream received is a complete line the
//     client sent (or that line with its whitespace made plain, or its
//     MAIL/RCPT path as parsed), or one the edge makes up (DATA, RSET,
//     NOOP, QUIT, XCLIENT ADDR=, EHLO/HELO again or before a HELO, "*"
//     to cancel an AUTH).
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	h := startEdge(f, smtptest.Config{Extensions: allExts, MultiLine: true, Timeout: 10 * time.Second}, quietLogs(),
		"FilterCommand: cat", "XClient: on", "Skip: authenticated", "Header: X-Fuzz: %i",
		"max_message_size: 4096", "TimeOut: 5", "retention: 0",
		// The client sends at once: it would otherwise only ever meet the
		// early-talker check.
		"reject_early_talkers: off")
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 32<<10 {
			t.Skip("long inputs cost more than they find")
		}
		before := h.up.Accepted()
		replies := fuzzConversation(t, h.addr, in)
		checkReplies(t, in, replies)

		checkUpstream(t, h, before, in)
		h.up.Clear()
	})
}

// checkUpstream waits until the session's upstream connection (if it got
// one) is closed with the client's, and checks what the upstream sessions
// begun after before received, against the client's bytes in.
func checkUpstream(t *testing.T, h *harness, before int, in []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ss, err := h.up.WaitClosed(ctx)
	if err != nil {
		t.Fatalf("upstream session not closed after the client's: %v", describeSessions(ss))
	}
	lines := clientLines(in)
	for _, s := range ss {
		if s.Index <= before {
			continue
		}
		for _, c := range s.Commands {
			if strings.EqualFold(wire.ParseCommand(strings.TrimSuffix(c, "\r\n")).Verb, "STARTTLS") {
				t.Errorf("the upstream received %q: STARTTLS is the edge's own", c)
			} else if !allowedUpstreamLine(c, lines) {
				t.Errorf("the upstream received %q, which the client never sent as a line", c)
			}
		}
		for _, tr := range s.Transactions {
			d := tr.Data
			if !tr.Terminated && bytes.HasSuffix(d, []byte("\r")) {
				d = d[:len(d)-1] // cut between CR and LF
			}
			if i := bareIndex(d); i >= 0 {
				t.Errorf("upstream data has a bare CR or LF at %d: %q", i, tr.Data)
			}
			if tr.Terminated && len(d) > 0 && !bytes.HasSuffix(d, []byte("\r\n")) {
				t.Errorf("upstream data does not end with CRLF: %q", d)
			}
		}
	}
}

// fuzzConversation sends in, half-closes, and returns everything the edge
// sent until it closed the connection.
func fuzzConversation(t *testing.T, addr string, in []byte) []byte {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Write(in)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	out, err := io.ReadAll(c)
	if err != nil && !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("the edge did not close the connection: %v (got %q)", err, out)
	}
	return out
}

// checkReplies: well-formed reply lines, at most one reply per client line
// plus the greeting.
func checkReplies(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		t.Errorf("output does not end with CRLF: %q", out)
	}
	n := 0
	for _, l := range smtptest.Lines(out) {
		if len(l) < 3 || !isDigits(l[:3]) || len(l) > 3 && l[3] != ' ' && l[3] != '-' {
			t.Errorf("malformed reply line %q", l)
			continue
		}
		if len(l) == 3 || l[3] == ' ' {
			n++
		}
	}
	if max := 1 + bytes.Count(in, []byte("\n")); n > max {
		t.Errorf("%d replies for %d client lines: %q", n, max-1, out)
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clientLines is every complete line of in, without CRLF or LF, and each
// line as the edge relays it: its whitespace made plain, MAIL and RCPT
// paths as parsed (issue 6).
func clientLines(in []byte) map[string]bool {
	m := map[string]bool{}
	for {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			return m
		}
		l := string(bytes.TrimSuffix(in[:i], []byte("\r")))
		m[l] = true
		c := wire.ParseCommand(l)
		m[c.Line] = true
		verb, _, _ := strings.Cut(c.Line, " ")
		if p, err := wire.ParseMail(c.Arg); err == nil && c.Verb == "MAIL" {
			m[verb+" "+p.Arg()] = true
		}
		if p, err := wire.ParseRcpt(c.Arg); err == nil && c.Verb == "RCPT" {
			m[verb+" "+p.Arg()] = true
		}
		in = in[i+1:]
	}
}

// allowedUpstreamLine: c (as the upstream received it) is a CRLF line,
// and a complete client line or one the edge makes up.
func allowedUpstreamLine(c string, client map[string]bool) bool {
	l, ok := strings.CutSuffix(c, "\r\n")
	if !ok {
		return false
	}
	switch {
	case client[l]:
		return true
	case l == "DATA", l == "RSET", l == "NOOP", l == "QUIT", l == "*", l == "XCLIENT ADDR=127.0.0.1":
		return true
	case strings.HasPrefix(l, "EHLO ") || strings.HasPrefix(l, "HELO "):
		// The EHLO again after XCLIENT repeats the client's argument; so
		// does the edge's own EHLO ahead of a client's HELO.
		arg := l[5:]
		for k := range client {
			if strings.Contains(k, arg) && len(k) >= 4 && (strings.EqualFold(k[:4], l[:4]) || strings.EqualFold(k[:4], "HELO")) {
				return true
			}
		}
	}
	return false
}

// fuzzSeeds: every dialog of the command and envelope tables, the data
// and smuggling payloads, and NUL/CR/LF mixes and long lines.
func fuzzSeeds() []string {
	var out []string
	for _, d := range append(commandDialogs(), envelopeDialogs(nil)...) {
		var b strings.Builder
		if !d.noEHLO {
			b.WriteString("EHLO client.example\r\n")
		}
		for _, st := range d.steps {
			if st.raw != "" {
				b.WriteString(st.raw)
			} else {
				b.WriteString(st.send + "\r\n")
			}
		}
		if !d.noQuit {
			b.WriteString("QUIT\r\n")
		}
		out = append(out, b.String())
	}
	txn := func(body string) string {
		return "EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" + body + ".\r\nQUIT\r\n"
	}
	for _, body := range []string{msg1, "", "..\r\n", "a\n.\nb\n.\r\nc\r\n", "a\r.\rb\r\n", "x\n.\r\n", smuggle,
		"Subject: legit\r\n\r\nlegit body\r\n.\r\rMAIL FROM:<m@x>\r\n", strings.Repeat("y", 5000) + "\r\n", "a\x00b\r\n"} {
		out = append(out, txn(body))
	}
	auth := "EHLO client.example\r\n" + authPlain + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
	out = append(out,
		auth+msg1+".\r\nQUIT\r\n",
		auth+smuggle+".\r\nQUIT\r\n",
		"EHLO client.example\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nQUIT\r\n",
		"EHLO client.example\r\nAUTH LOGIN\r\n*\r\nNOOP\r\n",
		"HELO client.example\r\nXFORWARD ADDR=192.0.2.1 HELO=x.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@x>\r\nDATA\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"+strings.Repeat("z", 5000)+"\r\n.\r\nRSET\r\n",
		"NOOP\r\r\nNOOP\x00\nNOOP\rNOOP\n\n\r\n",
		"EHLO x\r\nSTARTTLS\r\nBDAT 10 LAST\r\n0123456789XCLIENT ADDR=1.2.3.4\r\n",
		"NOOP "+strings.Repeat("x", 4300)+"\r\nNOOP\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf a messa",
		"EHLO x\r\nDATA\r\nDATA\r\nMAIL FROM:<a@b>\r\nDATA\r\n",
	)
	return out
}
