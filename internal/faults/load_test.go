package faults

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// result is what the client saw of one message.
type result struct {
	token   string
	code    int    // the reply that decided the message; 0 for a connection error
	reply   string // its text, or the connection error
	phase   string // where it was decided: connect, greeting, ehlo, mail, rcpt, data, dot
	connErr bool
	start   time.Time
	end     time.Time
	// dot is when the final dot was sent, answered when the reply to it
	// (or the error instead) came; both zero if the body was not sent.
	dot      time.Time
	answered time.Time
}

func (r result) String() string {
	if r.connErr {
		return fmt.Sprintf("%s: connection error at %s: %s", r.token, r.phase, r.reply)
	}
	return fmt.Sprintf("%s: %d at %s: %s", r.token, r.code, r.phase, r.reply)
}

// load is a set of concurrent SMTP sessions, each sending messages one
// after another on one connection (a new one after a 421 or an error).
type load struct {
	prefix   string
	addrs    []string // edges; session i uses addrs[i % len]
	sessions int
	count    int           // messages per session; 0 = until stop
	pause    time.Duration // between two messages of a session
	size     int           // body bytes, about

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup

	mu      sync.Mutex
	results []result
}

// start runs the sessions until each has sent count messages, stop is
// called, or ctx ends.
func (l *load) start(ctx context.Context) *load {
	l.stop = make(chan struct{})
	if l.size == 0 {
		l.size = 2048
	}
	for i := range l.sessions {
		l.wg.Go(func() { l.session(ctx, i) })
	}
	return l
}

// finish asks the sessions to end after their current message and waits.
func (l *load) finish() []result {
	l.stopped.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.snapshot()
}

// wait waits for the sessions to send their count.
func (l *load) wait() []result {
	l.wg.Wait()
	return l.snapshot()
}

func (l *load) snapshot() []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]result(nil), l.results...)
}

func (l *load) add(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

func (l *load) session(ctx context.Context, i int) {
	c := &client{addr: l.addrs[i%len(l.addrs)]}
	defer c.quit()
	for n := 0; l.count == 0 || n < l.count; n++ {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		tok := fmt.Sprintf("%s-s%02d-m%04d", l.prefix, i, n)
		r := c.send(tok, l.size)
		l.add(r)
		if c.conn == nil && l.pause == 0 {
			// The session ended (421 or an error): reconnecting in a
			// tight loop helps nobody.
			sleepCtx(ctx, 300*time.Millisecond)
		}
		if l.pause > 0 {
			sleepCtx(ctx, l.pause)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Timeouts of the client: generous, so that an edge waiting for a verdict
// up to its job_timeout is never mistaken for a dead one.
const (
	dialTimeout  = 5 * time.Second
	replyTimeout = 30 * time.Second
	finalTimeout = 120 * time.Second // after the final dot
)

// client is one SMTP session to an edge.
type client struct {
	addr string
	nc   net.Conn
	conn *textproto.Conn
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.nc = nil, nil
	}
}

func (c *client) quit() {
	if c.conn == nil {
		return
	}
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if id, err := c.conn.Cmd("QUIT"); err == nil {
		c.conn.StartResponse(id)
		c.conn.ReadResponse(0)
		c.conn.EndResponse(id)
	}
	c.close()
}

// cmd sends line (none for "") and reads the reply within d.
func (c *client) cmd(line string, d time.Duration) (int, string, error) {
	c.nc.SetDeadline(time.Now().Add(d))
	if line != "" {
		if err := c.conn.PrintfLine("%s", line); err != nil {
			return 0, "", err
		}
	}
	code, msg, err := c.conn.ReadResponse(0)
	if err != nil {
		return 0, "", err
	}
	return code, msg, nil
}

// send sends one message and returns what decided it. After a 421 or a
// connection error the connection is closed; after another refusal the
// transaction is reset.
func (c *client) send(tok string, size int) (r result) {
	r = result{token: tok, start: time.Now()}
	defer func() { r.end = time.Now() }()
	fail := func(phase string, code int, msg string, err error) result {
		r.phase = phase
		if err != nil {
			r.connErr, r.reply = true, err.Error()
			c.close()
			return r
		}
		r.code, r.reply = code, fmt.Sprintf("%d %s", code, msg)
		if code == 421 {
			c.close()
		} else if c.conn != nil {
			if code, _, err := c.cmd("RSET", replyTimeout); err != nil || code != 250 {
				c.close()
			}
		}
		return r
	}
	if c.conn == nil {
		nc, err := net.DialTimeout("tcp", c.addr, dialTimeout)
		if err != nil {
			return fail("connect", 0, "", err)
		}
		c.nc, c.conn = nc, textproto.NewConn(nc)
		code, msg, err := c.cmd("", replyTimeout)
		if err != nil || code != 220 {
			if err == nil {
				c.close() // a greeting other than 220 ends the session
			}
			return fail("greeting", code, msg, err)
		}
		if code, msg, err := c.cmd("EHLO client.faults.test", replyTimeout); err != nil || code != 250 {
			return fail("ehlo", code, msg, err)
		}
	}
	if code, msg, err := c.cmd("MAIL FROM:<sender@faults.test>", replyTimeout); err != nil || code != 250 {
		return fail("mail", code, msg, err)
	}
	if code, msg, err := c.cmd("RCPT TO:<rcpt@faults.test>", replyTimeout); err != nil || code != 250 {
		return fail("rcpt", code, msg, err)
	}
	if code, msg, err := c.cmd("DATA", replyTimeout); err != nil || code != 354 {
		return fail("data", code, msg, err)
	}
	c.nc.SetDeadline(time.Now().Add(replyTimeout))
	if _, err := c.nc.Write(messageBody(tok, size)); err != nil {
		return fail("dot", 0, "", err)
	}
	r.dot = time.Now()
	code, msg, err := c.cmd("", finalTimeout)
	r.answered = time.Now()
	if err != nil || code != 250 {
		return fail("dot", code, msg, err)
	}
	r.phase, r.code, r.reply = "dot", code, fmt.Sprintf("%d %s", code, msg)
	return r
}

// messageBody is a message carrying tok in its X-Faults-Token header,
// about size bytes, with the terminating dot.
func messageBody(tok string, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <sender@faults.test>\r\nTo: <rcpt@faults.test>\r\nSubject: faults %s\r\n", tok)
	fmt.Fprintf(&b, "Message-ID: <%s@faults.test>\r\nX-Faults-Token: %s\r\n\r\n", tok, tok)
	line := "The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	return []byte(b.String())
}
