package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// Issue 6, item 1: commands hidden behind whitespace. Whatever the client
// writes, the envelope the filter sees is the envelope the upstream
// received (the recording upstream stands in for Postfix here;
// postfix_test.go runs the same idea against a real one).
func TestHiddenCommands(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: xclientExts}, "FilterCommand: "+f.Cmd, "XClient: on")
	ok := func(line string, want string) step { return s(line, want) }
	tests := []dialog{
		{name: "XCLIENT behind a tab", steps: []step{s("XCLIENT\tADDR=10.9.9.9", "!554 ")}, up: []string{"XCLIENT ADDR=127.0.0.1\r\n", cEHLO}},
		{name: "XCLIENT behind a space", steps: []step{s(" XCLIENT ADDR=10.9.9.9", "!554 ")}, up: []string{"XCLIENT ADDR=127.0.0.1\r\n", cEHLO}},
		{name: "RSET, MAIL and RCPT behind whitespace",
			steps: []step{
				ok("MAIL FROM:<trusted@corp.test>", smtptest.ReplySenderOK),
				ok("RCPT TO:<user@local.test>", smtptest.ReplyRcptOK),
				ok(" RSET", smtptest.ReplyReset),
				ok("MAIL\tFROM:<spammer@evil.test>", smtptest.ReplySenderOK),
				ok("RCPT\tTO:<hidden@local.test>", smtptest.ReplyRcptOK),
				ok("\trcpt to:<user@local.test>", smtptest.ReplyRcptOK),
				s("DATA", own354),
				raw(msg1+".\r\n", qd1),
			},
			up: []string{"XCLIENT ADDR=127.0.0.1\r\n", cEHLO, "MAIL FROM:<trusted@corp.test>\r\n", "RCPT TO:<user@local.test>\r\n", cRSET,
				"MAIL FROM:<spammer@evil.test>\r\n", "RCPT TO:<hidden@local.test>\r\n", "rcpt to:<user@local.test>\r\n", cDATA},
			delivered: []smtptest.Transaction{msg("<spammer@evil.test>", []string{"<hidden@local.test>", "<user@local.test>"}, msg1)},
			check:     envIs(h, e("spammer@evil.test", "hidden@local.test\nuser@local.test"))},
		{name: "paths the upstream could read otherwise are refused",
			steps: []step{
				s("MAIL FROM:<a@b", "!501 5.1.7"),
				s("MAIL FROM:<a@b>x", "!501 5.1.7"),
				s("MAIL FROM:", "!501 5.5.4"),
				s("MAIL FROM:<s@evil.test> <t@evil.test>", "!501 5.5.4"),
				ok("MAIL FROM:<s@evil.test>", smtptest.ReplySenderOK),
				s("RCPT TO:<a@local.test>,<b@outside.test>", "!501 5.1.3"),
				s("RCPT TO:<a@local.test> <b@outside.test>", "!501 5.5.4"),
				s("RCPT TO:<a b@local.test>", "!501 5.1.3"),
				s("RCPT TO:<a@local.test> NOTIFY=", "!501 5.5.4"),
				ok(`RCPT TO:<"a>b"@local.test>`, smtptest.ReplyRcptOK),
				ok("RCPT TO:<@relay.test:c@local.test>", smtptest.ReplyRcptOK),
				s("DATA", own354),
				raw(msg1+".\r\n", qd1),
			},
			up: []string{"XCLIENT ADDR=127.0.0.1\r\n", cEHLO, "MAIL FROM:<s@evil.test>\r\n", "RCPT TO:<\"a>b\"@local.test>\r\n",
				"RCPT TO:<c@local.test>\r\n", cDATA},
			check: envIs(h, e("s@evil.test", "\"a>b\"@local.test\nc@local.test"))},
		{name: "control characters refuse the whole line",
			steps: []step{raw("\x0bRSET\r\n", "!500 "), raw("NOOP \x1b[1m\r\n", "!500 "), ok("NOOP", smtptest.ReplyNoop)},
			up:    []string{"XCLIENT ADDR=127.0.0.1\r\n", cEHLO, cNOOP}},
	}
	for _, d := range tests {
		// Each dialog is a new connection: XCLIENT goes first every time.
		t.Run(d.name, func(t *testing.T) {
			m := h.mark(t, f)
			c := h.dial(t)
			c.CmdExpect("EHLO client.example", 250)
			runSteps(t, c, d.steps, m.sessions+1)
			c.CmdLine("QUIT", smtptest.ReplyBye)
			h.commandsSince(t, m, append(append([]string{cEHLO}, d.up...), cQUIT)...)
			if d.delivered != nil {
				h.deliveredSince(t, m, d.delivered...)
			}
			if d.check != nil {
				d.check(t, f.runsSince(t, m))
			}
		})
	}
}

