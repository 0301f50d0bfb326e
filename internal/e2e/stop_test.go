package e2e

import (
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// Issue 7: the drain period bounds Shutdown whatever the upstream does.
// Before, a session whose upstream never greets held Shutdown for TimeOut
// (TimeOut: 20 and drain_timeout: 1s took 21.3 s).
func TestShutdownBoundedWhenTheUpstreamNeverGreets(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{Silent: true}, "TimeOut: 600")
	c := h.dialRaw(t)
	ctx := t.Context()
	if err := h.up.WaitFor(ctx, func(ss []smtptest.Session) bool { return len(ss) == 1 }); err != nil {
		t.Fatal(err)
	}
	done := shutdownAsync(t, h, time.Second)
	is421(t, smtptest.Lines(c.ReadAll(time.Minute)))
	wait(t, done, "Shutdown")
}

// A session still waiting for its verdict when the drain period ends is
// answered 4xx (the sender retries; nothing is delivered), as the drain
// period promises, not held until the verdict comes; and the in-process
// worker gives the job up rather than hold Shutdown until the filter ends
// (30 s here; wait allows 20).
func TestShutdownEndsAVerdictWait(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `sleep 30; cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "TimeOut: 600")
	c := h.hello(t)
	c.CmdLine("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK)
	c.CmdLine("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK)
	c.CmdExpect("DATA", 354)
	c.Write([]byte(msg1 + ".\r\n"))
	for deadline := time.Now().Add(time.Minute); len(f.runs(t)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the filter did not start")
		}
	}
	done := shutdownAsync(t, h, time.Second)
	rep, err := c.ReadReplyWithin(time.Minute)
	if err != nil {
		t.Fatalf("no reply to the final dot after Shutdown: %v", err)
	}
	if rep.Code/100 != 4 {
		t.Errorf("reply %q, want a 4xx", rep.String())
	}
	wait(t, done, "Shutdown")
	if d := h.up.Messages(); len(d) != 0 {
		t.Errorf("delivered %d messages", len(d))
	}
}
