package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unicode/utf8"

	"github.com/sluice-mail/sluice/internal/upstream"
	"github.com/sluice-mail/sluice/internal/wire"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Delivery is what became of a released message: the server's reply to
// its final dot, or why it was not delivered.
type Delivery struct {
	Reply string `json:"reply,omitempty"` // 250 2.0.0 Ok: queued as ...
	Error string `json:"error,omitempty"` // the refusal or the failure
}

// Deliverer re-injects the messages a new filter would have let through
// that were refused before: rejected with a 5xx or silently dropped. A
// message answered with a 4xx is not released: its sender retried it, and
// it was stored again under another id.
type Deliverer struct {
	Addr string // host:port of the SMTP server
	// HelloName is the name in EHLO; "" is the host name.
	HelloName string
	// Timeout bounds each command and the message's transfer; 0 is 5
	// minutes (RFC 5321's shortest server timeouts).
	Timeout time.Duration
}

// released is whether a message with the stored verdict old is one a
// Deliverer may release.
func released(old *sluicev1.Verdict) bool {
	a := senderOutcome(old)
	return a == sluicev1.Verdict_ACTION_REJECT || a == sluicev1.Verdict_ACTION_DROP
}

// deliverTimeout is the default of Deliverer.Timeout.
const deliverTimeout = 5 * time.Minute

// Deliver sends body from sender to rcpts (addresses as stored: without
// angle brackets, "<>" or "" for the null sender) in one SMTP transaction on a new
// connection. Every recipient must be taken: a message released to only
// some would leave the others to nobody, so one refused recipient ends
// the transaction before DATA.
func (d *Deliverer) Deliver(ctx context.Context, sender string, rcpts []string, body io.Reader) (*Delivery, error) {
	if len(rcpts) == 0 {
		return nil, errors.New("no recipients")
	}
	if sender == "<>" {
		sender = ""
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = deliverTimeout
	}
	c, err := upstream.Dial(ctx, "tcp", d.Addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", d.Addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Interrupt)
	defer stop()

	expect := func(what string, want int, rep wire.Reply, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if rep.Code != want {
			return fmt.Errorf("%s: %s", what, rep.String())
		}
		return nil
	}
	rep, err := c.ReadReply()
	if err := expect("greeting", 220, rep, err); err != nil {
		return nil, err
	}
	name := d.HelloName
	if name == "" {
		if name, err = os.Hostname(); err != nil || name == "" {
			name = "localhost"
		}
	}
	rep, err = c.Command("EHLO " + name)
	if err := expect("EHLO", 250, rep, err); err != nil {
		return nil, err
	}
	exts := wire.Extensions(rep)
	mail := "MAIL FROM:<" + sender + ">"
	if _, ok := exts["8BITMIME"]; ok {
		mail += " BODY=8BITMIME"
	}
	if !isASCII(sender) || !allASCII(rcpts) {
		if _, ok := exts["SMTPUTF8"]; !ok {
			return nil, fmt.Errorf("the envelope has non-ASCII addresses and %s does not offer SMTPUTF8", d.Addr)
		}
		mail += " SMTPUTF8"
	}
	rep, err = c.Command(mail)
	if err := expect("MAIL", 250, rep, err); err != nil {
		return &Delivery{Error: err.Error()}, nil
	}
	for _, r := range rcpts {
		rep, err = c.Command("RCPT TO:<" + r + ">")
		if err != nil {
			return nil, fmt.Errorf("RCPT: %w", err)
		}
		if rep.Code != 250 && rep.Code != 251 {
			c.Quit()
			return &Delivery{Error: "RCPT TO:<" + r + ">: " + rep.String()}, nil
		}
	}
	rep, err = c.Command("DATA")
	if err := expect("DATA", 354, rep, err); err != nil {
		return &Delivery{Error: err.Error()}, nil
	}
	_, rep, err = c.SendData(body, wire.DataWriterOptions{})
	if err != nil {
		return nil, fmt.Errorf("sending the message: %w", err)
	}
	c.Quit()
	if rep.Code != 250 {
		return &Delivery{Error: rep.String()}, nil
	}
	return &Delivery{Reply: rep.String()}, nil
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}
