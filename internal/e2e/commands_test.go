package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// behaviour.md#ehlo: the upstream offers every extension; the client sees all but
// PIPELINING, STARTTLS, CHUNKING, BINARYMIME, CHECKPOINT, XCLIENT and
// XEXCH50, in order, and the last line is marked as last even though the
// upstream's last one (XEXCH50) was dropped (g01).
func TestEHLOFiltering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		exts []string
		want []string
	}{
		{"g01 every extension", allExts, []string{"250-" + edgeHost, "250-SIZE 10240000", "250-AUTH PLAIN LOGIN",
			"250-XFORWARD NAME ADDR PROTO HELO", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250 SMTPUTF8"}},
		{"a01 default list ends with CHUNKING", nil, []string{"250-" + edgeHost, "250-SIZE 10240000", "250-VRFY", "250-ETRN",
			"250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250 SMTPUTF8"}},
		{"keywords match whole words, any case", []string{"pipelining", "Starttls", "PIPELININGX", "CHUNKING2", "XCLIENT\tNAME", "8BITMIME"},
			[]string{"250-" + edgeHost, "250-PIPELININGX", "250-CHUNKING2", "250 8BITMIME"}},
		{"only hidden extensions", []string{"PIPELINING", "STARTTLS"}, []string{"250 " + edgeHost}},
		{"no extensions", []string{}, []string{"250 " + edgeHost}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, smtptest.Config{Extensions: tc.exts}, "FilterCommand: cat")
			c := h.dial(t)
			rep := c.CmdExpect("EHLO client.example", 250)
			eqLines(t, "EHLO reply", rep.Lines, tc.want)
			c.CmdLine("QUIT", smtptest.ReplyBye)
			h.commands(t, cEHLO, cQUIT)
		})
	}
}

