package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// inputIs returns a dialog check: one filter run per want, which read
// exactly that message.
func inputIs(wants ...string) func(*testing.T, []filterRun) {
	return func(t *testing.T, runs []filterRun) {
		t.Helper()
		if len(runs) != len(wants) {
			t.Fatalf("filter ran %d times, expected %d", len(runs), len(wants))
		}
		for i, w := range wants {
			if runs[i].Input != w {
				t.Errorf("filter run %d read\n got %q\nwant %q", i+1, runs[i].Input, w)
			}
		}
	}
}

// inputIn returns a dialog check: one filter run, which read one of
// wants, and the upstream got that input dot-stuffed (checked by the
// caller through delivered, or here when up is true).
func inputIn(h *harness, m *mark, wants []string) func(*testing.T, []filterRun) {
	return func(t *testing.T, runs []filterRun) {
		t.Helper()
		if len(runs) != 1 {
			t.Fatalf("filter ran %d times, expected once", len(runs))
		}
		if !slices.Contains(wants, runs[0].Input) {
			t.Fatalf("filter read %q, expected one of %q", runs[0].Input, wants)
		}
		h.deliveredSince(t, *m, txn(smtptest.Stuff(runs[0].Input)))
	}
}

// unstuffed is what the filter may see of a raw DATA stream (behaviour.md#data
// and 2, compat/expect.py unstuffed_variants): bare CR and LF normalised
// to CRLF, stuffing removed. Content only a bare CR/LF can create may be
// read three ways: 1. the stuffing dot of each raw CRLF line removed, then
// line endings normalised; 2. normalised, then a leading dot removed from
// lines longer than the dot (RFC 5321 4.5.2); 3. normalised, then every
// leading dot removed.
func unstuffed(raw string) []string {
	norm := func(s string) string {
		s = strings.ReplaceAll(s, "\r\n", "\n")
		s = strings.ReplaceAll(s, "\r", "\n")
		return strings.ReplaceAll(s, "\n", "\r\n")
	}
	lines := strings.Split(raw, "\r\n")
	lines = lines[:len(lines)-1] // raw ends with CRLF
	var v1 strings.Builder
	for _, l := range lines {
		v1.WriteString(norm(strings.TrimPrefix(l, ".")) + "\r\n")
	}
	out := []string{v1.String()}
	nl := strings.Split(norm(raw), "\r\n")
	nl = nl[:len(nl)-1]
	var v2, v3 strings.Builder
	for _, l := range nl {
		if len(l) > 1 {
			v2.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
		} else {
			v2.WriteString(l + "\r\n")
		}
		v3.WriteString(strings.TrimPrefix(l, ".") + "\r\n")
	}
	for _, v := range []string{v2.String(), v3.String()} {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// behaviour.md#data (behaviour.md#data, #delivery): what the filter and the
// upstream see of the message, with a cat filter.
func TestData(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 1100)
	tests := []struct{ name, raw, filter string }{
		{name: "a01 message unchanged", raw: msg1, filter: msg1},
		// behaviour.md#data: stuffing removed for the filter, restored for the upstream.
		{name: "a08 dot-stuffing", raw: "Subject: dots\r\n\r\n..leading dot\r\n.. \r\n...\r\nend\r\n",
			filter: "Subject: dots\r\n\r\n.leading dot\r\n. \r\n..\r\nend\r\n"},
		{name: "a08 lone stuffed dot last", raw: "Subject: x\r\n\r\n..\r\n", filter: "Subject: x\r\n\r\n.\r\n"},
		// behaviour.md#data: "." right after the 354 is an empty message.
		{name: "a16 empty message", raw: "", filter: ""},
		{name: "one empty line", raw: "\r\n", filter: "\r\n"},
		// behaviour.md#data: long lines whole.
		{name: "i04 5000 and 9000 byte lines", raw: "Subject: long\r\n\r\n" + strings.Repeat("z", 5000) + "\r\n" + strings.Repeat("w", 9000) + "\r\nend\r\n",
			filter: "Subject: long\r\n\r\n" + strings.Repeat("z", 5000) + "\r\n" + strings.Repeat("w", 9000) + "\r\nend\r\n"},
		{name: "1 MiB message", raw: big, filter: big},
		// behaviour.md#data: bare LF and bare CR become CRLF.
		{name: "i05 bare LF", raw: "Subject: lf\n\nline1\nline2\r\nline3\r\n",
			filter: "Subject: lf\r\n\r\nline1\r\nline2\r\nline3\r\n"},
		{name: "bare CR", raw: "Subject: cr\r\rline1\rline2\r\n", filter: "Subject: cr\r\n\r\nline1\r\nline2\r\n"},
		// behaviour.md#data: only <CRLF>.<CRLF> ends the message.
		{name: "i08 LF.LF and LF.CRLF are content", raw: "Subject: x\r\n\r\na\n.\nb\n.\r\nc\r\n",
			filter: "Subject: x\r\n\r\na\r\n.\r\nb\r\n.\r\nc\r\n"},
		{name: "CR.CR is content", raw: "Subject: x\r\n\r\na\r.\rb\r\n", filter: "Subject: x\r\n\r\na\r\n.\r\nb\r\n"},
		// i13: a ".<CRLF>" after a bare LF is content; the next one ends.
		{name: "i13 LF.CRLF then the end", raw: "x\n.\r\n", filter: "x\r\n.\r\n"},
		// Content only a bare CR/LF can create: see unstuffed.
		{name: "CRLF.CR is content", raw: "Subject: x\r\n\r\na\r\n.\rb\r\n"},
		{name: "CRLF.LF is content", raw: "Subject: x\r\n\r\na\r\n.\nb\r\n"},
		{name: "CRLF..LF is content", raw: "Subject: x\r\n\r\na\r\n..\nb\r\n"},
		{name: "LF.x", raw: "Subject: x\r\n\r\na\n.x\r\n"},
		{name: "CRLF.X is stuffing", raw: "Subject: x\r\n\r\n.x\r\n", filter: "Subject: x\r\n\r\nx\r\n"},
		// NUL bytes: TestNULInData (refused unless nul_bytes: keep).
	}
	for _, tc := range tests {
		d := dialog{name: tc.name, steps: mailSteps(tc.raw, qd1), up: []string{cMAIL, cRCPT, cDATA}}
		if tc.filter != "" || tc.raw == "" {
			d.delivered = []smtptest.Transaction{txn(smtptest.Stuff(tc.filter))}
			d.check = inputIs(tc.filter)
		} else {
			var m mark
			d.check = inputIn(h, &m, unstuffed(tc.raw))
			m = h.mark(t, f)
		}
		h.runDialogs(t, f, []dialog{d})
	}
}

// behaviour.md#delivery, #data: what a filter writes is delivered stuffed, with CRLF
// line endings and a final CRLF.
func TestFilterOutput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, out, up string
	}{
		{"a09 lone dot and dot lines stuffed", "Subject: x\r\n\r\nbefore\r\n.\r\n.x line\r\n..y\r\nafter\r\n",
			"Subject: x\r\n\r\nbefore\r\n..\r\n..x line\r\n...y\r\nafter\r\n"},
		{"a09 lone dot last", "Subject: x\r\n\r\nbefore\r\n.\r\n", "Subject: x\r\n\r\nbefore\r\n..\r\n"},
		{"a10 replaced", "Subject: replaced\r\n\r\nnew body\r\n", "Subject: replaced\r\n\r\nnew body\r\n"},
		{"a11 empty output", "", ""},
		{"a12 no final CRLF", "Subject: x\r\n\r\nno newline at end", "Subject: x\r\n\r\nno newline at end\r\n"},
		{"a12 lone dot without CRLF", "Subject: x\r\n\r\n.", "Subject: x\r\n\r\n..\r\n"},
		{"a13 LF only", "Subject: lf\n\nline one\nline two\n", "Subject: lf\r\n\r\nline one\r\nline two\r\n"},
		{"bare CR and dot after LF", "a\n.\rb\r.\n", "a\r\n..\r\nb\r\n..\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			if err := os.WriteFile(out, []byte(tc.out), 0o644); err != nil {
				t.Fatal(err)
			}
			f := newFilter(t, "cat "+out)
			// An upstream that ends data at <LF>.<LF>: a bare LF that got
			// through would cut the message short.
			h := start(t, smtptest.Config{LaxDot: true}, "FilterCommand: "+f.Cmd)
			c := h.hello(t)
			sendAlice(t, c, msg1, smtptest.Queued(1, 1))
			c.CmdLine("QUIT", smtptest.ReplyBye)
			h.commands(t, cEHLO, cMAIL, cRCPT, cDATA, cQUIT)
			h.delivered(t, txn(tc.up))
			if r := f.one(t, mark{}); r.Input != msg1 {
				t.Errorf("filter read %q", r.Input)
			}
		})
	}
}

