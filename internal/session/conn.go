package session

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// errInterrupted is returned by a read that Drain or Stop cut short.
var errInterrupted = errors.New("session: read interrupted")

// errDeadline is returned by a read past the budget of the command line or
// message being read (CommandDeadline, DataDeadline).
var errDeadline = errors.New("session: deadline exceeded")

// clientConn applies TimeOut to every read and write on the client
// connection, and a total budget to a command line or a message, and lets
// another goroutine interrupt a blocked read.
//
// TimeOut alone would let a client hold a session for ever by sending a
// byte every TimeOut; the budget ends that (issue 6).
type clientConn struct {
	s    *Session
	intr atomic.Bool

	// The budget: reads fail with errDeadline once end, extended by
	// perByte for every byte read since, has passed. Zero end: none. Only
	// the session's goroutine touches these.
	end     time.Time
	perByte time.Duration
	n       int64
	lazy    time.Duration // a budget that starts with the first byte read
}

// setBudget starts a budget of d, extended by one second for every rate
// bytes read; d == 0 means none.
func (c *clientConn) setBudget(d time.Duration, rate int64) {
	c.end, c.perByte, c.n, c.lazy = time.Time{}, 0, 0, 0
	if d <= 0 {
		return
	}
	c.end = time.Now().Add(d)
	if rate > 0 {
		c.perByte = time.Second / time.Duration(rate)
	}
}

// setLazyBudget starts a budget of d once the first byte arrives.
func (c *clientConn) setLazyBudget(d time.Duration) {
	c.setBudget(0, 0)
	c.lazy = d
}

func (c *clientConn) clearBudget() { c.end, c.lazy = time.Time{}, 0 }

// limit is when the budget runs out, zero for none.
func (c *clientConn) limit() time.Time {
	if c.end.IsZero() {
		return c.end
	}
	return c.end.Add(time.Duration(c.n) * c.perByte)
}

func (c *clientConn) Read(p []byte) (int, error) {
	now := time.Now()
	var d time.Time
	if t := c.s.cfg.TimeOut; t > 0 {
		d = now.Add(t)
	}
	limit := c.limit()
	if !limit.IsZero() {
		if !now.Before(limit) {
			return 0, errDeadline
		}
		if d.IsZero() || limit.Before(d) {
			d = limit
		}
	}
	_ = c.s.conn.SetReadDeadline(d) // a TLS connection's deadline is its socket's
	// Checked after setting the deadline: interrupt sets the flag before
	// moving the deadline, so one of the two always wins.
	if c.intr.Load() {
		return 0, errInterrupted
	}
	n, err := c.s.transport().Read(p)
	c.n += int64(n)
	if n > 0 && c.lazy > 0 {
		c.end, c.lazy = time.Now().Add(c.lazy), 0
	}
	switch {
	case err == nil:
	case c.intr.Load():
		return n, errInterrupted
	case !limit.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(c.limit()):
		return n, errDeadline
	}
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	if t := c.s.cfg.TimeOut; t > 0 {
		_ = c.s.conn.SetWriteDeadline(time.Now().Add(t))
	}
	return c.s.transport().Write(p)
}

func (c *clientConn) interrupt() {
	c.intr.Store(true)
	_ = c.s.conn.SetReadDeadline(time.Now())
}

func (c *clientConn) interrupted() bool { return c.intr.Load() }

func (c *clientConn) clearInterrupt() { c.intr.Store(false) }

// pendingInput reports whether the client has sent anything the edge has
// not read, without reading it or waiting.
func pendingInput(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return n > 0
}