// One dialog per protocol edge of the command relay (behaviour.md#ehlo, #commands, #data).
func TestCommands(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^RCPT TO:<nobody@`, Reply: []string{"550 5.1.1 upstream: no such user"}},
		{Match: `^EHLO bad\.example`, Reply: []string{"550 5.7.1 upstream: go away"}},
		{Match: `^HELP`, Reply: []string{"214-2.0.0 upstream: help line one", "214 2.0.0 upstream: help end"}},
	}}, "FilterCommand: cat")
	h.runDialogs(t, nil, commandDialogs())
}

// commandDialogs are TestCommands' dialogs; also FuzzSession's seeds.
func commandDialogs() []dialog {
	long4221 := "NOOP " + strings.Repeat("x", 4214)
	long4222 := "NOOP " + strings.Repeat("x", 4215)
	return []dialog{
		// behaviour.md#ehlo: EHLO and HELO forwarded unchanged; the first line is the edge's.
		{name: "B9 HELO", noEHLO: true, steps: []step{s("HELO client.example", "250 "+edgeHost)}, up: []string{"HELO client.example\r\n"}},
		{name: "B9 EHLO twice", steps: []step{s("EHLO again.example", ehloRepl)}, up: []string{"EHLO again.example\r\n"}},
		{name: "B9 EHLO refused relayed", noEHLO: true, steps: []step{s("EHLO bad.example", "550 5.7.1 upstream: go away"),
			s("EHLO client.example", ehloRepl)}, up: []string{"EHLO bad.example\r\n", cEHLO}},
		// behaviour.md#commands: everything else is relayed byte for byte, replies verbatim.
		{name: "g05 VRFY HELP NOOP unknown", steps: []step{
			s("VRFY bob", smtptest.ReplyVrfy),
			s("HELP", "214-2.0.0 upstream: help line one | 214 2.0.0 upstream: help end"),
			s("NOOP", smtptest.ReplyNoop),
			s("FOOBAR baz", smtptest.ReplyUnknown),
		}, up: []string{"VRFY bob\r\n", "HELP\r\n", cNOOP, "FOOBAR baz\r\n"}},
		{name: "B12 case and spacing kept", steps: []step{s("noop  a  b  ", smtptest.ReplyNoop), s("Vrfy  bob", smtptest.ReplyVrfy)},
			up: []string{"noop  a  b  \r\n", "Vrfy  bob\r\n"}},
		{name: "B12 empty line relayed", steps: []step{s("", smtptest.ReplyUnknown)}, up: []string{"\r\n"}},
		{name: "B12 RSET relayed", steps: []step{s("RSET", smtptest.ReplyReset)}, up: []string{cRSET}},
		{name: "B12 ETRN and EXPN relayed", steps: []step{s("ETRN example.com", smtptest.ReplyUnknown), s("EXPN list", smtptest.ReplyUnknown)},
			up: []string{"ETRN example.com\r\n", "EXPN list\r\n"}},
		// behaviour.md#commands: STARTTLS and BDAT refused, never relayed; the session goes on.
		{name: "g02 STARTTLS", steps: []step{s("STARTTLS", "!502 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "g02 starttls lower case", steps: []step{s("starttls", "!502 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "g03 BDAT", steps: []step{
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
			s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
			s("BDAT 12 LAST", "!502 "),
			s("RSET", smtptest.ReplyReset),
		}, up: []string{cMAIL, cRCPT, cRSET}, delivered: []smtptest.Transaction{}},
		// behaviour.md#commands: a client may not send XCLIENT.
		{name: "g04 XCLIENT", steps: []step{s("XCLIENT ADDR=192.0.2.20 NAME=spoof.example", "!554 "), s("NOOP", smtptest.ReplyNoop)},
			up: []string{cNOOP}},
		// behaviour.md#commands: 4221 bytes with CRLF are relayed, 4222 refused; in step after.
		{name: "i03 4221-byte line relayed", steps: []step{s(long4221, smtptest.ReplyNoop)}, up: []string{long4221 + "\r\n"}},
		{name: "i03 4222-byte line refused", steps: []step{s(long4222, "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "i01 1500-byte line relayed", steps: []step{s("NOOP "+strings.Repeat("x", 1500), smtptest.ReplyNoop)},
			up: []string{"NOOP " + strings.Repeat("x", 1500) + "\r\n"}},
		{name: "i02 5000-byte line refused", steps: []step{s("NOOP "+strings.Repeat("y", 5000), "!500 "), s("NOOP", smtptest.ReplyNoop)},
			up: []string{cNOOP}},
		{name: "i02 100000-byte line refused", steps: []step{s("NOOP "+strings.Repeat("y", 100000), "!500 "), s("NOOP", smtptest.ReplyNoop)},
			up: []string{cNOOP}},
		{name: "B15 long MAIL refused, no envelope", steps: []step{
			s("MAIL FROM:<"+strings.Repeat("a", 5000)+"@example.com>", "!500 "),
			s("DATA", "!503 "),
		}},
		// behaviour.md#commands, #data: NUL or a stray CR: 500, the line dropped whole.
		{name: "i10 NUL", steps: []step{raw("NOOP a\x00b\r\n", "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "i10 NUL then bare LF", steps: []step{raw("NOOP a\x00b\n", "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "B16 bare CR", steps: []step{raw("NOOP a\rb\r\n", "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "B16 CR CR LF", steps: []step{raw("NOOP\r\r\n", "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "B16 CR-only line end", steps: []step{raw("RSET\rNOOP\r\n", "!500 "), s("NOOP", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		{name: "B16 NUL in MAIL", steps: []step{raw("MAIL FROM:<a\x00@example.com>\r\n", "!500 "), s("DATA", "!503 ")}},
		// behaviour.md#commands (i11): a bare-LF command is relayed (as a CRLF line).
		{name: "i11 bare LF command", steps: []step{raw("NOOP\n", smtptest.ReplyNoop)}, up: []string{cNOOP}},
		// behaviour.md#commands, #data: pipelining without PIPELINING: one command, one
		// reply, in order; no false 250.
		{name: "g08 pipelined MAIL RCPT DATA", steps: []step{
			raw("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n", smtptest.ReplySenderOK, smtptest.ReplyRcptOK, own354),
			raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}},
		{name: "g08 whole session in one write", noQuit: true, steps: []step{
			raw("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"+msg1+".\r\nNOOP\r\nQUIT\r\n",
				smtptest.ReplySenderOK, smtptest.ReplyRcptOK, own354, qd1, smtptest.ReplyNoop, smtptest.ReplyBye),
		}, up: []string{cMAIL, cRCPT, cDATA, cNOOP, cQUIT}, delivered: []smtptest.Transaction{txn(msg1)}},
		{name: "g08 pipelined with refused RCPT", steps: []step{
			raw("MAIL FROM:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\nNOOP\r\n",
				smtptest.ReplySenderOK, "550 5.1.1 upstream: no such user", "!554 ", smtptest.ReplyNoop),
		}, up: []string{cMAIL, "RCPT TO:<nobody@example.com>\r\n", cNOOP}, delivered: []smtptest.Transaction{}},
		{name: "g08 pipelined with bad line in between", steps: []step{
			raw("NOOP\r\nNOOP \x00\r\nVRFY x\r\n", smtptest.ReplyNoop, "!500 ", smtptest.ReplyVrfy),
		}, up: []string{cNOOP, "VRFY x\r\n"}},
		// behaviour.md#data: DATA is the first word in any case, with any argument.
		{name: "g06 data lower case", steps: []step{
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
			s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
			s("data", own354),
			raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}},
		{name: "g09 DATA with argument", steps: []step{
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
			s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
			s("DATA now", own354),
			raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}},
		// QUIT mid-transaction: relayed, nothing delivered.
		{name: "QUIT mid-transaction", noQuit: true, steps: []step{
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
			s("QUIT", smtptest.ReplyBye),
		}, up: []string{cMAIL, cQUIT}, delivered: []smtptest.Transaction{}},
	}
}

// After QUIT the edge closes the connection, whatever the client sends.
func TestQuitCloses(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat")
	c := h.hello(t)
	c.Write([]byte("QUIT\r\nNOOP\r\n"))
	c.ExpectLine(smtptest.ReplyBye)
	c.ExpectEOF(5 * time.Second)
	h.commands(t, cEHLO, cQUIT)
}