// behaviour.md#data: SMTP smuggling. Whatever end-of-data look-alikes the
// client sends, exactly one message reaches the upstream, with no bare CR
// or LF, and the client gets one reply per command, in order; also against
// an upstream that ends data at <LF>.<LF> (old Postfix).
func TestSmuggling(t *testing.T) {
	t.Parallel()
	payloads := []struct{ name, end string }{
		{"CRLF.LF", "\r\n.\n"},
		{"LF.LF", "\n.\n"},
		{"LF.CRLF", "\n.\r\n"},
		{"CR.CR", "\r.\r"},
		{"CR.CRLF", "\r.\r\n"},
		{"CRLF.CR", "\r\n.\r"},
		{"LF..LF", "\n..\n"},
	}
	for _, lax := range []bool{false, true} {
		name := "i06 strict upstream"
		if lax {
			name = "i07 lax upstream"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFilter(t, `cat "$d/input"`)
			h := start(t, smtptest.Config{LaxDot: lax}, "FilterCommand: "+f.Cmd)
			for _, p := range payloads {
				body := "Subject: legit\r\n\r\nlegit body" + p.end +
					"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
					"Subject: smuggled\r\n\r\nsmuggled body\r\n"
				h.runDialogs(t, f, []dialog{{name: p.name,
					steps: cat(mailSteps(body, qd1), []step{s("NOOP", smtptest.ReplyNoop)}),
					up:    []string{cMAIL, cRCPT, cDATA, cNOOP},
					check: func(t *testing.T, runs []filterRun) {
						if len(runs) != 1 || strings.ContainsAny(strings.ReplaceAll(runs[0].Input, "\r\n", ""), "\r\n") {
							t.Errorf("filter runs %d, input with bare CR/LF: %q", len(runs), runs)
						}
					},
				}})
			}
			// The compat scenario itself: the filter sees one message
			// holding the payload as text, the upstream gets that.
			m := h.mark(t, f)
			h.runDialogs(t, f, []dialog{{name: "compat payload",
				steps: cat(mailSteps(smuggle, qd1), []step{s("NOOP", smtptest.ReplyNoop)}),
				up:    []string{cMAIL, cRCPT, cDATA, cNOOP},
				check: inputIn(h, &m, unstuffed(smuggle))}})
			for _, s := range h.sessions(t) {
				for _, c := range s.Commands {
					if strings.Contains(c, "mallory") {
						t.Errorf("the smuggled envelope reached the upstream as a command: %q", c)
					}
				}
			}
		})
	}
}

