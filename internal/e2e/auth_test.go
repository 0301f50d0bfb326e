package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

const authPlain = "AUTH PLAIN AGFsaWNlAHNlY3JldA=="

// behaviour.md#auth: with Skip: authenticated, a client the upstream answered 235
// to sends its DATA straight to the upstream: the upstream's 354, no
// filter, no Header; the end-of-data rules still hold (behaviour.md#data).
func TestSkipAuthenticated(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: authExts, LaxDot: true},
		"FilterCommand: "+f.Cmd, "Skip: authenticated", "Header: X-Filtered: yes")
	withHeader := strings.Replace(msg1, "\r\n\r\n", "\r\nX-Filtered: yes\r\n\r\n", 1)
	up354 := smtptest.ReplyData
	login := []step{s("AUTH LOGIN", "334 VXNlcm5hbWU6"), s("YWxpY2U=", "334 UGFzc3dvcmQ6"), s("c2VjcmV0", smtptest.ReplyAuthOK)}
	skipped := func(body, final string) []step {
		return []step{
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
			s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
			s("DATA", up354), raw(body+".\r\n", final),
		}
	}
	none := func(t *testing.T, runs []filterRun) {
		if len(runs) != 0 {
			t.Errorf("the filter ran %d times for an authenticated client", len(runs))
		}
	}
	h.runDialogs(t, f, []dialog{
		{name: "n01 AUTH PLAIN", steps: cat([]step{s(authPlain, smtptest.ReplyAuthOK)}, skipped(msg1, qd1)),
			up: []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}, check: none},
		{name: "AUTH LOGIN with 334 steps", steps: cat(login, skipped(msg1, qd1)),
			up:        []string{"AUTH LOGIN\r\n", "YWxpY2U=\r\n", "c2VjcmV0\r\n", cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1)}, check: none},
		{name: "AUTH PLAIN without initial response", steps: cat([]step{s("AUTH PLAIN", "334 "), s("AGFsaWNlAHNlY3JldA==", smtptest.ReplyAuthOK)}, skipped(msg1, qd1)),
			up:        []string{"AUTH PLAIN\r\n", "AGFsaWNlAHNlY3JldA==\r\n", cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1)}, check: none},
		{name: "authenticated for the rest of the connection", steps: cat([]step{s(authPlain, smtptest.ReplyAuthOK)}, skipped(msg1, qd1), skipped(msg2, qd2)),
			up:        []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA, cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1), txn(msg2)}, check: none},
		// behaviour.md#data on the skip path: normalised, stuffing kept, one message (n05).
		{name: "bare LF normalised", steps: cat([]step{s(authPlain, smtptest.ReplyAuthOK)}, skipped("Subject: lf\n\nline1\r\n..dot\r\n", qd1)),
			up: []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn("Subject: lf\r\n\r\nline1\r\n..dot\r\n")}, check: none},
		{name: "n05 smuggling", steps: cat([]step{s(authPlain, smtptest.ReplyAuthOK)}, skipped(smuggle, qd1), []step{s("NOOP", smtptest.ReplyNoop)}),
			up: []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA, cNOOP},
			delivered: []smtptest.Transaction{txn("Subject: legit\r\n\r\nlegit body\r\n\r\nMAIL FROM:<mallory@example.com>\r\n" +
				"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")}, check: none},
		// Unauthenticated clients are filtered, with the Header (n02, n03).
		{name: "n02 no AUTH", steps: mailSteps(msg1, qd1), up: []string{cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(withHeader)}, check: inputIs(msg1)},
		{name: "AUTH cancelled", steps: cat([]step{s("AUTH LOGIN", "334 VXNlcm5hbWU6"), s("*", smtptest.ReplyAuthAbort)}, mailSteps(msg1, qd1)),
			up: []string{"AUTH LOGIN\r\n", "*\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(withHeader)}, check: inputIs(msg1)},
		// A bad response line cancels the exchange rather than being relayed.
		{name: "AUTH response with NUL", steps: cat([]step{s("AUTH LOGIN", "334 VXNlcm5hbWU6"), raw("YW\x00xp\r\n", smtptest.ReplyAuthAbort)}, mailSteps(msg1, qd1)),
			up: []string{"AUTH LOGIN\r\n", "*\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(withHeader)}, check: inputIs(msg1)},
	})
}

// behaviour.md#auth (n03): an AUTH the upstream refuses does not authenticate.
func TestSkipAuthRefused(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: authExts, RejectAuth: true}, "FilterCommand: "+f.Cmd, "Skip: authenticated")
	h.runDialogs(t, f, []dialog{{name: "n03", steps: cat([]step{s(authPlain, smtptest.ReplyAuthNo)}, mailSteps(msg1, qd1)),
		up: []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}, check: inputIs(msg1)}})
}

