// Package upstream is the edge's SMTP client side: one connection to the
// upstream server (OutAddress) per client session, over which the session
// relays commands verbatim and reads complete replies.
//
// It is not go-smtp's client on purpose: the edge must send raw command
// lines (XCLIENT, XFORWARD, whatever the client sent), relay every reply
// line as received, and interleave keep-alive NOOPs while a message is
// being filtered.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/internal/wire"
)

// ErrClosed is returned once the connection failed or was closed; the
// session must then end.
var ErrClosed = errors.New("upstream: connection closed")

// ErrInterrupted is returned by reads and writes after Interrupt.
var ErrInterrupted = errors.New("upstream: interrupted")

// Conn is one connection to the upstream server. It is used by one session
// goroutine at a time; KeepAlive hands it to a helper goroutine until
// stopped.
type Conn struct {
	raw     net.Conn // the socket: deadlines, addresses
	nc      net.Conn // what is read and written: raw, or a TLS session on it
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration

	mu       sync.Mutex // held while a command is in flight
	lastUsed time.Time
	err      error                // first I/O error: the connection is unusable after it
	tls      *tls.ConnectionState // after StartTLS

	// Interrupt's state. imu orders Interrupt against the deadline each
	// read and write sets, so that one of the two always sees the other.
	imu      sync.Mutex
	intr     bool
	awaiting atomic.Bool // the final dot is sent: the reply decides whether the message was taken
}

// Dial connects to network/address within timeout.
func Dial(ctx context.Context, network, address string, timeout time.Duration) (*Conn, error) {
	return DialWith(ctx, &net.Dialer{Timeout: timeout}, network, address, timeout)
}

// DialWith connects to network/address with d (its own source address,
// socket options); timeout bounds every read and write afterwards.
func DialWith(ctx context.Context, d *net.Dialer, network, address string, timeout time.Duration) (*Conn, error) {
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &Conn{raw: nc, nc: nc, timeout: timeout, lastUsed: time.Now()}
	dc := deadlineConn{c}
	c.r = bufio.NewReaderSize(dc, 4096)
	c.w = bufio.NewWriterSize(dc, 32*1024)
	return c, nil
}

// deadlineConn applies the TimeOut setting to every read and write, and
// fails them once the connection is interrupted.
type deadlineConn struct{ c *Conn }

func (d deadlineConn) Read(p []byte) (int, error) {
	if err := d.c.arm(d.c.raw.SetReadDeadline); err != nil {
		return 0, err
	}
	return d.c.nc.Read(p)
}

func (d deadlineConn) Write(p []byte) (int, error) {
	if err := d.c.arm(d.c.raw.SetWriteDeadline); err != nil {
		return 0, err
	}
	return d.c.nc.Write(p)
}

// arm sets the deadline of the next read or write, unless the connection
// was interrupted.
func (c *Conn) arm(set func(time.Time) error) error {
	c.imu.Lock()
	defer c.imu.Unlock()
	if c.intr && !c.awaiting.Load() {
		return ErrInterrupted
	}
	var t time.Time
	if c.timeout > 0 {
		t = time.Now().Add(c.timeout)
	}
	_ = set(t)
	return nil
}

// Interrupt makes the read or write in progress, and every one after it,
// fail at once, so that a session can be stopped whatever the upstream
// does: a dial, a greeting or a reply it never sends is bounded by
// TimeOut otherwise. The one wait it leaves alone is for the reply to a
// message whose final dot was sent: the upstream may have taken it, and
// a client told otherwise would send it again.
func (c *Conn) Interrupt() {
	c.imu.Lock()
	defer c.imu.Unlock()
	c.intr = true
	if !c.awaiting.Load() {
		_ = c.raw.SetDeadline(time.Now())
	}
}

// RemoteIP is the upstream's IP address (the filter's SERVER), or "" for
// a Unix socket.
func (c *Conn) RemoteIP() string {
	if a, ok := c.raw.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// Err is the error that made the connection unusable, or nil.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) fail(err error) error {
	if c.err == nil {
		c.err = err
		_ = c.nc.Close()
	}
	return err
}

// ReadReply reads one complete reply (the greeting, or a reply the caller
// is owed).
func (c *Conn) ReadReply() (wire.Reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readReply()
}

func (c *Conn) readReply() (wire.Reply, error) {
	if c.err != nil {
		return wire.Reply{}, c.err
	}
	rep, err := wire.ReadReply(c.r)
	c.lastUsed = time.Now()
	if err != nil {
		return rep, c.fail(fmt.Errorf("upstream: reading reply: %w", err))
	}
	return rep, nil
}

// Command sends one command line (CRLF appended) and reads its reply.
func (c *Conn) Command(line string) (wire.Reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.command(line)
}