// Issue 6, item 3: XFORWARD is believed only from xforward.trusted; from
// anyone else it is neither offered, relayed nor put into the filter's
// environment.
func TestXForwardUntrusted(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{Extensions: xfwdExts}, "FilterCommand: "+f.Cmd, "xforward.trusted: 192.0.2.0/24")
	m := h.mark(t, f)
	c := h.dial(t)
	rep := c.CmdExpect("EHLO client.example", 250)
	if strings.Contains(rep.String(), "XFORWARD") {
		t.Errorf("XFORWARD offered to an untrusted client: %q", rep.String())
	}
	c.CmdExpect("XFORWARD ADDR=10.9.9.9 HELO=forged.example", 550)
	c.CmdExpect("XFORWARD\tADDR=10.9.9.9", 550)
	sendAlice(t, c, msg1, strings.ReplaceAll(qd1, "{S}", "1"))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commandsSince(t, m, cEHLO, cMAIL, cRCPT, cDATA, cQUIT)
	env := h.baseEnv()
	checkEnv(t, f.one(t, m), env) // no REMOTE, no REMOTE_HELO
}

// The default trusts loopback: a Postfix before-queue set-up on the same
// host keeps working (TestXForward covers the rest).
func TestXForwardTrustedByDefault(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Extensions: xfwdExts}, "FilterCommand: cat")
	c := h.dial(t)
	rep := c.CmdExpect("EHLO client.example", 250)
	if !strings.Contains(rep.String(), "XFORWARD NAME ADDR PROTO HELO") {
		t.Errorf("XFORWARD not offered to a loopback client: %q", rep.String())
	}
	c.CmdLine("XFORWARD ADDR=192.0.2.1", smtptest.ReplyXFwdOK)
	c.CmdLine("QUIT", smtptest.ReplyBye)
}

// Issue 6, item 4: one address may not hold every session.
func TestConnectionsPerClient(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "max_connections_per_client: 2", "client_limit_exceptions: none")
	c1, c2 := h.dial(t), h.dial(t)
	c3 := h.dialRaw(t)
	if rep := c3.Read(); !strings.HasPrefix(rep.Line(), "421 4.7.0 Error: too many connections from 127.0.0.1") {
		t.Fatalf("third connection: %q", rep.String())
	}
	c3.ExpectEOF(5 * time.Second)
	c1.CmdLine("QUIT", smtptest.ReplyBye)
	c1.ExpectEOF(5 * time.Second)
	// The slot is free again once the session ended.
	waitFor(t, func() bool {
		c := h.dialRaw(t)
		defer c.Close()
		return strings.HasPrefix(c.Read().Line(), "220 ")
	})
	c2.CmdLine("QUIT", smtptest.ReplyBye)
}

// Loopback is exempt by default: a local MTA opens all its connections
// from one address.
func TestConnectionsPerClientExempt(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "max_connections_per_client: 1")
	c1, c2 := h.dial(t), h.dial(t)
	c1.CmdLine("QUIT", smtptest.ReplyBye)
	c2.CmdLine("QUIT", smtptest.ReplyBye)
}

// Issue 6, item 4: TimeOut bounds each read, command_deadline the whole
// line: a client trickling a byte at a time is cut off.
func TestCommandDeadline(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "command_deadline: 1s")
	c := h.hello(t)
	// The deadline counts from a command's first byte: waiting is
	// TimeOut's business.
	time.Sleep(1500 * time.Millisecond)
	c.CmdLine("NOOP", smtptest.ReplyNoop)
	started := time.Now()
	for _, b := range []byte("NOOP trickle trickle trickle\r\n") {
		if c.TryWrite([]byte{b}) != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
		if time.Since(started) > 3*time.Second {
			break
		}
	}
	rep := c.Read()
	if !strings.HasPrefix(rep.Line(), "421 4.4.2 "+edgeHost+" Error: command deadline exceeded") {
		t.Fatalf("got %q", rep.String())
	}
	c.ExpectEOF(5 * time.Second)
	waitFor(t, func() bool { return h.logs.contains("client exceeded the command deadline") })
}

