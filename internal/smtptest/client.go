package smtptest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"time"
)

// Reply is one complete SMTP reply as the client received it.
type Reply struct {
	Code  int      // 0 if the last line has no 3-digit code
	Lines []string // every line, without its CRLF
}

// Line is the last line of the reply ("250 2.0.0 ok").
func (r Reply) Line() string {
	if len(r.Lines) == 0 {
		return ""
	}
	return r.Lines[len(r.Lines)-1]
}

// Text is the last line after "NNN " ("2.0.0 ok").
func (r Reply) Text() string {
	l := r.Line()
	if len(l) <= 4 {
		return ""
	}
	return l[4:]
}

var enhanced = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}\b`)

// Enhanced is the RFC 3463 enhanced status code of the last line, or "".
func (r Reply) Enhanced() string { return enhanced.FindString(r.Text()) }

// String is the lines joined with " | ".
func (r Reply) String() string { return strings.Join(r.Lines, " | ") }

// Client is a scripted SMTP client. Its methods that take no error return
// fail the test on an I/O error; it must be used from the test goroutine.
type Client struct {
	tb      ClientTB
	c       net.Conn
	r       *bufio.Reader
	Timeout time.Duration // for every read and write; 10 s by default
}

// ClientTB is the part of testing.TB the Client needs.
type ClientTB interface {
	TB
	Errorf(format string, args ...any)
}

// Dial connects to addr and closes the connection when the test ends. It
// does not read the greeting.
func Dial(tb ClientTB, addr string) *Client {
	tb.Helper()
	return DialFrom(tb, "", addr)
}

// DialFrom is Dial from the local IP address from ("127.0.0.5"), so that a
// test can be a client other than the servers' own address; "" lets the
// system choose.
func DialFrom(tb ClientTB, from, addr string) *Client {
	tb.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		ip := net.ParseIP(from)
		if ip == nil {
			tb.Fatalf("smtptest: bad local address %q", from)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatalf("smtptest: dial %s from %q: %v", addr, from, err)
	}
	cl := &Client{tb: tb, c: c, r: bufio.NewReader(c), Timeout: 10 * time.Second}
	tb.Cleanup(func() { c.Close() })
	return cl
}

// StartTLS performs the client's side of a TLS handshake on the
// connection (after a 220 to STARTTLS, or at once for implicit TLS) and
// continues the dialog inside it. It fails the test if the handshake
// fails, and returns the session's state.
func (c *Client) StartTLS(cfg *tls.Config) tls.ConnectionState {
	c.tb.Helper()
	if c.r.Buffered() > 0 {
		c.tb.Fatalf("smtptest: %d bytes unread before the TLS handshake", c.r.Buffered())
	}
	tc := tls.Client(c.c, cfg)
	_ = tc.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		c.tb.Fatalf("smtptest: TLS handshake: %v", err)
	}
	_ = tc.SetDeadline(time.Time{})
	c.c, c.r = tc, bufio.NewReader(tc)
	return tc.ConnectionState()
}

// Conn is the underlying connection.
func (c *Client) Conn() net.Conn { return c.c }

// Close closes the connection.
func (c *Client) Close() { c.c.Close() }

// ReadReply reads one complete reply within Timeout.
func (c *Client) ReadReply() (Reply, error) {
	return c.ReadReplyWithin(c.Timeout)
}

// ReadReplyWithin reads one complete reply within d. A reply whose last
// line does not start with a code still ends there (Code 0).
func (c *Client) ReadReplyWithin(d time.Duration) (Reply, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	var rep Reply
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if line != "" {
				rep.Lines = append(rep.Lines, strings.TrimRight(line, "\r\n"))
			}
			if errors.Is(err, io.EOF) && len(rep.Lines) > 0 {
				err = fmt.Errorf("%w after %q", io.ErrUnexpectedEOF, rep.String())
			}
			return rep, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		rep.Lines = append(rep.Lines, line)
		if len(line) >= 4 && line[3] == '-' && isCode(line) {
			continue
		}
		if isCode(line) {
			rep.Code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		}
		return rep, nil
	}
}

func isCode(l string) bool {
	return len(l) >= 3 && l[0] >= '0' && l[0] <= '9' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' && l[2] <= '9'
}

// Read reads one reply, failing the test on error.
func (c *Client) Read() Reply {
	c.tb.Helper()
	rep, err := c.ReadReply()
	if err != nil {
		c.tb.Fatalf("smtptest: reading reply: %v (got %q)", err, rep.String())
	}
	return rep
}

// Expect reads one reply and fails the test unless its code is code.
func (c *Client) Expect(code int) Reply {
	c.tb.Helper()
	rep := c.Read()
	if rep.Code != code {
		c.tb.Fatalf("smtptest: got %q, expected a %d reply", rep.String(), code)
	}
	return rep
}

// ExpectLine reads one reply and fails the test unless it is exactly line;
// the lines of a multi-line reply are joined with " | " (Reply.String).
func (c *Client) ExpectLine(line string) Reply {
	c.tb.Helper()
	rep := c.Read()
	if rep.String() != line {
		c.tb.Fatalf("smtptest: got %q, expected %q", rep.String(), line)
	}
	return rep
}

// Write sends raw bytes.
func (c *Client) Write(b []byte) {
	c.tb.Helper()
	if err := c.TryWrite(b); err != nil {
		c.tb.Fatalf("smtptest: write: %v", err)
	}
}

// TryWrite sends raw bytes and returns the error.
func (c *Client) TryWrite(b []byte) error {
	_ = c.c.SetWriteDeadline(time.Now().Add(c.Timeout))
	_, err := c.c.Write(b)
	return err
}

// Send sends line with CRLF appended.
func (c *Client) Send(line string) {
	c.tb.Helper()
	c.Write([]byte(line + "\r\n"))
}

// Cmd sends line with CRLF appended and reads the reply.
func (c *Client) Cmd(line string) Reply {
	c.tb.Helper()
	c.Send(line)
	return c.Read()
}

// CmdExpect sends line and fails the test unless the reply's code is code.
func (c *Client) CmdExpect(line string, code int) Reply {
	c.tb.Helper()
	c.Send(line)
	return c.Expect(code)
}

// CmdLine sends line and fails the test unless the reply is exactly want
// (see ExpectLine).
func (c *Client) CmdLine(line, want string) Reply {
	c.tb.Helper()
	c.Send(line)
	return c.ExpectLine(want)
}

// ReadAll reads until EOF within d and returns what arrived. It fails the
// test if the connection is still open after d.
func (c *Client) ReadAll(d time.Duration) []byte {
	c.tb.Helper()
	b, err := c.TryReadAll(d)
	if err != nil {
		c.tb.Fatalf("smtptest: waiting for EOF: %v (got %q)", err, b)
	}
	return b
}

// TryReadAll reads until EOF within d; a connection reset counts as EOF.
func (c *Client) TryReadAll(d time.Duration) ([]byte, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	var buf bytes.Buffer
	_, err := buf.ReadFrom(c.r)
	if err != nil && isReset(err) {
		err = nil
	}
	return buf.Bytes(), err
}

func isReset(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return strings.Contains(err.Error(), "connection reset")
}

// ExpectEOF fails the test unless the peer closes within d without
// sending anything more.
func (c *Client) ExpectEOF(d time.Duration) {
	c.tb.Helper()
	if b := c.ReadAll(d); len(b) > 0 {
		c.tb.Fatalf("smtptest: expected EOF, got %q", b)
	}
}

// Lines splits what ReadAll returned into reply lines without CRLF.
func Lines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	out := strings.Split(s, "\n")
	for i, l := range out {
		out[i] = strings.TrimSuffix(l, "\r")
	}
	return out
}

// Stuff dot-stuffs a CRLF message for sending after DATA: every line that
// starts with "." gets another one.
func Stuff(m string) string {
	lines := strings.SplitAfter(m, "\r\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") {
			lines[i] = "." + l
		}
	}
	return strings.Join(lines, "")
}