// behaviour.md#data: bare_line_endings: reject refuses the message with a 5xx after
// reading it to its end; the session stays usable.
func TestBareLineEndingsReject(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{LaxDot: true}, "FilterCommand: "+f.Cmd, "bare_line_endings: reject")
	h.runDialogs(t, f, []dialog{
		{name: "bare LF refused, then a clean message", steps: cat(
			mailSteps("Subject: lf\n\nline1\n.\nMAIL FROM:<mallory@example.com>\r\n", "!554 5.6.0 "),
			mailSteps(msg1, qd1)),
			up:        []string{cMAIL, cRCPT, cRSET, cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1)}, check: inputIs(msg1)},
		{name: "bare CR refused", steps: cat(mailSteps("a\rb\r\n", "!554 5.6.0 "), []step{s("NOOP", smtptest.ReplyNoop)}),
			up: []string{cMAIL, cRCPT, cRSET, cNOOP}, delivered: []smtptest.Transaction{}, check: inputIs()},
		{name: "i06 smuggling refused", steps: cat(mailSteps(smuggle, "!554 5.6.0 "), []step{s("NOOP", smtptest.ReplyNoop)}),
			up: []string{cMAIL, cRCPT, cRSET, cNOOP}, delivered: []smtptest.Transaction{}, check: inputIs()},
		{name: "CRLF only is fine", steps: mailSteps(msg1, qd1), up: []string{cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1)}, check: inputIs(msg1)},
	})
}

