package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// behaviour.md#connection: the upstream is connected, and has greeted, before the client
// is greeted; a single-line 220 becomes the edge's own.
func TestGreetingAfterUpstream(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{GreetingDelay: 300 * time.Millisecond}, "FilterCommand: cat")
	c := h.dialRaw(t)
	rep := c.Read()
	if rep.String() != "220 "+edgeHost+" ESMTP" {
		t.Fatalf("greeting %q", rep.String())
	}
	ss := h.up.Sessions()
	if len(ss) != 1 || !ss[0].Greeted {
		t.Fatalf("client greeted before the upstream greeted: %v", describeSessions(ss))
	}
	c.CmdLine("QUIT", smtptest.ReplyBye)
	c.ExpectEOF(5 * time.Second)
	h.commands(t, cQUIT)
}

// behaviour.md#connection: how the upstream's greeting reaches the client.
func TestGreetings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		greeting []string
		want     string
	}{
		// behaviour.md#connection (quirk): a multi-line 220 may be rewritten consistently.
		{"j04 multi-line 220 rewritten", []string{"220-upstream.example first line", "220 upstream.example second line"}, "220 " + edgeHost + " ESMTP"},
		// "220" alone is a 220 greeting too.
		{"bare 220", []string{"220"}, "220 " + edgeHost + " ESMTP"},
		// behaviour.md#connection: anything else passes verbatim and the session goes on.
		{"j03 554 relayed", []string{"554 5.3.2 upstream: not accepting mail"}, "554 5.3.2 upstream: not accepting mail"},
		{"421 relayed", []string{"421-4.3.2 upstream: busy", "421 4.3.2 upstream: come back later"}, "421-4.3.2 upstream: busy | 421 4.3.2 upstream: come back later"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, smtptest.Config{Greeting: tc.greeting}, "FilterCommand: cat")
			c := h.dialRaw(t)
			if got := c.Read().String(); got != tc.want {
				t.Fatalf("greeting %q, expected %q", got, tc.want)
			}
			if strings.HasPrefix(tc.want, "421") {
				// behaviour.md#other: the upstream is closing; so is the edge.
				c.ExpectEOF(5 * time.Second)
				return
			}
			c.CmdLine("EHLO client.example", ehloReplyFor(h))
			c.CmdLine("QUIT", smtptest.ReplyBye)
			h.commands(t, cEHLO, cQUIT)
		})
	}
}

// behaviour.md#connection: nothing listens at OutAddress: 421 4.4.1, then close.
func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "OutAddress: 127.0.0.1:"+itoa(closedPort(t)))
	for range 2 { // and the edge keeps serving
		c := h.dialRaw(t)
		got := smtptest.Lines(c.ReadAll(5 * time.Second))
		if len(got) != 1 || !strings.HasPrefix(got[0], "421 4.4.1 ") || strings.Contains(got[0], "upstream") {
			t.Fatalf("client got %q, expected one 421 4.4.1 line then EOF", got)
		}
	}
	if n := len(h.up.Sessions()); n != 0 {
		t.Fatalf("the recording upstream (not configured) saw %d sessions", n)
	}
}

// behaviour.md#connection: an upstream that accepts but never greets: after TimeOut the client
// is closed (a 421 first is allowed, a 220 is not).
func TestUpstreamSilent(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Silent: true}, "FilterCommand: cat", "TimeOut: 1")
	c := h.dialRaw(t)
	got := smtptest.Lines(c.ReadAll(10 * time.Second))
	if len(got) > 1 || len(got) == 1 && !strings.HasPrefix(got[0], "421 ") {
		t.Fatalf("client got %q, expected EOF, or a 421 then EOF", got)
	}
	ss := h.sessions(t)
	if len(ss) != 1 {
		t.Fatalf("upstream sessions: %v", describeSessions(ss))
	}
	if cmds := ss[0].Commands; len(cmds) > 1 || len(cmds) == 1 && cmds[0] != cQUIT {
		t.Fatalf("the silent upstream received %q", cmds)
	}
}

// behaviour.md#connection: MaxConnections: the third client gets 421 without the upstream
// being contacted; once the others are gone a new client is served.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "MaxConnections: 2")
	c1, c2 := h.dial(t), h.dial(t)
	c3 := h.dialRaw(t)
	if got := smtptest.Lines(c3.ReadAll(5 * time.Second)); len(got) != 1 || got[0] != "421 Server busy, too many connections" {
		t.Fatalf("third client got %q", got)
	}
	if n := len(h.up.Sessions()); n != 2 {
		t.Fatalf("the upstream saw %d sessions, expected 2", n)
	}
	c1.CmdLine("QUIT", smtptest.ReplyBye)
	c2.CmdLine("QUIT", smtptest.ReplyBye)
	c1.ExpectEOF(5 * time.Second)
	c2.ExpectEOF(5 * time.Second)
	// The slots are released as the sessions wind down: retry briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c4 := h.dialRaw(t)
		rep := c4.Read()
		if rep.String() == "220 "+edgeHost+" ESMTP" {
			c4.CmdLine("QUIT", smtptest.ReplyBye)
			break
		}
		if rep.String() != "421 Server busy, too many connections" || time.Now().After(deadline) {
			t.Fatalf("fourth client got %q", rep.String())
		}
		c4.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(h.sessions(t)); n != 3 {
		t.Fatalf("the upstream saw %d sessions, expected 3", n)
	}
}

