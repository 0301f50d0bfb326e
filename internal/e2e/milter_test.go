package e2e

import (
	"strings"
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
			if rcpt == "<spam-trap@example.com>" {
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