// max_message_size: 552 after reading the whole message; the limit counts
// the message as delivered (after un-stuffing); the session stays usable.
func TestMaxMessageSize(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "max_message_size: 100")
	at := strings.Repeat("a", 98) + "\r\n"            // 100 bytes
	over := strings.Repeat("a", 99) + "\r\n"          // 101 bytes
	stuffed := "." + strings.Repeat(".", 98) + "\r\n" // 101 bytes on the wire, 100 as delivered
	small := "Subject: small\r\n\r\nsmall\r\n"
	h.runDialogs(t, f, []dialog{
		{name: "at the limit", steps: mailSteps(at, qd1), up: []string{cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(at)}, check: inputIs(at)},
		{name: "stuffing dots do not count", steps: mailSteps(stuffed, qd1), up: []string{cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(stuffed)}, check: inputIs(stuffed[1:])},
		{name: "over the limit, then a message", steps: cat(mailSteps(over, "!552 "), mailSteps(small, qd1)),
			up:        []string{cMAIL, cRCPT, cRSET, cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(small)}, check: inputIs(small)},
		{name: "far over the limit", steps: cat(mailSteps(strings.Repeat(over, 20000), "!552 "), []step{s("NOOP", smtptest.ReplyNoop)}),
			up: []string{cMAIL, cRCPT, cRSET, cNOOP}, delivered: []smtptest.Transaction{}, check: inputIs()},
	})
}