// Issue 6, item 4: data_deadline bounds the message, extended by
// data_min_rate for every byte: a trickle is cut off, a steady sender is
// not, however long it sends.
func TestDataDeadline(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "data_deadline: 1s", "data_min_rate: 20KiB")

	// Steady: 4 KiB every 100 ms (40 KiB/s) for 2.5 s, past data_deadline.
	c := h.hello(t)
	c.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	c.CmdExpect("RCPT TO:<bob@example.com>", 250)
	c.CmdExpect("DATA", 354)
	c.Write([]byte("Subject: steady\r\n\r\n"))
	line := strings.Repeat("x", 1022) + "\r\n"
	for i := 0; i < 25; i++ {
		c.Write([]byte(strings.Repeat(line, 4)))
		time.Sleep(100 * time.Millisecond)
	}
	c.Write([]byte(".\r\n"))
	if rep := c.Read(); rep.Code != 250 {
		t.Fatalf("steady sender: %q", rep.String())
	}
	c.CmdLine("QUIT", smtptest.ReplyBye)

	// Trickle: a byte every 200 ms.
	m := h.mark(t, f)
	c = h.hello(t)
	c.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	c.CmdExpect("RCPT TO:<bob@example.com>", 250)
	c.CmdExpect("DATA", 354)
	started := time.Now()
	for _, b := range []byte(msg1 + ".\r\n") {
		if c.TryWrite([]byte{b}) != nil || time.Since(started) > 4*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep := c.Read()
	if !strings.HasPrefix(rep.Line(), "421 4.4.2 "+edgeHost+" Error: data deadline exceeded") {
		t.Fatalf("trickle: %q", rep.String())
	}
	c.ExpectEOF(5 * time.Second)
	if runs := f.runsSince(t, m); len(runs) != 0 {
		t.Errorf("the filter ran %d times on a message cut off", len(runs))
	}
	h.deliveredSince(t, m) // nothing
	waitFor(t, func() bool { return h.logs.contains("status=DEADLINE") })
}

// Issue 6, item 9: no more than recipient_limit recipients per message;
// the rest get 452 4.5.3 and never reach the upstream.
func TestRecipientLimit(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "recipient_limit: 3")
	m := h.mark(t, f)
	c := h.hello(t)
	c.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	var want []string
	for i := 1; i <= 5; i++ {
		r := "r" + string(rune('0'+i)) + "@example.com"
		rep := c.Cmd("RCPT TO:<" + r + ">")
		switch {
		case i <= 3 && rep.Code == 250:
			want = append(want, r)
		case i > 3 && rep.Line() == "452 4.5.3 Error: too many recipients":
		default:
			t.Fatalf("recipient %d: %q", i, rep.String())
		}
	}
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1 + ".\r\n"))
	c.Expect(250)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.deliveredSince(t, m, msg("<alice@example.com>", []string{"<r1@example.com>", "<r2@example.com>", "<r3@example.com>"}, msg1))
	if run := f.one(t, m); run.Env["RECIPIENTS"] != strings.Join(want, "\n") {
		t.Errorf("RECIPIENTS %q", run.Env["RECIPIENTS"])
	}
}

// Issue 6, item 10: SIZE advertises the smaller of the upstream's limit
// and max_message_size, and a declared size above it is refused at MAIL.
func TestSizeLimit(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "max_message_size: 1000")
	m := h.mark(t, nil)
	c := h.dial(t)
	rep := c.CmdExpect("EHLO client.example", 250)
	if !slices.Contains(rep.Lines, "250-SIZE 1000") {
		t.Errorf("EHLO reply %q, want SIZE 1000", rep.String())
	}
	c.CmdLine("MAIL FROM:<alice@example.com> SIZE=1001", "552 5.3.4 Message size exceeds fixed limit")
	c.CmdExpect("MAIL FROM:<alice@example.com> SIZE=1000", 250)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commandsSince(t, m, cEHLO, "MAIL FROM:<alice@example.com> SIZE=1000\r\n", cQUIT)
}

// Issue 6, item 15: a session ends after hard_error_limit errors.
func TestHardErrorLimit(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "hard_error_limit: 3")
	c := h.hello(t)
	c.CmdExpect("XCLIENT ADDR=1.2.3.4", 554)
	c.CmdExpect("MAIL FROM:<a@b", 501)
	// A delivered message clears the count.
	sendAlice(t, c, msg1, strings.ReplaceAll(qd1, "{S}", "1"))
	c.CmdExpect("XCLIENT ADDR=1.2.3.4", 554)
	c.CmdExpect("MAIL FROM:<a@b", 501)
	c.CmdExpect("FOOBAR", 502) // the upstream's refusal counts too
	if rep := c.Cmd("NOOP"); rep.Line() != "421 4.7.0 "+edgeHost+" Error: too many errors" {
		t.Fatalf("after 3 errors: %q", rep.String())
	}
	c.ExpectEOF(5 * time.Second)
}

