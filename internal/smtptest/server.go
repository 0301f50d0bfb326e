// Package smtptest provides SMTP peers for tests: Server, a recording
// upstream SMTP server on 127.0.0.1 that behaves like the compat harness's
// (compat/oracle.py, UPSTREAM_DEFAULTS), and Client, a small dialog client
// with timeouts.
//
// Every reply text the Server makes up contains the word "upstream", so a
// test can tell a reply the proxy relayed from one it made up itself.
//
// The package does not use the project's own SMTP codec on purpose: a test
// peer that shared the parser under test would share its bugs.
package smtptest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"
)

// UpstreamHost is the host name in the Server's greeting and EHLO reply.
const UpstreamHost = "upstream.example"

// Replies of the Server, for assertions.
const (
	Greeting       = "220 " + UpstreamHost + " ESMTP upstream-sink"
	ReplySenderOK  = "250 2.1.0 upstream: sender ok"
	ReplyRcptOK    = "250 2.1.5 upstream: recipient ok"
	ReplyNested    = "503 5.5.1 upstream: nested MAIL command"
	ReplyNeedMail  = "503 5.5.1 upstream: need MAIL command"
	ReplyNoRcpts   = "554 5.5.1 upstream: no valid recipients"
	ReplyData      = "354 upstream: end data with <CR><LF>.<CR><LF>"
	ReplyReset     = "250 2.0.0 upstream: reset ok"
	ReplyNoop      = "250 2.0.0 upstream: noop ok"
	ReplyBye       = "221 2.0.0 upstream: bye"
	ReplyVrfy      = "252 2.0.0 upstream: cannot verify"
	ReplyXFwdOK    = "250 2.0.0 upstream: xforward ok"
	ReplyXFwdNo    = "550 5.7.0 upstream: xforward not permitted"
	ReplyXClient   = "220 " + UpstreamHost + " ESMTP upstream (after xclient)"
	ReplyAuthOK    = "235 2.7.0 upstream: authentication successful"
	ReplyAuthNo    = "535 5.7.8 upstream: authentication failed"
	ReplyAuthAbort = "501 5.7.0 upstream: authentication cancelled"
	ReplyNoTLS     = "454 4.7.0 upstream: TLS not available"
	ReplyStartTLS  = "220 2.0.0 upstream: ready to start TLS"
	ReplyUnknown   = "502 5.5.2 upstream: command not recognized"
)

// Queued is the Server's default reply to the end of data of the n-th
// message (from 1) of its sess-th session (from 1).
func Queued(sess, n int) string {
	return fmt.Sprintf("250 2.0.0 upstream: queued as S%dM%d", sess, n)
}

// DefaultExtensions is the EHLO list of the compat harness's upstream.
var DefaultExtensions = []string{"PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS",
	"ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"}

// Rule answers a command line in place of the Server's own handling.
type Rule struct {
	// Match is a regular expression matched case-insensitively against
	// the command line without its terminator. The first matching rule
	// wins.
	Match string
	// Reply lines, each sent with CRLF appended; none when empty.
	Reply []string
	// Delay before the reply.
	Delay time.Duration
	// Close the connection after the reply.
	Close bool
	// Stall: send nothing more and read nothing more until the peer
	// closes the connection (or the Server closes).
	Stall bool
}