// behaviour.md#data (j11): the client vanishes mid-DATA: nothing is delivered and the
// upstream transaction is reset or the connection closed.
func TestClientDisconnectsMidData(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
	c.CmdExpect("DATA", 354)
	c.Write([]byte("Subject: partial\r\n\r\nhalf"))
	time.Sleep(200 * time.Millisecond)
	c.Close()
	ss := h.sessions(t)
	if len(ss) != 1 {
		t.Fatalf("sessions: %v", describeSessions(ss))
	}
	got := ss[0].Commands
	want := []string{cEHLO, cMAIL, cRCPT}
	if len(got) < 3 || !equalStrings(got[:3], want) || len(got) > 5 {
		t.Fatalf("upstream commands %q", got)
	}
	for _, c := range got[3:] {
		if c != cRSET && c != cQUIT {
			t.Errorf("upstream got %q after the client vanished", c)
		}
	}
	h.delivered(t)
	if len(f.runs(t)) > 1 {
		t.Errorf("filter ran %d times", len(f.runs(t)))
	}
	// The log says what happened, never FILTERED.
	for _, l := range h.logs.waitMessageLines(t, mark{}, 1) {
		if strings.Contains(l, "status=FILTERED") {
			t.Errorf("log line %q", l)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// behaviour.md#delivery, #replies: the upstream's side of the delivery.
func TestDelivery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		up    smtptest.Config
		conf  []string
		final string // the client's reply to the end of data; "!..." own
		eof   bool   // the session then ends
		cmds  []string
		txns  int // transactions the upstream saw (terminated or not)
	}{
		// behaviour.md#delivery (j07): the upstream refuses DATA: its reply is the final one.
		{name: "j07 upstream refuses DATA", up: smtptest.Config{Rules: []smtptest.Rule{{Match: `^DATA$`, Reply: []string{"554 5.7.1 upstream: no data for you"}}}},
			final: "554 5.7.1 upstream: no data for you", cmds: []string{cEHLO, cMAIL, cRCPT, cDATA, cQUIT}},
		// behaviour.md#delivery (j08): the upstream refuses the content.
		{name: "j08 upstream refuses content", up: smtptest.Config{DataFinal: []string{"554 5.7.1 upstream: content rejected"}},
			final: "554 5.7.1 upstream: content rejected", cmds: []string{cEHLO, cMAIL, cRCPT, cDATA, cQUIT}, txns: 1},
		// behaviour.md#delivery (j09): a multi-line final reply reaches the client whole.
		{name: "j09 multi-line final reply", up: smtptest.Config{DataFinal: []string{"250-2.0.0 upstream: first line", "250 2.0.0 upstream: queued"}},
			final: "250-2.0.0 upstream: first line | 250 2.0.0 upstream: queued", cmds: []string{cEHLO, cMAIL, cRCPT, cDATA, cQUIT}, txns: 1},
		{name: "temporary refusal of content", up: smtptest.Config{DataFinal: []string{"451 4.3.0 upstream: try later"}},
			final: "451 4.3.0 upstream: try later", cmds: []string{cEHLO, cMAIL, cRCPT, cDATA, cQUIT}, txns: 1},
		// behaviour.md#replies (j06): the upstream vanishes at DATA: one 451, then close.
		{name: "j06 upstream closes at DATA", up: smtptest.Config{Rules: []smtptest.Rule{{Match: `^DATA$`, Close: true}}},
			final: "!451 ", eof: true, cmds: []string{cEHLO, cMAIL, cRCPT, cDATA}},
		// behaviour.md#delivery, #connection: a stalled delivery gets exactly one 451.
		{name: "a12 upstream stalls after the data", up: smtptest.Config{StallDataEnd: true}, conf: []string{"TimeOut: 2"},
			final: "!451 ", eof: true, cmds: []string{cEHLO, cMAIL, cRCPT, cDATA}, txns: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFilter(t, `cat "$d/input"`)
			h := start(t, tc.up, append([]string{"FilterCommand: " + f.Cmd}, tc.conf...)...)
			c := h.hello(t)
			rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1)
			if !matchReply(rep, tc.final, 1) {
				t.Fatalf("final reply %q, expected %q", rep.String(), tc.final)
			}
			if tc.eof {
				c.ExpectEOF(10 * time.Second)
			} else {
				c.CmdLine("QUIT", smtptest.ReplyBye)
			}
			s := h.commands(t, tc.cmds...)
			if len(s.Transactions) != tc.txns {
				t.Errorf("upstream transactions: %v", describeSessions([]smtptest.Session{s}))
			}
			f.one(t, mark{})
			// behaviour.md#replies, #header: never FILTERED for mail the upstream refused.
			lines := h.logs.waitMessageLines(t, mark{}, 1)
			wantFiltered := strings.HasPrefix(tc.final, "250")
			if got := strings.Contains(lines[0], "status=FILTERED"); got != wantFiltered {
				t.Errorf("log line %q: status=FILTERED is %v, expected %v", lines[0], got, wantFiltered)
			}
		})
	}
}