func (c *Conn) command(line string) (wire.Reply, error) {
	if c.err != nil {
		return wire.Reply{}, c.err
	}
	if _, err := c.w.WriteString(line); err != nil {
		return wire.Reply{}, c.fail(fmt.Errorf("upstream: sending command: %w", err))
	}
	if _, err := c.w.WriteString("\r\n"); err != nil {
		return wire.Reply{}, c.fail(fmt.Errorf("upstream: sending command: %w", err))
	}
	if err := c.w.Flush(); err != nil {
		return wire.Reply{}, c.fail(fmt.Errorf("upstream: sending command: %w", err))
	}
	return c.readReply()
}

// StartTLS asks the upstream for TLS before the client's dialog is
// relayed: EHLO as ehlo, STARTTLS when the reply offers it, and the
// handshake with cfg. offered is false when the upstream offers no
// STARTTLS; the connection is then still usable in clear. Any error
// leaves the connection unusable.
func (c *Conn) StartTLS(ehlo string, cfg *tls.Config) (offered bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rep, err := c.command("EHLO " + ehlo)
	if err != nil {
		return false, err
	}
	if rep.Class() != 2 {
		return false, c.fail(fmt.Errorf("upstream: EHLO refused: %s", rep.String()))
	}
	if _, offered := wire.Extensions(rep)["STARTTLS"]; !offered {
		return false, nil
	}
	if rep, err = c.command("STARTTLS"); err != nil {
		return true, err
	}
	if rep.Code != 220 {
		return true, c.fail(fmt.Errorf("upstream: STARTTLS refused: %s", rep.String()))
	}
	tc := tls.Client(c.nc, cfg)
	if err := c.arm(c.raw.SetDeadline); err != nil {
		return true, c.fail(err)
	}
	if err := tc.Handshake(); err != nil {
		return true, c.fail(fmt.Errorf("upstream: TLS handshake: %w", err))
	}
	c.nc = tc
	dc := deadlineConn{c}
	c.r.Reset(dc)
	c.w.Reset(dc)
	// EHLO again inside TLS, as RFC 3207 asks: it also brings out what a
	// TLS 1.3 server says only after the handshake (a client certificate
	// it refuses).
	if rep, err = c.command("EHLO " + ehlo); err != nil {
		return true, err
	}
	if rep.Class() != 2 {
		return true, c.fail(fmt.Errorf("upstream: EHLO after STARTTLS refused: %s", rep.String()))
	}
	st := tc.ConnectionState()
	c.tls = &st
	return true, nil
}

// TLS is the state of the TLS session with the upstream, nil in clear.
func (c *Conn) TLS() *tls.ConnectionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tls
}

// ErrSource marks a failure to read the message being sent, as opposed to
// a failure of the upstream connection.
type ErrSource struct{ Err error }

func (e *ErrSource) Error() string { return "reading message: " + e.Err.Error() }
func (e *ErrSource) Unwrap() error { return e.Err }

// SendData sends the message from r in SMTP transparency (after the
// upstream's 354) followed by the end-of-data line, and reads the final
// reply. A failure of r is returned as *ErrSource; the upstream
// transaction is then aborted by closing the connection, because an
// end-of-data line would deliver a truncated message.
func (c *Conn) SendData(r io.Reader, o wire.DataWriterOptions) (int64, wire.Reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, wire.Reply{}, c.err
	}
	sr := &sourceReader{r: r}
	n, err := wire.WriteData(c.w, sr, o)
	if err != nil {
		if sr.err != nil {
			return n, wire.Reply{}, c.fail(&ErrSource{sr.err})
		}
		return n, wire.Reply{}, c.fail(fmt.Errorf("upstream: sending message: %w", err))
	}
	if err := c.w.Flush(); err != nil {
		return n, wire.Reply{}, c.fail(fmt.Errorf("upstream: sending message: %w", err))
	}
	c.imu.Lock()
	c.awaiting.Store(true)
	c.imu.Unlock()
	defer c.awaiting.Store(false)
	rep, err := c.readReply()
	return n, rep, err
}

// sourceReader remembers the error of the reader it wraps, so that a
// failing source can be told from a failing destination.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// KeepAlive sends NOOP whenever the connection has been idle for every,
// until the returned stop function is called; stop waits for a NOOP in
// flight. Replies to the NOOPs are read and dropped. every <= 0 does
// nothing.
func (c *Conn) KeepAlive(every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			c.mu.Lock()
			if c.err == nil && time.Since(c.lastUsed) >= every {
				_, _ = c.command("NOOP")
			}
			c.mu.Unlock()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// Close sends nothing: it closes the connection. Use Quit for a polite
// end.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = ErrClosed
	}
	return c.nc.Close()
}

// Quit sends QUIT with a short timeout, ignoring the reply, and closes.
// It is polite even after Interrupt: the 5 s bound is short enough for a
// stopping session.
func (c *Conn) Quit() {
	c.imu.Lock()
	c.intr = false
	c.imu.Unlock()
	c.mu.Lock()
	if c.err == nil {
		if c.timeout == 0 || c.timeout > 5*time.Second {
			c.timeout = 5 * time.Second
		}
		_, _ = c.command("QUIT")
	}
	c.mu.Unlock()
	_ = c.Close()
}