// Config sets how the Server behaves. The zero Config is the compat
// harness's default upstream.
type Config struct {
	// Greeting lines (CRLF appended); nil means Greeting.
	Greeting []string
	// Silent: never greet; only read and record what arrives.
	Silent bool
	// GreetingDelay is a pause before the greeting.
	GreetingDelay time.Duration
	// Extensions after the host line of the EHLO reply; nil means
	// DefaultExtensions, an empty non-nil slice none.
	Extensions []string
	// Rules are checked before the built-in handling of every command.
	Rules []Rule
	// RejectXForward answers XFORWARD with ReplyXFwdNo.
	RejectXForward bool
	// XClientReply is the reply to XCLIENT; nil means ReplyXClient.
	XClientReply []string
	// RejectAuth answers AUTH (after its 334 steps) with ReplyAuthNo; a
	// lone "*" response always gets ReplyAuthAbort.
	RejectAuth bool
	// DataFinal is the reply to the end of data; nil means Queued(...).
	DataFinal []string
	// DataFinalDelay is a pause before the reply to the end of data.
	DataFinalDelay time.Duration
	// StallDataEnd: never answer the end of data; wait for the peer to
	// close.
	StallDataEnd bool
	// MultiLine sends every built-in reply except EHLO's as two lines, a
	// "NNN-upstream: more" line first, so that a peer reading one line
	// where a reply is due would fall out of step.
	MultiLine bool
	// LaxDot also ends data at a line "." ended by a bare LF, and after a
	// line ended by a bare LF (old Postfix, for SMTP smuggling tests).
	LaxDot bool
	// Timeout bounds every read; 0 means 60 s.
	Timeout time.Duration
	// MaxLine bounds one recorded line (longer ones are cut); 0 means 1 MiB.
	MaxLine int
	// TLS, if set, makes STARTTLS work (it is always in the default EHLO
	// list); nil answers it with ReplyNoTLS.
	TLS *tls.Config
}

// Transaction is one DATA phase the Server went through.
type Transaction struct {
	Mail       string   // the MAIL FROM: argument, trimmed
	Rcpts      []string // the accepted RCPT TO: arguments, trimmed
	Data       []byte   // raw bytes between the 354 and the terminator (still dot-stuffed)
	Terminated bool     // the terminator arrived
	Reply      string   // the final reply line sent, "" if none
}

// Session is what the Server recorded of one connection.
type Session struct {
	Index        int      // from 1, in accept order
	Peer         string   // the client's IP address
	Greeted      bool     // the greeting was sent
	TLS          bool     // STARTTLS succeeded
	Commands     []string // every line received outside DATA, exactly, terminator included
	Transactions []Transaction
	Closed       bool   // the Server is done with the connection
	End          string // why: "quit", "eof", "eof-in-data", "rule", "timeout", "error: ..."
}

// Messages returns the transactions whose data was terminated.
func (s Session) Messages() []Transaction {
	var out []Transaction
	for _, t := range s.Transactions {
		if t.Terminated {
			out = append(out, t)
		}
	}
	return out
}

// Server is a recording upstream SMTP server on 127.0.0.1. It is safe for
// concurrent use.
type Server struct {
	cfg   Config
	rules []*regexp.Regexp
	ln    net.Listener

	mu       sync.Mutex
	sessions []*Session
	accepted int // sessions ever accepted; Clear does not reset it
	conns    map[net.Conn]struct{}
	changed  chan struct{} // closed and replaced on every change
	closed   bool
	wg       sync.WaitGroup
}

// TB is the part of testing.TB the helpers need.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// NewServer starts a Server and closes it when the test ends.
func NewServer(tb TB, cfg Config) *Server {
	tb.Helper()
	s, err := Start(cfg)
	if err != nil {
		tb.Fatalf("smtptest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a Server on 127.0.0.1 with a port chosen by the system.
func Start(cfg Config) (*Server, error) {
	if cfg.Greeting == nil {
		cfg.Greeting = []string{Greeting}
	}
	if cfg.Extensions == nil {
		cfg.Extensions = DefaultExtensions
	}
	if cfg.XClientReply == nil {
		cfg.XClientReply = []string{ReplyXClient}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.MaxLine == 0 {
		cfg.MaxLine = 1 << 20
	}
	s := &Server{cfg: cfg, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	for _, r := range cfg.Rules {
		re, err := regexp.Compile("(?i)" + r.Match)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Match, err)
		}
		s.rules = append(s.rules, re)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the "127.0.0.1:port" the Server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the port the Server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops listening, closes every connection and waits for the
// Server's goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.accepted++
		rec := &Session{Index: s.accepted, Peer: c.RemoteAddr().(*net.TCPAddr).IP.String()}
		s.sessions = append(s.sessions, rec)
		s.conns[c] = struct{}{}
		s.notifyLocked()
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c, rec)
	}
}

// update changes a session's record under the lock and wakes waiters.
func (s *Server) update(f func()) {
	s.mu.Lock()
	f()
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Sessions returns a deep copy of every session so far.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Session, len(s.sessions))
	for i, r := range s.sessions {
		out[i] = copySession(r)
	}
	return out
}

func copySession(r *Session) Session {
	c := *r
	c.Commands = append([]string(nil), r.Commands...)
	c.Transactions = make([]Transaction, len(r.Transactions))
	for i, t := range r.Transactions {
		t.Rcpts = append([]string(nil), t.Rcpts...)
		t.Data = append([]byte(nil), t.Data...)
		c.Transactions[i] = t
	}
	return c
}

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Clear forgets the records of closed sessions, so that a long-running
// test (a fuzz target) does not keep them all. Session indexes go on.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	open := s.sessions[:0]
	for _, r := range s.sessions {
		if !r.Closed {
			open = append(open, r)
		}
	}
	clear(s.sessions[len(open):])
	s.sessions = open
	s.notifyLocked()
}