// behaviour.md#data: after a 354 the edge reads the message to its end,
// whatever fails; TempDirectory missing in pipe mode is not needed.
func TestTempDirectoryMissing(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"pipe", "file"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			missing := filepath.Join(t.TempDir(), "no-such-dir")
			body := "Subject: x\r\n\r\nRCPT TO:<evil@example.com>\r\nRSET\r\n"
			h := start(t, smtptest.Config{}, "FilterCommand: cat", "FilterType: "+mode, "TempDirectory: "+missing)
			c := h.hello(t)
			rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, body)
			c.CmdLine("NOOP", smtptest.ReplyNoop)
			c.CmdLine("QUIT", smtptest.ReplyBye)
			switch {
			case mode == "pipe" && rep.String() == smtptest.Queued(1, 1):
				h.commands(t, cEHLO, cMAIL, cRCPT, cDATA, cNOOP, cQUIT)
				h.delivered(t, txn(body))
			case rep.Code/100 == 4:
				h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cNOOP, cQUIT)
				h.delivered(t)
			default:
				t.Fatalf("final reply %q, expected delivery (pipe mode) or one 4xx", rep.String())
			}
		})
	}
}

// The failure rule: an upstream that answers DATA with anything but 354
// or a refusal (4xx, 5xx) has not taken the message: the client must not
// get a 2xx for it.
func TestUpstreamOddDataReply(t *testing.T) {
	t.Parallel()
	for _, reply := range []string{"250 2.0.0 upstream: fine", "334 upstream: what"} {
		t.Run(reply[:3], func(t *testing.T) {
			t.Parallel()
			h := start(t, smtptest.Config{Rules: []smtptest.Rule{{Match: `^DATA$`, Reply: []string{reply}}}}, "FilterCommand: cat")
			c := h.hello(t)
			rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1)
			if rep.Code/100 != 4 {
				t.Fatalf("final reply %q for a message the upstream never took, expected a 4xx", rep.String())
			}
			if ms := h.up.Messages(); len(ms) != 0 {
				t.Fatalf("delivered: %v", ms)
			}
		})
	}
}

// Replies to the edge's own commands (RSET, NOOP keep-alives, XCLIENT)
// are read whole, so no stray line reaches the client later (proxsmtpd
// read one line only); the client's get every line.
func TestMultiLineReplies(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `if grep -q Alice "$d/input"; then echo '550 5.7.1 no' >&2; exit 1; fi; sleep 1.5; cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: xclientExts, MultiLine: true,
		XClientReply: []string{"250-2.0.0 upstream: xclient", "250 2.0.0 upstream: xclient done"}},
		"FilterCommand: "+f.Cmd, "XClient: on", "KeepAlives: 1")
	ml := func(line string) string { return line[:3] + "-upstream: more | " + line }
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", ml(smtptest.ReplySenderOK))
	c.CmdLine("RCPT TO:<bob@example.com>", ml(smtptest.ReplyRcptOK))
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1 + ".\r\n"))
	c.ExpectLine("550 5.7.1 no") // and RSET upstream
	c.CmdLine("MAIL FROM:<carol@example.com>", ml(smtptest.ReplySenderOK))
	c.CmdLine("RCPT TO:<dave@example.com>", ml(smtptest.ReplyRcptOK))
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg2 + ".\r\n")) // NOOPs upstream while the filter sleeps
	c.ExpectLine(ml(smtptest.Queued(1, 1)))
	c.CmdLine("VRFY x", ml(smtptest.ReplyVrfy))
	c.CmdLine("QUIT", ml(smtptest.ReplyBye))
	ss := h.sessions(t)
	eqLines(t, "upstream commands", collapseNOOPs(ss[0].Commands), []string{cEHLO, "XCLIENT ADDR=127.0.0.1\r\n", cMAIL, cRCPT, cRSET,
		"MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cNOOP, cDATA, "VRFY x\r\n", cQUIT})
	h.delivered(t, msg("<carol@example.com>", []string{"<dave@example.com>"}, msg2))
}