// behaviour.md#auth (n04): Skip: authenticated with FilterType reject: an authenticated
// client may send; others may not.
func TestSkipAuthWithRejectType(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Extensions: authExts}, "FilterType: reject", "Skip: authenticated")
	h.runDialogs(t, nil, []dialog{
		{name: "n04 authenticated", steps: cat([]step{s("AUTH LOGIN", "334 VXNlcm5hbWU6"), s("YWxpY2U=", "334 UGFzc3dvcmQ6"), s("c2VjcmV0", smtptest.ReplyAuthOK),
			s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK), s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
			s("DATA", smtptest.ReplyData), raw(msg1+".\r\n", qd1)}),
			up:        []string{"AUTH LOGIN\r\n", "YWxpY2U=\r\n", "c2VjcmV0\r\n", cMAIL, cRCPT, cDATA},
			delivered: []smtptest.Transaction{txn(msg1)}},
		{name: "not authenticated", steps: []step{s("MAIL FROM:<alice@example.com>", "530 Email Rejected"), s("DATA", "530 Email Rejected")},
			up: []string{cRSET}, delivered: []smtptest.Transaction{}},
	})
}

// g07: without Skip, AUTH is only relayed; the message is filtered.
func TestAuthPassThrough(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: authExts}, "FilterCommand: "+f.Cmd)
	h.runDialogs(t, f, []dialog{{name: "g07", steps: cat([]step{s(authPlain, smtptest.ReplyAuthOK)}, mailSteps(msg1, qd1)),
		up: []string{authPlain + "\r\n", cMAIL, cRCPT, cDATA}, delivered: []smtptest.Transaction{txn(msg1)}, check: inputIs(msg1)}})
}

// The skip path refuses what the filtered path refuses, after reading the
// message to its end; the upstream never gets a complete message.
func TestSkipRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, conf, body, code string }{
		{"bare LF rejected", "bare_line_endings: reject", "Subject: lf\n\nx\n", "554"},
		{"too big", "max_message_size: 50", strings.Repeat("x", 100) + "\r\n", "552"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, smtptest.Config{Extensions: authExts}, "FilterCommand: cat", "Skip: authenticated", tc.conf)
			c := h.hello(t)
			c.CmdLine(authPlain, smtptest.ReplyAuthOK)
			c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
			c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
			c.CmdLine("DATA", smtptest.ReplyData)
			c.Write([]byte(tc.body + "RCPT TO:<evil@example.com>\r\n.\r\n"))
			got := smtptest.Lines(c.ReadAll(10 * time.Second))
			// One refusal; a 421 may follow, as the upstream transaction
			// could only be aborted by closing its connection.
			if len(got) < 1 || len(got) > 2 || !strings.HasPrefix(got[0], tc.code+" ") || strings.Contains(got[0], "upstream") ||
				len(got) == 2 && !strings.HasPrefix(got[1], "421 ") {
				t.Fatalf("client got %q, expected one %s reply of the edge's own", got, tc.code)
			}
			ss := h.sessions(t)
			if len(ss) != 1 || len(ss[0].Messages()) != 0 {
				t.Fatalf("upstream: %v", describeSessions(ss))
			}
			for _, c := range ss[0].Commands {
				if strings.Contains(c, "evil") {
					t.Errorf("message content reached the upstream as a command: %q", c)
				}
			}
		})
	}
}
