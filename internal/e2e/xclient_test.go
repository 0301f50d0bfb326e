package e2e

import (
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// behaviour.md#xclient: XCLIENT ADDR= is sent once, before the first command
// after EHLO, only when XClient is on and the upstream offers XCLIENT;
// after the upstream's new 220 the edge says EHLO again. The client never
// sees any of it.
func TestXClient(t *testing.T) {
	t.Parallel()
	const xc = "XCLIENT ADDR=127.0.0.1\r\n"
	tests := []struct {
		name  string
		on    bool
		up    smtptest.Config
		helo  string   // the client's greeting command
		pre   []string // upstream commands before it
		steps []string // client commands after it, each expecting the upstream's usual reply
		want  []string // upstream commands between the greeting and QUIT
		log   string   // a log line that must appear
	}{
		{name: "h01 offered, 220, EHLO again", on: true, up: smtptest.Config{Extensions: xclientExts},
			want: []string{xc, cEHLO, cMAIL, cRCPT, cDATA}},
		{name: "XCLIENT answered 250: no EHLO again", on: true,
			up:   smtptest.Config{Extensions: xclientExts, XClientReply: []string{"250 2.0.0 upstream: xclient ok"}},
			want: []string{xc, cMAIL, cRCPT, cDATA}},
		{name: "h04 XCLIENT refused", on: true,
			up:   smtptest.Config{Extensions: xclientExts, XClientReply: []string{"550 5.7.0 upstream: not authorized"}},
			want: []string{xc, cMAIL, cRCPT, cDATA}, log: "server didn't accept XCLIENT"},
		{name: "multi-line 220", on: true,
			up:   smtptest.Config{Extensions: xclientExts, XClientReply: []string{"220-upstream.example hello", "220 upstream.example again"}},
			want: []string{xc, cEHLO, cMAIL, cRCPT, cDATA}},
		{name: "before the first command, whatever it is", on: true, up: smtptest.Config{Extensions: xclientExts},
			steps: []string{"NOOP", "EHLO client.example", "NOOP"},
			want:  []string{xc, cEHLO, cNOOP, cEHLO, cNOOP, cMAIL, cRCPT, cDATA}},
		{name: "h03 not offered", on: true, want: []string{cMAIL, cRCPT, cDATA}},
		{name: "h05 off", up: smtptest.Config{Extensions: xclientExts}, want: []string{cMAIL, cRCPT, cDATA}},
		// Issue 6: a HELO client gets XCLIENT too, once the edge's own EHLO
		// found the upstream offers it; else the upstream would take the
		// client for the edge (proxsmtpd sends it blindly, h02).
		{name: "h02 HELO", on: true, up: smtptest.Config{Extensions: xclientExts}, helo: "HELO client.example",
			pre: []string{cEHLO, xc}, want: []string{cMAIL, cRCPT, cDATA}},
		{name: "HELO, not offered", on: true, helo: "HELO client.example",
			pre: []string{cEHLO}, want: []string{cMAIL, cRCPT, cDATA}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFilter(t, `cat "$d/input"`)
			conf := []string{"FilterCommand: " + f.Cmd}
			if tc.on {
				conf = append(conf, "XClient: on")
			}
			h := start(t, tc.up, conf...)
			c := h.dial(t)
			helo := tc.helo
			if helo == "" {
				helo = "EHLO client.example"
			}
			rep := c.CmdExpect(helo, 250)
			for _, l := range rep.Lines {
				if len(l) > 4 && l[4:] == "XCLIENT NAME ADDR PROTO HELO" {
					t.Errorf("XCLIENT advertised to the client: %q", rep.String())
				}
			}
			for _, st := range tc.steps {
				c.CmdExpect(st, 250)
			}
			sendAlice(t, c, msg1, smtptest.Queued(1, 1))
			sendAlice(t, c, msg2, smtptest.Queued(1, 2)) // once per connection
			c.CmdLine("QUIT", smtptest.ReplyBye)
			want := append(append(tc.pre, helo+"\r\n"), tc.want...)
			want = append(want, cMAIL, cRCPT, cDATA, cQUIT)
			h.commands(t, want...)
			h.delivered(t, txn(msg1), txn(msg2))
			env := h.baseEnv()
			checkEnv(t, f.runs(t)[0], env)
			if tc.log != "" && !h.logs.contains(tc.log) {
				t.Errorf("no log line with %q", tc.log)
			}
		})
	}
}

// Issue 6: with XClient on, a transaction needs a greeting first: XCLIENT
// goes with it, and without one the upstream would take the client for
// the edge.
func TestXClientNeedsGreeting(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Extensions: xclientExts}, "FilterCommand: cat", "XClient: on")
	c := h.dial(t)
	c.CmdLine("NOOP", smtptest.ReplyNoop)
	c.CmdLine("MAIL FROM:<alice@example.com>", "503 5.5.1 Error: send HELO/EHLO first")
	c.CmdLine("VRFY bob", "503 5.5.1 Error: send HELO/EHLO first")
	c.CmdExpect("EHLO client.example", 250)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cNOOP, cEHLO, "XCLIENT ADDR=127.0.0.1\r\n", cEHLO, cMAIL, cQUIT)
}

// XCLIENT is not sent for a client that only says EHLO and QUIT.
func TestXClientNotBeforeQuit(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Extensions: xclientExts}, "FilterCommand: cat", "XClient: on")
	c := h.hello(t)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cQUIT)
}
