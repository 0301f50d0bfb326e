package upstream

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/wire"
)

func dial(t *testing.T, up *smtptest.Server, timeout time.Duration) *Conn {
	t.Helper()
	c, err := Dial(t.Context(), "tcp", up.Addr(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A relayed dialog: replies come back whole, multi-line ones included,
// and the message goes out in SMTP transparency.
func TestDialog(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{MultiLine: true})
	c := dial(t, up, time.Minute)
	rep, err := c.ReadReply()
	if err != nil || rep.Code != 220 {
		t.Fatalf("greeting %v %v", rep, err)
	}
	if c.RemoteIP() != "127.0.0.1" {
		t.Errorf("RemoteIP %q", c.RemoteIP())
	}
	for _, cmd := range []struct {
		line string
		code int
	}{{"EHLO edge.test", 250}, {"MAIL FROM:<a@example.com>", 250}, {"RCPT TO:<b@example.com>", 250}, {"DATA", 354}} {
		rep, err := c.Command(cmd.line)
		if err != nil || rep.Code != cmd.code {
			t.Fatalf("%s: %v %v", cmd.line, rep, err)
		}
		if cmd.line != "EHLO edge.test" && len(rep.Lines) != 2 {
			t.Errorf("%s: %d lines, want the multi-line reply whole", cmd.line, len(rep.Lines))
		}
	}
	n, rep, err := c.SendData(strings.NewReader("Subject: x\r\n\r\n.dot\r\n"), wire.DataWriterOptions{})
	if err != nil || rep.Class() != 2 {
		t.Fatalf("SendData: %v %v", rep, err)
	}
	if n == 0 {
		t.Error("SendData counted no bytes")
	}
	c.Quit()
	ss, err := up.WaitClosed(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	msgs := ss[0].Messages()
	if len(msgs) != 1 || string(msgs[0].Data) != "Subject: x\r\n\r\n..dot\r\n" {
		t.Errorf("upstream got %+v", msgs)
	}
	if got := ss[0].Commands[len(ss[0].Commands)-1]; got != "QUIT\r\n" {
		t.Errorf("last command %q, want QUIT", got)
	}
}

// openData takes a fresh connection to the upstream's 354.
func openData(t *testing.T, c *Conn) {
	t.Helper()
	if _, err := c.ReadReply(); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"EHLO edge.test", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"} {
		if _, err := c.Command(line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("store went away") }

// A message that cannot be read is a source error, and the upstream
// never gets a final dot for it.
func TestSendDataSourceError(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{})
	c := dial(t, up, time.Minute)
	openData(t, c)
	_, _, err := c.SendData(io.MultiReader(strings.NewReader("Subject: x\r\n"), failingReader{}), wire.DataWriterOptions{})
	var se *ErrSource
	if !errors.As(err, &se) {
		t.Fatalf("SendData: %v, want an ErrSource", err)
	}
	if c.Err() == nil {
		t.Error("the connection is still usable after an aborted message")
	}
	ss, _ := up.WaitClosed(t.Context())
	if len(ss[0].Messages()) != 0 {
		t.Errorf("the upstream got a final dot: %+v", ss[0].Transactions)
	}
}

// KeepAlive sends NOOPs while the session waits for a verdict.
func TestKeepAlive(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{})
	c := dial(t, up, time.Minute)
	c.ReadReply()
	stop := c.KeepAlive(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := up.WaitFor(ctx, func(ss []smtptest.Session) bool {
		return len(ss) == 1 && len(ss[0].Commands) >= 2 && ss[0].Commands[1] == "NOOP\r\n"
	})
	stop()
	if err != nil {
		t.Fatalf("no two NOOPs: %v", err)
	}
	if rep, err := c.Command("RSET"); err != nil || rep.Class() != 2 {
		t.Errorf("after KeepAlive, RSET: %v %v: the NOOP replies were not all read", rep, err)
	}
}

// Interrupt ends a read the upstream never answers at once, and Quit is
// still polite afterwards.
func TestInterrupt(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{Silent: true})
	c := dial(t, up, 10*time.Minute)
	got := make(chan error, 1)
	go func() {
		_, err := c.ReadReply()
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Interrupt()
	select {
	case err := <-got:
		if err == nil {
			t.Fatal("ReadReply succeeded on a silent upstream")
		}
	case <-time.After(time.Minute):
		t.Fatal("Interrupt did not end the read")
	}
	if _, err := c.Command("NOOP"); err == nil {
		t.Error("a command after Interrupt succeeded")
	}
}

// Interrupt leaves the wait for the reply to a sent message alone: that
// reply says whether the message was delivered.
func TestInterruptSparesTheFinalReply(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{DataFinalDelay: 500 * time.Millisecond})
	c := dial(t, up, time.Minute)
	openData(t, c)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		up.WaitFor(ctx, func(ss []smtptest.Session) bool {
			return len(ss) == 1 && len(ss[0].Transactions) == 1 && ss[0].Transactions[0].Terminated
		})
		c.Interrupt()
	}()
	_, rep, err := c.SendData(strings.NewReader("Subject: x\r\n\r\nbody\r\n"), wire.DataWriterOptions{})
	if err != nil || rep.Code != 250 {
		t.Fatalf("SendData: %v %v, want the upstream's 250", rep, err)
	}
	c.Quit()
	ss, _ := up.WaitClosed(t.Context())
	if got := ss[0].Commands[len(ss[0].Commands)-1]; got != "QUIT\r\n" {
		t.Errorf("last command %q, want a QUIT after Interrupt", got)
	}
}