// Messages returns every terminated transaction of every session, in
// session order.
func (s *Server) Messages() []Transaction {
	var out []Transaction
	for _, sess := range s.Sessions() {
		out = append(out, sess.Messages()...)
	}
	return out
}

// Transactions returns every transaction, terminated or not.
func (s *Server) Transactions() []Transaction {
	var out []Transaction
	for _, sess := range s.Sessions() {
		out = append(out, sess.Transactions...)
	}
	return out
}

// WaitFor waits until cond holds for the recorded sessions, or ctx ends.
func (s *Server) WaitFor(ctx context.Context, cond func([]Session) bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s.Sessions()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitMessages waits until at least n messages were delivered (terminated)
// and returns them all.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Transaction, error) {
	err := s.WaitFor(ctx, func(ss []Session) bool {
		k := 0
		for _, x := range ss {
			k += len(x.Messages())
		}
		return k >= n
	})
	return s.Messages(), err
}

// WaitClosed waits until every session so far is closed and returns them.
func (s *Server) WaitClosed(ctx context.Context) ([]Session, error) {
	err := s.WaitFor(ctx, func(ss []Session) bool {
		for _, x := range ss {
			if !x.Closed {
				return false
			}
		}
		return true
	})
	return s.Sessions(), err
}

// session is the Server's side of one connection.
type session struct {
	s   *Server
	c   net.Conn
	r   *bufio.Reader
	rec *Session

	mail  *string
	rcpts []string
	nmsg  int
}

var errStall = errors.New("stalled")

func (s *Server) serve(c net.Conn, rec *Session) {
	defer s.wg.Done()
	ss := &session{s: s, c: c, r: bufio.NewReaderSize(c, 64<<10), rec: rec}
	end := ss.run()
	if end == errStall.Error() {
		// Hold the connection, reading and dropping, until the peer or
		// Close ends it.
		_ = c.SetReadDeadline(time.Time{})
		_, _ = io.Copy(io.Discard, c)
		end = "stalled"
	}
	c.Close()
	s.update(func() {
		rec.Closed = true
		rec.End = end
		delete(s.conns, c)
	})
}

// startTLS answers STARTTLS and performs the handshake; the session then
// starts over inside TLS, as RFC 3207 has it.
func (ss *session) startTLS() (string, error) {
	if err := ss.say(ReplyStartTLS); err != nil {
		return "", err
	}
	tc := tls.Server(ss.c, ss.s.cfg.TLS)
	_ = tc.SetDeadline(time.Now().Add(ss.s.cfg.Timeout))
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	_ = tc.SetDeadline(time.Time{})
	ss.c, ss.r = tc, bufio.NewReaderSize(tc, 64<<10)
	ss.mail, ss.rcpts = nil, nil
	ss.s.update(func() { ss.rec.TLS = true })
	return "", nil
}

