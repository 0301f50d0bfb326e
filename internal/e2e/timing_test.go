package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// collapseNOOPs turns each run of NOOPs into one, as the compat harness
// does: how many keep-alives fit in a pause is not the contract.
func collapseNOOPs(cmds []string) []string {
	var out []string
	for _, c := range cmds {
		if c == cNOOP && len(out) > 0 && out[len(out)-1] == cNOOP {
			continue
		}
		out = append(out, c)
	}
	return out
}

// behaviour.md#timeouts: KeepAlives sends NOOPs to the idle upstream while the
// client sends the message (l01) and while the filter runs (l02); their
// replies never reach the client; none without KeepAlives (l03).
func TestKeepAlives(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		keepAlive string
		filter    string // tail of the dump filter
		pause     time.Duration
		noop      bool
	}{
		{"l01 slow client", "1", `cat "$d/input"`, 2500 * time.Millisecond, true},
		{"l02 slow filter", "1", `sleep 2.5; cat "$d/input"`, 0, true},
		{"l03 off", "0", `cat "$d/input"`, 2500 * time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFilter(t, tc.filter)
			h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "KeepAlives: "+tc.keepAlive)
			c := h.hello(t)
			c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
			c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
			c.CmdExpect("DATA", 354)
			c.Write([]byte("Subject: slow\r\n\r\nfirst\r\n"))
			time.Sleep(tc.pause)
			c.Write([]byte("second\r\n.\r\n"))
			c.ExpectLine(smtptest.Queued(1, 1))
			c.CmdLine("NOOP", smtptest.ReplyNoop) // the next reply is this one's
			c.CmdLine("QUIT", smtptest.ReplyBye)
			ss := h.sessions(t)
			want := []string{cEHLO, cMAIL, cRCPT, cDATA, cNOOP, cQUIT}
			if tc.noop {
				want = []string{cEHLO, cMAIL, cRCPT, cNOOP, cDATA, cNOOP, cQUIT}
			}
			eqLines(t, "upstream commands (NOOP runs collapsed)", collapseNOOPs(ss[0].Commands), want)
			h.delivered(t, txn("Subject: slow\r\n\r\nfirst\r\nsecond\r\n"))
		})
	}
}

// The per-message log line: client, id, from, every to, status; one per
// DATA attempt.
func TestMessageLog(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^RCPT TO:<carol@`, Reply: []string{"550 5.1.1 upstream: no"}},
	}}, "FilterCommand: "+f.Cmd)
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
	c.CmdLine("RCPT TO:<carol@example.com>", "550 5.1.1 upstream: no")
	c.CmdLine("RCPT TO:<dave@example.com>", smtptest.ReplyRcptOK)
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1 + ".\r\n"))
	c.ExpectLine(smtptest.Queued(1, 1))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	line := h.logs.waitMessageLines(t, mark{}, 1)[0]
	for _, want := range []string{" client=127.0.0.1", " from=alice@example.com ", ` to="[bob@example.com dave@example.com]" `, " status=FILTERED", " id="} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "carol") {
		t.Errorf("log line %q names the refused recipient", line)
	}
}