// behaviour.md#connection: an idle client gets 421 4.4.2, the upstream QUIT.
func TestClientIdleTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "TimeOut: 1")
	c := h.hello(t)
	got := smtptest.Lines(c.ReadAll(10 * time.Second))
	if len(got) != 1 || !strings.HasPrefix(got[0], "421 4.4.2 ") || strings.Contains(got[0], "upstream") {
		t.Fatalf("idle client got %q, expected one 421 4.4.2 line then EOF", got)
	}
	h.commands(t, cEHLO, cQUIT)
}

// behaviour.md#connection inside a transaction: idle after RCPT is idle too.
func TestClientIdleTimeoutMidTransaction(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "TimeOut: 1")
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	got := smtptest.Lines(c.ReadAll(10 * time.Second))
	if len(got) != 1 || !strings.HasPrefix(got[0], "421 4.4.2 ") {
		t.Fatalf("idle client got %q, expected one 421 4.4.2 line then EOF", got)
	}
	h.commands(t, cEHLO, cMAIL, cQUIT)
	h.delivered(t)
}

// behaviour.md#timeouts: TimeOut also bounds waiting for the upstream's reply; the client
// gets one 4xx and the session ends.
func TestUpstreamReplyTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{{Match: `^VRFY`, Stall: true}}},
		"FilterCommand: cat", "TimeOut: 1")
	c := h.hello(t)
	c.Send("VRFY bob")
	got := smtptest.Lines(c.ReadAll(10 * time.Second))
	if len(got) != 1 || !strings.HasPrefix(got[0], "421 4.4.2 ") || strings.Contains(got[0], "upstream") {
		t.Fatalf("client got %q, expected one 421 4.4.2 line then EOF", got)
	}
	h.commands(t, cEHLO, "VRFY bob\r\n")
}

// behaviour.md#other (j05): the upstream answers 421 and closes: the client gets that
// reply, then EOF.
func TestUpstream421MidSession(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{
		{Match: `^MAIL`, Reply: []string{"421 4.3.2 upstream: shutting down"}, Close: true},
	}}, "FilterCommand: cat")
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", "421 4.3.2 upstream: shutting down")
	c.ExpectEOF(5 * time.Second)
	h.commands(t, cEHLO, cMAIL)
}

// behaviour.md#other: the upstream closes without a word: one 421 of the edge's own,
// then EOF.
func TestUpstreamVanishes(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Rules: []smtptest.Rule{{Match: `^NOOP`, Close: true}}}, "FilterCommand: cat")
	c := h.hello(t)
	c.Send("NOOP")
	got := smtptest.Lines(c.ReadAll(5 * time.Second))
	if len(got) != 1 || !strings.HasPrefix(got[0], "421 ") || strings.Contains(got[0], "upstream") {
		t.Fatalf("client got %q, expected one 421 of the edge's own, then EOF", got)
	}
	h.commands(t, cEHLO, cNOOP)
}

// behaviour.md#other (m01): OutAddress with a port only connects to the client's own
// address.
func TestLoopbackOutAddress(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	up := smtptest.NewServer(t, smtptest.Config{})
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "OutAddress: "+itoa(up.Port()))
	h.up = up // the configured upstream is the one that matters
	c := h.hello(t)
	sendAlice(t, c, msg1, smtptest.Queued(1, 1))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cMAIL, cRCPT, cDATA, cQUIT)
	h.delivered(t, txn(msg1))
	checkEnv(t, f.one(t, mark{}), h.baseEnv())
}

// The edge survives clients that vanish at every stage, and keeps
// serving.
func TestClientVanishes(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	for _, prefix := range []string{"", "EHLO client.example\r\n", "EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\n",
		"EHLO client.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
		"EHLO client.example\r\nNOOP"} {
		c := h.dial(t)
		c.Write([]byte(prefix))
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.up.WaitClosed(ctx); err != nil {
		t.Fatalf("upstream sessions left open: %v", describeSessions(h.up.Sessions()))
	}
	c := h.hello(t)
	sendAlice(t, c, msg1, smtptest.Queued(6, 1))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	if got := h.up.Messages(); len(got) != 1 {
		t.Fatalf("delivered %d messages, expected 1", len(got))
	}
}