// readLine reads one line with its terminator (LF), at most MaxLine bytes
// kept. At EOF a partial line is returned with io.EOF.
func (ss *session) readLine() ([]byte, error) {
	_ = ss.c.SetReadDeadline(time.Now().Add(ss.s.cfg.Timeout))
	var line []byte
	for {
		frag, err := ss.r.ReadSlice('\n')
		if len(line) < ss.s.cfg.MaxLine {
			room := ss.s.cfg.MaxLine - len(line)
			line = append(line, frag[:min(len(frag), room)]...)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

func (ss *session) send(lines ...string) error {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	_ = ss.c.SetWriteDeadline(time.Now().Add(ss.s.cfg.Timeout))
	_, err := ss.c.Write(b.Bytes())
	return err
}

// say sends one of the built-in replies, as two lines with MultiLine.
func (ss *session) say(line string) error {
	if ss.s.cfg.MultiLine {
		return ss.send(line[:3]+"-upstream: more", line)
	}
	return ss.send(line)
}

func endOf(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error: " + err.Error()
}

func (ss *session) record(line []byte) {
	ss.s.update(func() { ss.rec.Commands = append(ss.rec.Commands, string(line)) })
}

func (ss *session) run() string {
	cfg := &ss.s.cfg
	if cfg.Silent {
		for {
			line, err := ss.readLine()
			if len(line) > 0 {
				ss.record(line)
			}
			if err != nil {
				return endOf(err)
			}
		}
	}
	if cfg.GreetingDelay > 0 {
		time.Sleep(cfg.GreetingDelay)
	}
	ss.s.update(func() { ss.rec.Greeted = true })
	if err := ss.send(cfg.Greeting...); err != nil {
		return endOf(err)
	}
	for {
		raw, err := ss.readLine()
		if len(raw) > 0 {
			ss.record(raw)
		}
		if err != nil {
			return endOf(err)
		}
		end, err := ss.command(strings.TrimRight(string(raw), "\r\n"))
		if err != nil {
			return endOf(err)
		}
		if end != "" {
			return end
		}
	}
}

// command handles one command line; end != "" ends the session.
func (ss *session) command(text string) (end string, err error) {
	cfg := &ss.s.cfg
	for i, re := range ss.s.rules {
		if !re.MatchString(text) {
			continue
		}
		r := cfg.Rules[i]
		if r.Delay > 0 {
			time.Sleep(r.Delay)
		}
		if len(r.Reply) > 0 {
			if err := ss.send(r.Reply...); err != nil {
				return "", err
			}
		}
		switch {
		case r.Stall:
			return errStall.Error(), nil
		case r.Close:
			return "rule", nil
		}
		return "", nil
	}
	verb, _, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	upper := strings.ToUpper(text)
	switch {
	case verb == "EHLO":
		lines := []string{"250" + sep(len(cfg.Extensions) > 0) + UpstreamHost}
		for i, e := range cfg.Extensions {
			lines = append(lines, "250"+sep(i < len(cfg.Extensions)-1)+e)
		}
		ss.mail, ss.rcpts = nil, nil
		return "", ss.send(lines...)
	case verb == "HELO":
		ss.mail, ss.rcpts = nil, nil
		return "", ss.say("250 " + UpstreamHost)
	case strings.HasPrefix(upper, "MAIL FROM:"):
		if ss.mail != nil {
			return "", ss.say(ReplyNested)
		}
		m := strings.TrimSpace(text[len("MAIL FROM:"):])
		ss.mail, ss.rcpts = &m, nil
		return "", ss.say(ReplySenderOK)
	case strings.HasPrefix(upper, "RCPT TO:"):
		if ss.mail == nil {
			return "", ss.say(ReplyNeedMail)
		}
		ss.rcpts = append(ss.rcpts, strings.TrimSpace(text[len("RCPT TO:"):]))
		return "", ss.say(ReplyRcptOK)
	case verb == "DATA":
		return ss.data()
	case verb == "RSET":
		ss.mail, ss.rcpts = nil, nil
		return "", ss.say(ReplyReset)
	case verb == "NOOP":
		return "", ss.say(ReplyNoop)
	case verb == "QUIT":
		if err := ss.say(ReplyBye); err != nil {
			return "", err
		}
		return "quit", nil
	case verb == "VRFY":
		return "", ss.say(ReplyVrfy)
	case verb == "XFORWARD":
		if cfg.RejectXForward {
			return "", ss.say(ReplyXFwdNo)
		}
		return "", ss.say(ReplyXFwdOK)
	case verb == "XCLIENT":
		ss.mail, ss.rcpts = nil, nil
		return "", ss.send(cfg.XClientReply...)
	case verb == "AUTH":
		return "", ss.auth(text)
	case verb == "STARTTLS" && ss.s.cfg.TLS != nil:
		return ss.startTLS()
	case verb == "STARTTLS":
		return "", ss.say(ReplyNoTLS)
	}
	return "", ss.say(ReplyUnknown)
}

func sep(more bool) string {
	if more {
		return "-"
	}
	return " "
}

// auth runs AUTH PLAIN (with or without an initial response) and AUTH
// LOGIN with their 334 steps. The responses are recorded as commands.
func (ss *session) auth(text string) error {
	f := strings.Fields(text)
	steps := 0
	switch {
	case len(f) == 2 && strings.EqualFold(f[1], "LOGIN"):
		steps = 2
	case len(f) == 3 && strings.EqualFold(f[1], "LOGIN"), len(f) == 2 && strings.EqualFold(f[1], "PLAIN"):
		steps = 1
	}
	prompts := []string{"334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"}
	if len(f) == 2 && strings.EqualFold(f[1], "PLAIN") {
		prompts = []string{"334 "}
	} else if steps == 1 {
		prompts = prompts[1:]
	}
	for i := 0; i < steps; i++ {
		if err := ss.send(prompts[i]); err != nil {
			return err
		}
		line, err := ss.readLine()
		if len(line) > 0 {
			ss.record(line)
		}
		if err != nil {
			return err
		}
		if strings.TrimRight(string(line), "\r\n") == "*" {
			return ss.say(ReplyAuthAbort)
		}
	}
	if ss.s.cfg.RejectAuth {
		return ss.say(ReplyAuthNo)
	}
	return ss.say(ReplyAuthOK)
}

func (ss *session) data() (string, error) {
	cfg := &ss.s.cfg
	if ss.mail == nil {
		return "", ss.say(ReplyNeedMail)
	}
	if len(ss.rcpts) == 0 {
		return "", ss.say(ReplyNoRcpts)
	}
	if err := ss.say(ReplyData); err != nil {
		return "", err
	}
	ss.nmsg++
	t := Transaction{Mail: *ss.mail, Rcpts: ss.rcpts}
	ss.mail, ss.rcpts = nil, nil
	idx := -1
	ss.s.update(func() {
		ss.rec.Transactions = append(ss.rec.Transactions, t)
		idx = len(ss.rec.Transactions) - 1
	})
	prevCRLF := true
	for {
		line, err := ss.readLine()
		end := false
		if err == nil {
			if cfg.LaxDot {
				end = string(line) == ".\r\n" || string(line) == ".\n"
			} else {
				end = string(line) == ".\r\n" && prevCRLF
			}
		}
		ss.s.update(func() {
			tr := &ss.rec.Transactions[idx]
			if end {
				tr.Terminated = true
			} else {
				tr.Data = append(tr.Data, line...)
			}
		})
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "eof-in-data", nil
			}
			return "", err
		}
		if end {
			break
		}
		prevCRLF = bytes.HasSuffix(line, []byte("\r\n"))
	}
	if cfg.StallDataEnd {
		return errStall.Error(), nil
	}
	if cfg.DataFinalDelay > 0 {
		time.Sleep(cfg.DataFinalDelay)
	}
	final := cfg.DataFinal
	if final == nil {
		final = []string{Queued(ss.rec.Index, ss.nmsg)}
	}
	ss.s.update(func() { ss.rec.Transactions[idx].Reply = final[len(final)-1] })
	if cfg.DataFinal == nil {
		return "", ss.say(final[0])
	}
	return "", ss.send(final...)
}
