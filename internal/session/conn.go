package session

import (
	"errors"
	"sync/atomic"
	"time"
)

// errInterrupted is returned by a read that Drain or Stop cut short.
var errInterrupted = errors.New("session: read interrupted")

// clientConn applies TimeOut to every read and write on the client
// connection, and lets another goroutine interrupt a blocked read.
type clientConn struct {
	s    *Session
	intr atomic.Bool
}

func (c *clientConn) Read(p []byte) (int, error) {
	if t := c.s.cfg.TimeOut; t > 0 {
		_ = c.s.conn.SetReadDeadline(time.Now().Add(t))
	}
	// Checked after setting the deadline: interrupt sets the flag before
	// moving the deadline, so one of the two always wins.
	if c.intr.Load() {
		return 0, errInterrupted
	}
	n, err := c.s.conn.Read(p)
	if err != nil && c.intr.Load() {
		return n, errInterrupted
	}
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	if t := c.s.cfg.TimeOut; t > 0 {
		_ = c.s.conn.SetWriteDeadline(time.Now().Add(t))
	}
	return c.s.conn.Write(p)
}

func (c *clientConn) interrupt() {
	c.intr.Store(true)
	_ = c.s.conn.SetReadDeadline(time.Now())
}

func (c *clientConn) interrupted() bool { return c.intr.Load() }

func (c *clientConn) clearInterrupt() { c.intr.Store(false) }
