package e2e

import (
	"cmp"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// envIs returns a dialog check: one filter run per want entry, with that
// environment (behaviour.md#filtering) and msg1 or msg2 as input where given.
func envIs(h *harness, wants ...map[string]string) func(*testing.T, []filterRun) {
	return func(t *testing.T, runs []filterRun) {
		t.Helper()
		if len(runs) != len(wants) {
			t.Fatalf("filter ran %d times, expected %d", len(runs), len(wants))
		}
		for i, w := range wants {
			env := h.baseEnv()
			delete(env, "SENDER")
			delete(env, "RECIPIENTS")
			for k, v := range w {
				env[k] = v
			}
			checkEnv(t, runs[i], env)
		}
	}
}

// e is shorthand for an environment: SENDER, RECIPIENTS, then pairs.
func e(sender, rcpts string, more ...string) map[string]string {
	m := map[string]string{}
	if sender != "" {
		m["SENDER"] = sender
	}
	if rcpts != "" {
		m["RECIPIENTS"] = rcpts
	}
	for i := 0; i+1 < len(more); i += 2 {
		m[more[i]] = more[i+1]
	}
	return m
}

// msg is an expected delivered message.
func msg(mail string, rcpts []string, data string) smtptest.Transaction {
	return smtptest.Transaction{Mail: mail, Rcpts: rcpts, Data: []byte(data)}
}

// behaviour.md#envelope, #data: the envelope the filter sees is what the upstream
// accepted, one transaction at a time.
func TestEnvelope(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^RCPT TO:<carol@`, Reply: []string{"550 5.1.1 <carol@example.com>: upstream: recipient rejected"}},
		{Match: `^RCPT TO:<nobody@`, Reply: []string{"550 5.1.1 upstream: no such user"}},
		{Match: `^EHLO bad\.example`, Reply: []string{"550 5.7.1 upstream: go away"}},
	}}, "FilterCommand: "+f.Cmd)
	h.runDialogs(t, f, envelopeDialogs(h))
}

// envelopeDialogs are TestEnvelope's dialogs; also FuzzSession's seeds
// (with a nil h).
func envelopeDialogs(h *harness) []dialog {
	mailOK, rcptOK := smtptest.ReplySenderOK, smtptest.ReplyRcptOK
	alice, bob := "<alice@example.com>", "<bob@example.com>"
	return []dialog{
		// behaviour.md#envelope (d01): a refused RCPT is left out; order kept, "\n" between.
		{name: "d01 refused RCPT left out", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK),
			s("RCPT TO:<bob@example.com>", rcptOK),
			s("RCPT TO:<carol@example.com>", "550 5.1.1 <carol@example.com>: upstream: recipient rejected"),
			s("RCPT TO:<dave@example.com>", rcptOK),
			s("DATA", own354), raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, "RCPT TO:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA},
			delivered: []smtptest.Transaction{msg(alice, []string{bob, "<dave@example.com>"}, msg1)},
			check:     envIs(h, e("alice@example.com", "bob@example.com\ndave@example.com"))},
		// behaviour.md#envelope (k01): two transactions, two envelopes.
		{name: "k01 two messages", steps: cat(mailSteps(msg1, qd1), []step{
			s("MAIL FROM:<carol@example.com>", mailOK),
			s("RCPT TO:<dave@example.com>", rcptOK),
			s("RCPT TO:<erin@example.com>", rcptOK),
			s("DATA", own354), raw(msg2+".\r\n", qd2),
		}), up: []string{cMAIL, cRCPT, cDATA, "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", "RCPT TO:<erin@example.com>\r\n", cDATA},
			delivered: []smtptest.Transaction{txn(msg1), msg("<carol@example.com>", []string{"<dave@example.com>", "<erin@example.com>"}, msg2)},
			check: envIs(h, e("alice@example.com", "bob@example.com"),
				e("carol@example.com", "dave@example.com\nerin@example.com"))},
		// behaviour.md#envelope (k02): a 2xx to RSET clears the envelope.
		{name: "k02 RSET clears", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("RSET", smtptest.ReplyReset),
			s("MAIL FROM:<carol@example.com>", mailOK), s("RCPT TO:<dave@example.com>", rcptOK),
			s("DATA", own354), raw(msg2+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, cRSET, "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA},
			delivered: []smtptest.Transaction{msg("<carol@example.com>", []string{"<dave@example.com>"}, msg2)},
			check:     envIs(h, e("carol@example.com", "dave@example.com"))},
		// behaviour.md#ehlo (k03): a 2xx to a second EHLO clears it too.
		{name: "k03 EHLO clears", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("EHLO again.example", ehloRepl),
			s("MAIL FROM:<carol@example.com>", mailOK), s("RCPT TO:<dave@example.com>", rcptOK),
			s("DATA", own354), raw(msg2+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, "EHLO again.example\r\n", "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA},
			delivered: []smtptest.Transaction{msg("<carol@example.com>", []string{"<dave@example.com>"}, msg2)},
			check:     envIs(h, e("carol@example.com", "dave@example.com"))},
		{name: "k03 EHLO clears, DATA refused", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("EHLO again.example", ehloRepl), s("DATA", "!503 5.5.1 "),
		}, up: []string{cMAIL, cRCPT, "EHLO again.example\r\n"}, delivered: []smtptest.Transaction{}, check: envIs(h)},
		{name: "refused EHLO keeps the envelope", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("EHLO bad.example", "550 5.7.1 upstream: go away"),
			s("DATA", own354), raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, "EHLO bad.example\r\n", cDATA}, delivered: []smtptest.Transaction{txn(msg1)},
			check: envIs(h, e("alice@example.com", "bob@example.com"))},
		// behaviour.md#envelope (k07): a refused nested MAIL changes nothing.
		{name: "k07 refused nested MAIL", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("MAIL FROM:<carol@example.com>", smtptest.ReplyNested),
			s("RCPT TO:<dave@example.com>", rcptOK),
			s("DATA", own354), raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA},
			delivered: []smtptest.Transaction{msg(alice, []string{bob, "<dave@example.com>"}, msg1)},
			check:     envIs(h, e("alice@example.com", "bob@example.com\ndave@example.com"))},
		// behaviour.md#envelope: every DATA attempt ends the transaction: RCPT without a new
		// MAIL is the upstream's business, DATA is refused before any 354.
		{name: "B20 DATA clears", steps: cat(mailSteps(msg1, qd1), []step{
			s("RCPT TO:<dave@example.com>", smtptest.ReplyNeedMail),
			s("DATA", "!503 5.5.1 "),
		}), up: []string{cMAIL, cRCPT, cDATA, "RCPT TO:<dave@example.com>\r\n"},
			delivered: []smtptest.Transaction{txn(msg1)},
			check:     envIs(h, e("alice@example.com", "bob@example.com"))},
		// behaviour.md#data: no 354 for a message nobody can receive; the
		// filter never runs, the upstream never sees DATA.
		{name: "k05 DATA without MAIL", steps: []step{s("DATA", "!503 5.5.1 "), s("NOOP", smtptest.ReplyNoop)},
			up: []string{cNOOP}, delivered: []smtptest.Transaction{}, check: envIs(h)},
		{name: "k04 DATA when every RCPT was refused", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK),
			s("RCPT TO:<nobody@example.com>", "550 5.1.1 upstream: no such user"),
			s("DATA", "!554 5.5.1 "), s("NOOP", smtptest.ReplyNoop),
		}, up: []string{cMAIL, "RCPT TO:<nobody@example.com>\r\n", cNOOP}, delivered: []smtptest.Transaction{}, check: envIs(h)},
		{name: "B23 DATA without RCPT", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK),
			s("DATA", "!554 5.5.1 "),
			// the transaction is still open: a RCPT now counts.
			s("RCPT TO:<bob@example.com>", rcptOK),
			s("DATA", own354), raw(msg1+".\r\n", qd1),
		}, up: []string{cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)},
			check: envIs(h, e("alice@example.com", "bob@example.com"))},
		{name: "B23 DATA after RSET", steps: []step{
			s("MAIL FROM:<alice@example.com>", mailOK), s("RCPT TO:<bob@example.com>", rcptOK),
			s("RSET", smtptest.ReplyReset), s("DATA", "!503 5.5.1 "),
		}, up: []string{cMAIL, cRCPT, cRSET}, delivered: []smtptest.Transaction{}, check: envIs(h)},
	}
}

// behaviour.md#envelope, #xforward: how SENDER and RECIPIENTS are taken from MAIL and RCPT.
// The upstream gets the path as the edge read it (issue 6), which is the
// client's line unless that had spaces after the colon or a source route.
func TestAddressExtraction(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	tests := []struct {
		name, mail, rcpt string
		sender, rcpts    string // expected SENDER, RECIPIENTS
		upMail, upRcpt   string // what the upstream gets, when not mail and rcpt
	}{
		{"null sender", "MAIL FROM:<>", "RCPT TO:<bob@example.com>", "<>", "bob@example.com", "", ""},
		{"null sender with parameter", "MAIL FROM:<> SIZE=100", "RCPT TO:<bob@example.com>", "<>", "bob@example.com", "", ""},
		{"d06 case kept, parameters dropped", "MAIL FROM:<Alice@Example.COM> BODY=8BITMIME", "RCPT TO:<Dave@Example.COM> NOTIFY=SUCCESS ORCPT=rfc822;dave@example.com", "Alice@Example.COM", "Dave@Example.COM", "", ""},
		{"d06 lower-case verbs, space after colon", "mail from: <alice@example.com>", "rcpt to: <bob@example.com>", "alice@example.com", "bob@example.com",
			"mail from:<alice@example.com>", "rcpt to:<bob@example.com>"},
		{"d07 unbracketed with parameter", "MAIL FROM:alice@example.com SIZE=10", "RCPT TO:carol.x@example.com NOTIFY=NEVER", "alice@example.com", "carol.x@example.com", "", ""},
		{"source route dropped", "MAIL FROM:<@relay.example:alice@example.com>", "RCPT TO:<@a.example,@b.example:bob@example.com>", "alice@example.com", "bob@example.com",
			"MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>"},
		{"quoted local part", `MAIL FROM:<"al ice"@example.com>`, `RCPT TO:<"b>b"@example.com>`, `"al ice"@example.com`, `"b>b"@example.com`, "", ""},
		{"tabs between parameters", "MAIL FROM:<alice@example.com>\tSIZE=10\tBODY=8BITMIME", "RCPT TO:<bob@example.com>", "alice@example.com", "bob@example.com",
			"MAIL FROM:<alice@example.com> SIZE=10 BODY=8BITMIME", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := h.mark(t, f)
			c := h.hello(t)
			c.CmdLine(tc.mail, smtptest.ReplySenderOK)
			c.CmdLine(tc.rcpt, smtptest.ReplyRcptOK)
			c.CmdLine("DATA", "354 Start mail input; end with <CRLF>.<CRLF>")
			c.Write([]byte(msg1 + ".\r\n"))
			c.ExpectLine(smtptest.Queued(m.sessions+1, 1))
			c.CmdLine("QUIT", smtptest.ReplyBye)
			upMail, upRcpt := cmp.Or(tc.upMail, tc.mail), cmp.Or(tc.upRcpt, tc.rcpt)
			h.commandsSince(t, m, cEHLO, upMail+"\r\n", upRcpt+"\r\n", cDATA, cQUIT)
			env := h.baseEnv()
			env["SENDER"], env["RECIPIENTS"] = tc.sender, tc.rcpts
			checkEnv(t, f.one(t, m), env)
		})
	}
}

// behaviour.md#xforward: XFORWARD attributes accepted by the upstream become
// REMOTE and REMOTE_HELO for one transaction, parsed as whole tokens.
func TestXForward(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: xfwdExts}, "FilterCommand: "+f.Cmd)
	xf := func(line string) step { return s(line, smtptest.ReplyXFwdOK) }
	ae := func(more ...string) map[string]string { return e("alice@example.com", "bob@example.com", more...) }
	tests := []struct {
		name string
		xfwd []string
		env  map[string]string
	}{
		{"d02 NAME ADDR HELO", []string{"XFORWARD NAME=remote.example ADDR=192.0.2.10 HELO=remote-helo.example"},
			ae("REMOTE", "192.0.2.10", "REMOTE_HELO", "remote-helo.example")},
		{"d04 split over two lines, brackets removed", []string{"XFORWARD NAME=remote.example ADDR=[192.0.2.11]", "XFORWARD HELO=split-helo.example PROTO=ESMTP"},
			ae("REMOTE", "192.0.2.11", "REMOTE_HELO", "split-helo.example")},
		{"d05 ADDR last", []string{"XFORWARD HELO=first-helo.example ADDR=192.0.2.14"},
			ae("REMOTE", "192.0.2.14", "REMOTE_HELO", "first-helo.example")},
		{"d09 helo inside another value", []string{"XFORWARD NAME=mail.helo.example HELO=real-helo.example"},
			ae("REMOTE_HELO", "real-helo.example")},
		{"d10 IPV6 prefix removed", []string{"XFORWARD ADDR=IPV6:2001:db8::25 PROTO=ESMTP"},
			ae("REMOTE", "2001:db8::25")},
		{"lower-case names", []string{"xforward addr=192.0.2.15 helo=lower.example"},
			ae("REMOTE", "192.0.2.15", "REMOTE_HELO", "lower.example")},
		{"UNAVAILABLE is no value", []string{"XFORWARD ADDR=[UNAVAILABLE] HELO=[UNAVAILABLE]"}, ae()},
		{"later line wins", []string{"XFORWARD ADDR=192.0.2.1", "XFORWARD ADDR=192.0.2.2"}, ae("REMOTE", "192.0.2.2")},
		{"no attributes", []string{"XFORWARD PROTO=ESMTP"}, ae()},
		// behaviour.md#xforward: control characters never reach the environment (a
		// raw one refuses the whole line: TestHiddenCommands).
		{"xtext-encoded control character", []string{"XFORWARD ADDR=192.0.2.17 HELO=bad+0Ahelo.example"}, ae("REMOTE", "192.0.2.17")},
	}
	for _, tc := range tests {
		var up []string
		var st []step
		for _, x := range tc.xfwd {
			st = append(st, xf(x))
			up = append(up, x+"\r\n")
		}
		h.runDialogs(t, f, []dialog{{name: tc.name, steps: cat(st, mailSteps(msg1, qd1)),
			up:        append(up, cMAIL, cRCPT, cDATA),
			delivered: []smtptest.Transaction{txn(msg1)}, check: envIs(h, tc.env)}})
	}
	// d08: the values last one transaction.
	h.runDialogs(t, f, []dialog{{name: "d08 one transaction only",
		steps:     cat([]step{xf("XFORWARD ADDR=192.0.2.13 HELO=first.example")}, mailSteps(msg1, qd1), mailSteps(msg2, qd2)),
		up:        []string{"XFORWARD ADDR=192.0.2.13 HELO=first.example\r\n", cMAIL, cRCPT, cDATA, cMAIL, cRCPT, cDATA},
		delivered: []smtptest.Transaction{txn(msg1), txn(msg2)},
		check:     envIs(h, ae("REMOTE", "192.0.2.13", "REMOTE_HELO", "first.example"), ae())}})
}

// behaviour.md#xforward (d03): an XFORWARD the upstream refuses sets nothing.
func TestXForwardRefused(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: xfwdExts, RejectXForward: true}, "FilterCommand: "+f.Cmd)
	x := "XFORWARD NAME=remote.example ADDR=192.0.2.10 HELO=remote-helo.example"
	h.runDialogs(t, f, []dialog{{name: "d03", steps: cat([]step{s(x, smtptest.ReplyXFwdNo)}, mailSteps(msg1, qd1)),
		up:        []string{x + "\r\n", cMAIL, cRCPT, cDATA},
		delivered: []smtptest.Transaction{txn(msg1)},
		check:     envIs(h, e("alice@example.com", "bob@example.com"))}})
}
