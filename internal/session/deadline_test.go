package session

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/upstream"
)

// stallPipeline accepts every message with a deadline; the copy to
// deliver yields its first bytes, then hangs until its context ends, as
// an S3 GET does when the server stops answering mid-body.
type stallPipeline struct {
	jobTimeout time.Duration
	dot        chan time.Time
}

func (p *stallPipeline) Filter(ctx context.Context, e *Envelope, body io.Reader) (*Message, error) {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return nil, err
	}
	now := time.Now()
	p.dot <- now
	return &Message{ID: "m1", Received: now, Deadline: now.Add(p.jobTimeout),
		Verdict: &Verdict{Action: ActionAccept}}, nil
}

func (p *stallPipeline) Open(ctx context.Context, m *Message) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader("Subject: stalled\r\n\r\n"), ctxBlocker{ctx})), nil
}

func (p *stallPipeline) Finish(*Message) {}

type ctxBlocker struct{ ctx context.Context }

func (b ctxBlocker) Read([]byte) (int, error) {
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

// Issue 6: reading the filtered copy for delivery ends at the message's
// deadline (final dot + job_timeout): the sender gets 451 while it still
// waits, and the upstream never gets the final dot.
func TestDeliveryEndsAtTheDeadline(t *testing.T) {
	up := smtptest.NewServer(t, smtptest.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	defer func() { cancel(); <-served }() // releases a hanging delivery
	const jobTimeout = 2 * time.Second
	pipe := &stallPipeline{jobTimeout: jobTimeout, dot: make(chan time.Time, 1)}
	cfg := &Config{Hostname: "edge.test", TimeOut: time.Minute}
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := upstream.Dial(ctx, "tcp", up.Addr(), cfg.TimeOut)
		if err != nil {
			t.Errorf("upstream: %v", err)
			c.Close()
			return
		}
		log := slog.New(slog.NewTextHandler(t.Output(), nil))
		New(cfg, pipe, log, "C1", c, u).Serve(ctx)
	}()

	c := smtptest.Dial(t, ln.Addr().String())
	c.Expect(220)
	c.CmdExpect("EHLO client.example", 250)
	c.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	c.CmdExpect("RCPT TO:<bob@example.com>", 250)
	c.CmdExpect("DATA", 354)
	c.Write([]byte("Subject: x\r\n\r\nbody\r\n.\r\n"))
	dot := <-pipe.dot
	rep, err := c.ReadReplyWithin(30 * time.Second)
	if err != nil {
		t.Fatalf("no reply %v after the final dot (job_timeout %v): %v", time.Since(dot).Round(time.Second), jobTimeout, err)
	}
	if rep.Line() != replyTempFail {
		t.Errorf("reply %q, want %q", rep.String(), replyTempFail)
	}
	for _, tx := range up.Transactions() {
		if tx.Terminated {
			t.Errorf("the upstream got the final dot of a message the sender was told 451: %q", tx.Data)
		}
	}
}