// Issue 6, item 15: a client that talks before the greeting is refused.
func TestEarlyTalker(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{GreetingDelay: 300 * time.Millisecond}, "FilterCommand: cat")
	c := h.dialRaw(t)
	c.Write([]byte("EHLO early.example\r\n"))
	if rep := c.Read(); rep.Line() != "554 5.5.1 Error: talked before the greeting" {
		t.Fatalf("early talker: %q", rep.String())
	}
	c.ExpectEOF(5 * time.Second)
	// Waiting for the greeting is all it takes.
	c = h.dial(t)
	c.CmdExpect("EHLO patient.example", 250)
	c.CmdLine("QUIT", smtptest.ReplyBye)
}

// reject_early_talkers: off lets them be (proxsmtpd's behaviour).
func TestEarlyTalkerAllowed(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{GreetingDelay: 300 * time.Millisecond}, "FilterCommand: cat", "reject_early_talkers: off")
	c := h.dialRaw(t)
	c.Write([]byte("EHLO early.example\r\n"))
	c.ExpectLine("220 " + edgeHost + " ESMTP")
	c.Expect(250)
	c.CmdLine("QUIT", smtptest.ReplyBye)
}

// Issue 6, item 15: NUL bytes in DATA are refused by default (a filter
// that stops reading at a NUL would miss what follows), kept on request.
func TestNULInData(t *testing.T) {
	t.Parallel()
	body := "Subject: nul\r\n\r\nclean\x00EICAR-hidden\r\n"
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	m := h.mark(t, f)
	c := h.hello(t)
	sendAlice(t, c, body, "554 5.6.0 Message contains NUL bytes")
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.deliveredSince(t, m)
	if runs := f.runsSince(t, m); len(runs) != 0 {
		t.Errorf("filter ran on a refused message")
	}

	k := start(t, smtptest.Config{}, "FilterCommand: cat", "nul_bytes: keep")
	c = k.hello(t)
	sendAlice(t, c, body, strings.ReplaceAll(qd1, "{S}", "1"))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	k.delivered(t, txn(body))
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Issue 6, item 9: every envelope the edge accepts can be filtered. A
// thousand long recipients do not fit one environment variable (Linux
// refuses strings over 128 KiB with E2BIG): RECIPIENTS then holds those
// that fit and RECIPIENTS_FILE names a file with all of them. The summary
// line names the first 50.
func TestManyRecipients(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `[ -n "$RECIPIENTS_FILE" ] && cp "$RECIPIENTS_FILE" "$d/rcpts"; cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	m := h.mark(t, f)
	c := h.hello(t)
	c.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	var all []string
	for i := 0; i < 1000; i++ {
		r := fmt.Sprintf("r%04d-%s@example.com", i, strings.Repeat("x", 230))
		c.CmdExpect("RCPT TO:<"+r+">", 250)
		all = append(all, r)
	}
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1 + ".\r\n"))
	c.Expect(250)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	run := f.one(t, m)
	inEnv := strings.Split(run.Env["RECIPIENTS"], "\n")
	if len(inEnv) == 0 || len(inEnv) >= len(all) || !slices.Equal(inEnv, all[:len(inEnv)]) {
		t.Errorf("RECIPIENTS holds %d recipients, not a prefix of the %d", len(inEnv), len(all))
	}
	file, err := os.ReadFile(filepath.Join(run.Dir, "rcpts"))
	if err != nil {
		t.Fatalf("RECIPIENTS_FILE: %v (env %q)", err, run.Env["RECIPIENTS_FILE"])
	}
	if got := strings.Split(strings.TrimSuffix(string(file), "\n"), "\n"); !slices.Equal(got, all) {
		t.Errorf("RECIPIENTS_FILE holds %d recipients, want all %d in order", len(got), len(all))
	}
	lines := h.logs.waitMessageLines(t, m, 1)
	_, to, _ := strings.Cut(lines[0], ` to="[`)
	to, _, _ = strings.Cut(to, `]"`)
	if n := len(strings.Fields(to)); n != 50 || strings.Count(lines[0], " to=") != 1 || !strings.Contains(lines[0], "to_more=950") {
		t.Errorf("summary line names %d recipients: %.300q", n, lines[0])
	}
}

// Issue 6, item 9: with the real embedded server (max_payload 1 MiB), a
// recipient_limit whose jobs would not fit stops the edge at start-up.
func TestRecipientLimitOverMaxPayload(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "proxsmtpd.conf")
	conf := "Listen: 127.0.0.1:10025\nOutAddress: 127.0.0.1:25\nTempDirectory: " + t.TempDir() + "\nrecipient_limit: 20000\n"
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Edge, []string{"-f", file, "--data-dir", t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.Port = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := edge.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		e.Shutdown(ctx)
		t.Fatal("the edge started with recipient_limit 20000 and a 1 MiB max_payload")
	}
	if !strings.HasPrefix(err.Error(), "recipient_limit: ") {
		t.Errorf("start-up error %q does not name recipient_limit", err)
	}
}
