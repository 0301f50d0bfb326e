package e2e

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/d--j/go-milter"

	"github.com/sluice-mail/sluice/internal/miltertest"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// Issue 11: milters on the edge's in-process workers, after the
// FilterCommand. The milter sees the message as the FilterCommand left
// it; the upstream gets both changes; a milter's reject reaches the
// client with the milter's own reply, and nothing is delivered.
func TestMilterAfterFilterCommand(t *testing.T) {
	signer := &miltertest.Peer{
		Rcpt: func(rcpt string) *milter.Response {
			if rcpt == "spam-trap@example.com" {
				r, _ := milter.RejectWithCodeAndReason(550, "5.7.1 Spam trap hit")
				return r
			}
			return nil
		},
		EOM: func(m milter.Modifier) (*milter.Response, error) {
			return milter.RespAccept, m.AddHeader("X-Signed", "by the test milter")
		},
	}
	h := startEdge(t, smtptest.Config{}, newLogSink(t),
		`FilterCommand: printf 'X-Filtered: yes\r\n'; cat`,
		"filter.milters: "+miltertest.Start(t, signer),
	)
	c := h.hello(t)
	if rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, "Subject: hi\r\n\r\nbody\r\n"); rep.Code != 250 {
		t.Fatalf("final reply %q", rep.String())
	}
	c.CmdExpect("QUIT", 221)
	want := smtptest.Transaction{Mail: "<alice@example.com>", Rcpts: []string{"<bob@example.com>"}}
	got := h.delivered(t, want)
	data := string(got[0].Data)
	if !strings.HasPrefix(data, "X-Filtered: yes\r\n") || !strings.Contains(data, "Subject: hi\r\nX-Signed: by the test milter\r\n\r\nbody\r\n") {
		t.Errorf("delivered:\n%q", data)
	}
	if seen := strings.Join(signer.Lines(), "\n"); !strings.Contains(seen, "header X-Filtered: yes") {
		t.Errorf("the milter did not see the FilterCommand's header:\n%s", seen)
	}

	c = h.hello(t)
	rep := sendMail(c, "<alice@example.com>", []string{"<spam-trap@example.com>"}, "Subject: buy\r\n\r\nnow\r\n")
	if rep.Line() != "550 5.7.1 Spam trap hit" {
		t.Errorf("reply %q, want the milter's 550 5.7.1 Spam trap hit", rep.String())
	}
	c.CmdExpect("QUIT", 221)
	h.delivered(t, want) // still only the first
}

// A milter's changed envelope is what the upstream gets: the client's
// XFORWARD again after a RSET, MAIL with the new sender and the client's
// parameters (but SIZE), RCPT for each new recipient. A recipient the
// upstream refuses refuses the message, with the upstream's reply, and
// nothing is delivered.
func TestMilterChangesTheEnvelope(t *testing.T) {
	var n atomic.Int32
	peer := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if err := m.ChangeFrom("<bounces@example.com>", ""); err != nil {
			return nil, err
		}
		add := "<archive@example.com>"
		if n.Add(1) == 2 {
			add = "<archive-full@example.com>"
		}
		return milter.RespAccept, m.AddRecipient(add, "")
	}}
	up := smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^RCPT TO:<archive-full@example\.com>`, Reply: []string{"552 5.2.2 upstream: mailbox full"}},
	}}
	h := startEdge(t, up, newLogSink(t), "filter.milters: "+miltertest.Start(t, peer))
	c := h.hello(t)
	send := func() smtptest.Reply {
		c.CmdExpect("MAIL FROM:<alice@example.com> BODY=8BITMIME SIZE=40", 250)
		c.CmdExpect("RCPT TO:<bob@example.com>", 250)
		c.CmdLine("DATA", "354 Start mail input; end with <CRLF>.<CRLF>")
		c.Write([]byte("Subject: hi\r\n\r\nbody\r\n.\r\n"))
		return c.Read()
	}
	if rep := send(); rep.Code != 250 {
		t.Fatalf("final reply %q", rep.String())
	}
	if rep := send(); rep.Line() != "552 5.2.2 upstream: mailbox full" {
		t.Errorf("a recipient the milter added and the upstream refused: %q, want the upstream's 552", rep.String())
	}
	c.CmdExpect("QUIT", 221)
	ss := h.sessions(t)
	joined := strings.Join(ss[0].Commands, "")
	want := "RSET\r\nMAIL FROM:<bounces@example.com> BODY=8BITMIME\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<archive@example.com>\r\nDATA\r\n"
	if !strings.Contains(joined, want) {
		t.Errorf("upstream commands:\n%s\nwant the new envelope:\n%s", joined, want)
	}
	if tx := ss[0].Transactions; len(tx) != 1 || tx[0].Mail != "<bounces@example.com> BODY=8BITMIME" ||
		strings.Join(tx[0].Rcpts, " ") != "<bob@example.com> <archive@example.com>" {
		t.Errorf("upstream transactions: %+v, want one, to the new envelope", tx)
	}
}
