// Package session is the edge's SMTP session: one client connection
// relayed to one upstream connection, with the DATA phase intercepted and
// handed to the filtering pipeline.
//
// It is a small hand-written state machine rather than go-smtp's server
// because the edge is a transparent relay: the upstream's replies, success
// texts included, reach the client verbatim, the extension list is derived
// per connection from the upstream's, and commands the edge does not know
// are relayed rather than refused. See docs/architecture.md.
package session

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/internal/header"
	"github.com/sluice-mail/sluice/internal/upstream"
	"github.com/sluice-mail/sluice/internal/wire"
)

// Config is what a session needs of the edge's configuration.
type Config struct {
	Hostname          string          // in the greeting and the first EHLO line
	TimeOut           time.Duration   // every read and write, both sides
	KeepAlives        time.Duration   // NOOP to an idle upstream while a message is received and filtered; 0 = off
	RejectAll         bool            // FilterType reject
	FilterReject      string          // the reply for RejectAll, a complete reply line
	SkipAuthenticated bool            // Skip: authenticated
	XClient           bool            // send XCLIENT ADDR= when the upstream offers it
	MaxMessageSize    int64           // decoded bytes; 0 = no limit
	RejectBare        bool            // refuse bare CR/LF in DATA instead of normalising
	RejectNUL         bool            // refuse NUL bytes in DATA instead of passing them on
	Header            header.Template // added to delivered mail

	// Limits on what one client may cost (see docs/configuration.md).
	RecipientLimit     int                   // recipients per message; 0 = none
	HardErrorLimit     int                   // errors before 421; 0 = none
	RejectEarlyTalkers bool                  // 554 to a client that talks before the greeting
	CommandDeadline    time.Duration         // total time for one command line; 0 = none
	DataDeadline       time.Duration         // total time for a message; 0 = none
	DataMinRate        int64                 // bytes per second that extend DataDeadline
	XForwardTrusted    func(netip.Addr) bool // whose XFORWARD is believed; nil = nobody

	// TLS, if set, is offered with STARTTLS; AUTH then waits for it.
	TLS *tls.Config
	// TLSRequired refuses MAIL before STARTTLS.
	TLSRequired bool
	// UpstreamTLS, if set, is asked of the upstream with STARTTLS before
	// the client is greeted; UpstreamTLSRequired makes an upstream
	// without it a failure.
	UpstreamTLS         *tls.Config
	UpstreamTLSRequired bool

	// OnLimit, if set, is called when a limit ends a command or a session
	// (one of the Limit* names).
	OnLimit func(limit string)

	// OnMessage, if set, is called with the outcome of every DATA
	// attempt.
	OnMessage func(Kind)

	// OnPanic, if set, is called when a session recovers from a panic.
	OnPanic func()
}

// Limits that end a command or a session, as passed to OnLimit.
const (
	LimitCommandDeadline = "command_deadline"
	LimitDataDeadline    = "data_deadline"
	LimitHardErrors      = "hard_error_limit"
	LimitEarlyTalker     = "early_talker"
	LimitRecipients      = "recipient_limit"
	LimitMessageSize     = "message_size"
	LimitXForward        = "xforward_untrusted"
	LimitTLSPipelined    = "starttls_pipelined"
)

// Envelope is what the pipeline needs to know of one message.
type Envelope struct {
	Sender     *string // nil when no MAIL was accepted
	Recipients []string
	ClientAddr string
	ClientHelo string
	ServerAddr string
	RemoteAddr *string  // XFORWARD ADDR, accepted by the upstream
	RemoteHelo *string  // XFORWARD HELO
	TLS        *TLSInfo // the client's TLS session; nil for none
}

// TLSInfo is what the filter and the job record learn of a client's TLS
// session.
type TLSInfo struct {
	Version string // "TLSv1.3"
	Cipher  string // "TLS_AES_128_GCM_SHA256"
}

func tlsInfo(st tls.ConnectionState) *TLSInfo {
	v := strings.Replace(tls.VersionName(st.Version), "TLS 1.", "TLSv1.", 1)
	return &TLSInfo{Version: v, Cipher: tls.CipherSuiteName(st.CipherSuite)}
}

// Message is a message handed to the pipeline: its id, when it was
// received, and the verdict once there is one.
type Message struct {
	ID       string
	Received time.Time
	Size     int64
	Verdict  *Verdict
	// Deadline is the final dot plus job_timeout: reading the copy to
	// deliver ends by then too. Zero: no deadline.
	Deadline time.Time
}

// Pipeline stores, filters and returns messages. The edge implements it
// with the blob store and the NATS job queue.
type Pipeline interface {
	// Filter reads body to its end into the store, has the message
	// filtered and returns its verdict, or an error if any part of the
	// infrastructure failed. It returns a non-nil Message once an id was
	// assigned, even with an error.
	Filter(ctx context.Context, e *Envelope, body io.Reader) (*Message, error)
	// Open opens the message to deliver for an accepting verdict.
	Open(ctx context.Context, m *Message) (io.ReadCloser, error)
	// Finish is called once the message's transaction is over.
	Finish(m *Message)
}

// Replies the edge makes up itself. Where proxsmtpd answers without an
// enhanced status code, so do these: clients and the compat harness see
// the same reply. They never say "upstream", a word that marks the
// upstream's own replies in the compat harness.
const (
	replyStartData    = "354 Start mail input; end with <CRLF>.<CRLF>"
	replyNotImpl      = "502 Command not implemented"
	replyNoXClient    = "554 Insufficient authorization"
	replyLineTooLong  = "500 Line too long"
	replyBadLine      = "500 Invalid characters in command line"
	replyMailSyntax   = "501 5.5.4 Syntax: MAIL FROM:<address>"
	replyRcptSyntax   = "501 5.5.4 Syntax: RCPT TO:<address>"
	replyBadSender    = "501 5.1.7 Bad sender address syntax"
	replyBadRcpt      = "501 5.1.3 Bad recipient address syntax"
	replyTooManyRcpts = "452 4.5.3 Error: too many recipients"
	replySizeDeclared = "552 5.3.4 Message size exceeds fixed limit"
	replyNoXForward   = "550 5.7.0 Error: insufficient XFORWARD authorization"
	replyEarlyTalker  = "554 5.5.1 Error: talked before the greeting"
	replyStartTLS     = "220 2.0.0 Ready to start TLS"
	replyNeedTLS      = "530 5.7.0 Must issue a STARTTLS command first"
	replyTLSActive    = "554 5.5.1 Error: TLS already active"
	replyTLSSyntax    = "501 5.5.4 Syntax: STARTTLS"
	replyTLSPipelined = "554 5.5.1 Error: command pipelined after STARTTLS"
	replyNUL          = "554 5.6.0 Message contains NUL bytes"
	replyNeedMail     = "503 5.5.1 Error: need MAIL command"
	replyNeedHello    = "503 5.5.1 Error: send HELO/EHLO first"
	replyNoRcpt       = "554 5.5.1 Error: no valid recipients"
	replyTooBig       = "552 5.3.4 Message size exceeds fixed limit"
	replyBare         = "554 5.6.0 Message contains a bare CR or LF; use CRLF line endings"
	replyTempFail     = "451 4.3.0 Temporary failure, please try again later"
	replyLocalError   = "451 Local Error: delivery to the next hop failed"
	replyBadVerdict   = "451 Local Error"
)

// closing is a 421 that ends the session. It names the edge after the
// enhanced status code, as Postfix's do.
type closing struct{ enhanced, text string }

var (
	closeUpstreamGone = closing{"4.4.2", "Lost connection to the next hop"}
	closeIdle         = closing{"4.4.2", "Error: timeout exceeded"}
	closeCmdDeadline  = closing{"4.4.2", "Error: command deadline exceeded"}
	closeDataDeadline = closing{"4.4.2", "Error: data deadline exceeded"}
	closeTooManyErrs  = closing{"4.7.0", "Error: too many errors"}
	closeShutdown     = closing{"4.3.2", "Service shutting down, please try again later"}
	closeUnreachable  = closing{"4.4.1", "Next hop unavailable, please try again later"}
	closePanic        = closing{"4.3.0", "Error: internal error"}
	closeUpstreamTLS  = closing{"4.7.0", "Error: secure connection to the next hop failed, please try again later"}
)

// closingReply is c's reply line for this edge.
func (s *Session) closingReply(c closing) string {
	return "421 " + c.enhanced + " " + s.cfg.Hostname + " " + c.text
}

// upstreamClosing is the reply when the upstream failed: c, unless Stop
// interrupted it, which is the edge shutting down.
func (s *Session) upstreamClosing(c closing) string {
	if s.stopped.Load() {
		c = closeShutdown
	}
	return s.closingReply(c)
}

// Session is one client connection.
type Session struct {
	cfg  *Config
	pipe Pipeline
	log  *slog.Logger
	id   string // connection id for logs

	conn    net.Conn  // the client's connection as accepted
	tlsConn *tls.Conn // after STARTTLS (or an implicit-TLS listener): the session's transport
	tls     *TLSInfo
	cr      *bufio.Reader
	cw      *bufio.Writer
	client  *clientConn
	up      *upstream.Conn
	localIP string

	clientIP string
	helo     string // the client's EHLO/HELO argument
	heloVerb string
	offered  map[string]string // the upstream's EHLO extensions

	xclientPending bool
	xclientDone    bool
	greeted        bool // a HELO or EHLO was accepted
	authenticated  bool
	xforwardOK     bool // the client may send XFORWARD
	errors         int  // errors so far, for HardErrorLimit

	txn transaction

	draining atomic.Bool
	stopped  atomic.Bool
	idle     atomic.Bool // reading a command with no transaction open; the one thing Drain reads
}

// transaction is the envelope the upstream accepted, and the XFORWARD
// attributes it accepted for this transaction.
type transaction struct {
	sender     *string
	mail       wire.Path // the MAIL argument the upstream accepted
	recipients []string
	remoteAddr *string
	remoteHelo *string
	xforward   []string // the XFORWARD lines the upstream accepted, to send again after a RSET
}

func (t *transaction) reset() { *t = transaction{} }

// open reports whether a transaction is in progress (MAIL accepted).
func (t *transaction) open() bool { return t.sender != nil }

// New prepares a session on an accepted client connection. up is the
// upstream connection, already dialled; nil means the upstream could not
// be reached (the client then gets 421 4.4.1).
func New(cfg *Config, pipe Pipeline, log *slog.Logger, id string, conn net.Conn, up *upstream.Conn) *Session {
	s := &Session{cfg: cfg, pipe: pipe, id: id, conn: conn, up: up}
	s.client = &clientConn{s: s}
	s.cr = bufio.NewReaderSize(s.client, 8192)
	s.cw = bufio.NewWriterSize(s.client, 4096)
	s.clientIP = hostIP(conn.RemoteAddr())
	s.localIP = hostIP(conn.LocalAddr())
	s.log = log.With("conn", id, "client", s.clientIP)
	s.xforwardOK = cfg.XForwardTrusted != nil && cfg.XForwardTrusted(PolicyAddr(conn.RemoteAddr()))
	if tc, ok := conn.(*tls.Conn); ok {
		// An implicit-TLS listener: the handshake is done.
		s.tlsConn, s.tls = tc, tlsInfo(tc.ConnectionState())
	}
	return s
}

// transport is what the session reads and writes: the TLS session once
// there is one. Only the session's goroutine calls it.
func (s *Session) transport() net.Conn {
	if s.tlsConn != nil {
		return s.tlsConn
	}
	return s.conn
}

// PolicyAddr is the client address that trust and limits apply to. A
// client on a Unix socket is on this host and counts as 127.0.0.1.
func PolicyAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
		return netip.Addr{}
	case *net.UnixAddr:
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return netip.Addr{}
}

func hostIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case nil:
		return ""
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// Drain asks the session to end at its next idle moment: once no
// transaction is open it answers 421 and closes.
func (s *Session) Drain() {
	s.draining.Store(true)
	if s.idle.Load() {
		s.client.interrupt()
	}
}

// Stop ends the session at once: the next read fails on either side, and
// the client gets a 421 if the session is between commands or waits for
// the upstream. Only a reply to a message already sent upstream is still
// waited for (TimeOut at most): see upstream.Conn.Interrupt.
func (s *Session) Stop() {
	s.draining.Store(true)
	s.stopped.Store(true)
	s.client.interrupt()
	if s.up != nil {
		s.up.Interrupt()
	}
}

// closeClient ends the client connection with a FIN, not a reset: closing
// a socket with unread input (a client that already sent its next
// command) makes the kernel answer RST, and the client may then lose the
// last reply, a 421 included. So: shut down the sending side, read what
// the client still sends for a moment (in the background), then close.
func (s *Session) closeClient() { closeGently(s.transport()) }

// closeGently sends FIN and lets the connection linger in the
// background, so that the session (and its MaxConnections slot) ends now.
func closeGently(c net.Conn) {
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil {
		_ = c.Close()
		return
	}
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		_ = c.Close()
	}()
}

// Refuse answers a connection the edge will not serve (over
// MaxConnections) with one reply line and closes it gently.
func Refuse(c net.Conn, reply string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, reply+"\r\n"); err != nil {
		_ = c.Close()
		return
	}
	closeGently(c)
}

// lingerTime bounds how long closeClient waits for the client to close.
const lingerTime = 2 * time.Second

// errStop means the session is over; the connection is closed.
var errStop = errors.New("session over")

// Serve runs the session until the client or the upstream goes away.
func (s *Session) Serve(ctx context.Context) {
	defer s.closeClient()
	if s.up == nil {
		s.reply(s.closingReply(closeUnreachable))
		return
	}
	defer s.up.Close()
	defer s.recoverPanic()
	if err := s.greet(); err != nil {
		return
	}
	for {
		if err := s.next(ctx); err != nil {
			return
		}
	}
}

// recoverPanic contains a panic to its session: the client gets a 421,
// the log the stack, and every other session goes on. The upstream's
// transaction, if any, ends without a final dot when its connection
// closes.
func (s *Session) recoverPanic() {
	r := recover()
	if r == nil {
		return
	}
	s.log.Error("session panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if s.cfg.OnPanic != nil {
		s.cfg.OnPanic()
	}
	s.cw.Reset(s.client) // whatever half a reply it held
	s.reply(s.closingReply(closePanic))
}

func (s *Session) greet() error {
	rep, err := s.up.ReadReply()
	if err != nil {
		s.log.Warn("upstream did not greet", "err", err)
		s.reply(s.upstreamClosing(closeUnreachable))
		return errStop
	}
	if rep.Code == 220 {
		if s.cfg.RejectEarlyTalkers && pendingInput(s.conn) {
			// RFC 5321 4.3.1: a client waits for the greeting. One that
			// does not is a bot, or pipelines blindly (behaviour.md#commands).
			s.log.Warn("client talked before the greeting")
			s.limit(LimitEarlyTalker)
			s.reply(replyEarlyTalker)
			s.up.Quit()
			return errStop
		}
		if err := s.upstreamTLS(); err != nil {
			return err
		}
		// behaviour.md#connection: the edge speaks for itself once the upstream is ready.
		return s.reply("220 " + s.cfg.Hostname + " ESMTP")
	}
	// behaviour.md#connection: any other greeting (554 and such) reaches the client as it is;
	// the client may still QUIT politely.
	return s.relay(rep)
}

// reply writes one line (CRLF appended) to the client.
func (s *Session) reply(line string) error {
	s.cw.WriteString(line)
	s.cw.WriteString("\r\n")
	if err := s.cw.Flush(); err != nil {
		return errStop
	}
	return nil
}

// relay writes the upstream's reply to the client verbatim; a 421 ends the
// session (behaviour.md#other: the upstream is closing).
func (s *Session) relay(rep wire.Reply) error {
	if c := rep.Class(); c == 4 || c == 5 {
		s.errors++
	}
	s.cw.Write(rep.Bytes())
	if err := s.cw.Flush(); err != nil {
		return errStop
	}
	if rep.Code == 421 {
		return errStop
	}
	return nil
}

// refuse answers a command with one of the edge's own error replies, which
// count towards HardErrorLimit.
func (s *Session) refuse(line string) error {
	s.errors++
	return s.reply(line)
}

// limit counts a limit that ended a command or the session.
func (s *Session) limit(name string) {
	if s.cfg.OnLimit != nil {
		s.cfg.OnLimit(name)
	}
}

// upstreamLost answers the current command when the upstream failed, and
// ends the session: without its upstream it cannot go on.
func (s *Session) upstreamLost(err error) error {
	s.log.Warn("upstream connection lost", "err", err)
	s.reply(s.upstreamClosing(closeUpstreamGone))
	return errStop
}

// command relays one command line and its reply.
func (s *Session) command(line string) (wire.Reply, error) {
	rep, err := s.up.Command(line)
	if err != nil {
		return rep, s.upstreamLost(err)
	}
	return rep, nil
}

// next reads and handles one command.
func (s *Session) next(ctx context.Context) error {
	// idle is published before draining is checked, and Drain sets
	// draining before it reads idle: one of them sees the other.
	s.idle.Store(!s.txn.open())
	if s.draining.Load() && (!s.txn.open() || s.stopped.Load()) {
		s.idle.Store(false)
		s.reply(s.closingReply(closeShutdown))
		s.up.Quit()
		return errStop
	}
	if s.cfg.HardErrorLimit > 0 && s.errors >= s.cfg.HardErrorLimit {
		// RFC 5321 4.3.2 lets a server give up on a client that keeps
		// failing; Postfix's smtpd_hard_error_limit does the same.
		s.idle.Store(false)
		s.log.Warn("too many errors", "errors", s.errors)
		s.limit(LimitHardErrors)
		s.reply(s.closingReply(closeTooManyErrs))
		s.up.Quit()
		return errStop
	}
	line, err := s.readCommand()
	s.idle.Store(false)
	if err == nil && s.client.interrupted() {
		// Drain interrupted a read that had already got its line: serve
		// the command; only Stop's interrupt must stay armed.
		s.client.clearInterrupt()
		if s.stopped.Load() {
			s.client.interrupt()
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrLineTooLong):
		return s.refuse(replyLineTooLong)
	case errors.Is(err, wire.ErrBadLine):
		return s.refuse(replyBadLine)
	case s.client.interrupted():
		s.client.clearInterrupt()
		return nil // the check at the top decides
	case errors.Is(err, errDeadline):
		s.log.Info("client exceeded the command deadline", "deadline", s.cfg.CommandDeadline)
		s.limit(LimitCommandDeadline)
		s.reply(s.closingReply(closeCmdDeadline))
		s.up.Quit()
		return errStop
	case isTimeout(err):
		s.log.Info("client idle timeout")
		s.reply(s.closingReply(closeIdle))
		s.up.Quit()
		return errStop
	default:
		return errStop // client gone (behaviour.md#connection, #data)
	}

	cmd := wire.ParseCommand(line)
	if s.xclientPending && cmd.Verb != "QUIT" {
		if err := s.sendXClient(); err != nil {
			return err
		}
	}
	return s.dispatch(ctx, cmd)
}

// readCommand reads one command line within CommandDeadline, counted from
// its first byte: waiting for a command is TimeOut's business.
func (s *Session) readCommand() (string, error) {
	s.client.setLazyBudget(s.cfg.CommandDeadline)
	defer s.client.clearBudget()
	return wire.ReadLine(s.cr)
}

// dispatch handles one command. Every line relayed upstream is the
// command as the edge understood it (cmd.Line, or rebuilt from a parsed
// path), never the client's raw text: the upstream cannot read a command
// the edge did not see (issue 6: verbs hidden behind whitespace).
func (s *Session) dispatch(ctx context.Context, cmd wire.Command) error {
	if s.cfg.XClient && !s.greeted && !beforeHello(cmd.Verb) {
		// XCLIENT goes with the greeting: without one the upstream would
		// take the client for the edge itself, trusted as it may be.
		return s.refuse(replyNeedHello)
	}
	switch cmd.Verb {
	case "EHLO", "HELO":
		return s.hello(cmd)
	case "STARTTLS":
		if s.cfg.TLS != nil {
			return s.startTLS(cmd)
		}
		return s.refuse(replyNotImpl) // not offered, so not accepted; never relayed
	case "BDAT", "XEXCH50", "PROXY":
		// PROXY: a header is read only from a trusted load balancer,
		// before the dialog; from the client it is a bad command, never
		// passed on for the upstream to believe.
		// behaviour.md#commands: not offered, so not accepted; never relayed.
		return s.refuse(replyNotImpl)
	case "XCLIENT":
		// behaviour.md#commands: a client may not speak for someone else.
		s.log.Warn("client attempted use of privileged XCLIENT feature")
		return s.refuse(replyNoXClient)
	case "MAIL":
		return s.mail(cmd)
	case "RCPT":
		return s.rcpt(cmd)
	case "DATA":
		return s.data(ctx)
	case "RSET":
		rep, err := s.command(cmd.Line)
		if err != nil {
			return err
		}
		if rep.Class() == 2 {
			s.txn.reset()
		}
		return s.relay(rep)
	case "XFORWARD":
		return s.xforward(cmd)
	case "AUTH":
		if s.cfg.TLS != nil && s.tls == nil {
			// As Postfix's smtpd_tls_auth_only: no password in clear
			// where TLS is on offer.
			return s.refuse(replyNeedTLS)
		}
		return s.auth(cmd.Line)
	case "QUIT":
		rep, err := s.command(cmd.Line)
		if err != nil {
			return err
		}
		s.relay(rep)
		return errStop
	}
	// behaviour.md#commands: everything else is relayed, replies verbatim.
	rep, err := s.command(cmd.Line)
	if err != nil {
		return err
	}
	return s.relay(rep)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// beforeHello reports whether verb is served before any HELO or EHLO when
// XClient is on.
func beforeHello(verb string) bool {
	switch verb {
	case "EHLO", "HELO", "QUIT", "NOOP", "RSET", "HELP", "STARTTLS", "BDAT", "XEXCH50", "XCLIENT":
		return true
	}
	return false
}

func (s *Session) hello(cmd wire.Command) error {
	if cmd.Verb == "HELO" && s.cfg.XClient && !s.xclientDone {
		if err := s.xclientForHelo(cmd.Arg); err != nil {
			return err
		}
	}
	rep, err := s.command(cmd.Line)
	if err != nil {
		return err
	}
	if rep.Class() != 2 {
		return s.relay(rep)
	}
	// behaviour.md#ehlo: a new greeting starts over.
	s.txn.reset()
	s.greeted = true
	s.helo, s.heloVerb = cmd.Arg, cmd.Verb
	o := wire.EHLOOptions{MaxSize: s.cfg.MaxMessageSize}
	if !s.xforwardOK {
		o.Hide = []string{"XFORWARD"}
	}
	if s.cfg.TLS != nil && s.tls == nil {
		o.Add = []string{"STARTTLS"}
		o.Hide = append(o.Hide, "AUTH")
	}
	out, offered := wire.FilterEHLO(rep, s.cfg.Hostname, o)
	if cmd.Verb == "EHLO" {
		s.offered = offered
		// behaviour.md#xclient: XCLIENT only when the upstream says it takes it.
		if _, ok := offered["XCLIENT"]; ok && s.cfg.XClient && !s.xclientDone {
			s.xclientPending = true
		}
	} else {
		s.offered = nil
	}
	return s.relay(out)
}

// sendXClient tells the upstream who the client is, once, before the
// first command after EHLO (behaviour.md#xclient). Postfix answers 220 and restarts the
// session, so the EHLO is sent again; its reply is the edge's, not the
// client's.
func (s *Session) sendXClient() error {
	s.xclientPending, s.xclientDone = false, true
	rep, err := s.up.Command("XCLIENT ADDR=" + xclientAddr(s.clientIP))
	if err != nil {
		return s.upstreamLost(err)
	}
	switch {
	case rep.Code == 220:
		if _, err := s.command(s.heloVerb + " " + s.helo); err != nil {
			return err
		}
	case rep.Class() != 2:
		s.log.Warn("server didn't accept XCLIENT", "reply", rep.Text())
	}
	return nil
}

// xclientForHelo sends XCLIENT ahead of a client's HELO. A HELO reply
// lists no extensions, so the edge asks with an EHLO of its own whether
// the upstream takes XCLIENT (proxsmtpd assumes it does, behaviour.md#xclient); the client's
// HELO follows the upstream's new greeting. Without this a HELO client
// would be the edge itself to the upstream: with XClient on, an open relay.
func (s *Session) xclientForHelo(arg string) error {
	rep, err := s.up.Command("EHLO " + arg)
	if err != nil {
		return s.upstreamLost(err)
	}
	if _, offered := wire.FilterEHLO(rep, s.cfg.Hostname, wire.EHLOOptions{}); offered != nil {
		if _, ok := offered["XCLIENT"]; ok {
			s.xclientDone = true
			rep, err := s.up.Command("XCLIENT ADDR=" + xclientAddr(s.clientIP))
			if err != nil {
				return s.upstreamLost(err)
			}
			if rep.Class() != 2 {
				s.log.Warn("server didn't accept XCLIENT", "reply", rep.Text())
			}
		}
	}
	return nil
}

func xclientAddr(ip string) string {
	if strings.Contains(ip, ":") {
		return "IPV6:" + ip
	}
	return ip
}

// rejectAll reports whether FilterType reject applies to this client.
func (s *Session) rejectAll() bool {
	return s.cfg.RejectAll && !(s.cfg.SkipAuthenticated && s.authenticated)
}

func (s *Session) mail(cmd wire.Command) error {
	if s.rejectAll() {
		return s.reply(s.cfg.FilterReject) // behaviour.md#reject-and-passthrough: not forwarded
	}
	if s.cfg.TLSRequired && s.tls == nil {
		return s.refuse(replyNeedTLS)
	}
	p, err := wire.ParseMail(cmd.Arg)
	switch {
	case errors.Is(err, wire.ErrPathSyntax):
		return s.refuse(replyMailSyntax)
	case err != nil:
		return s.refuse(replyBadSender)
	}
	if size, ok := p.Param("SIZE"); ok && s.cfg.MaxMessageSize > 0 {
		// RFC 1870: refuse now what would be refused after the transfer.
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n > s.cfg.MaxMessageSize {
			s.limit(LimitMessageSize)
			return s.reply(replySizeDeclared)
		}
	}
	rep, err := s.command(verbAs(cmd) + " " + p.Arg())
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		// A new transaction: the upstream forgot any earlier recipients.
		addr := p.Addr
		s.txn.sender = &addr
		s.txn.mail = p
		s.txn.recipients = nil
	}
	return s.relay(rep)
}

func (s *Session) rcpt(cmd wire.Command) error {
	if s.rejectAll() {
		return s.reply(s.cfg.FilterReject)
	}
	p, err := wire.ParseRcpt(cmd.Arg)
	switch {
	case errors.Is(err, wire.ErrPathSyntax):
		return s.refuse(replyRcptSyntax)
	case err != nil:
		return s.refuse(replyBadRcpt)
	}
	if n := s.cfg.RecipientLimit; n > 0 && len(s.txn.recipients) >= n {
		// Not an error of the client's: it sends the rest in another
		// transaction (RFC 5321 4.5.3.1.8).
		s.limit(LimitRecipients)
		return s.reply(replyTooManyRcpts)
	}
	rep, err := s.command(verbAs(cmd) + " " + p.Arg())
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		s.txn.recipients = append(s.txn.recipients, p.Addr)
	}
	return s.relay(rep)
}

// verbAs is the verb as the client wrote it.
func verbAs(cmd wire.Command) string {
	verb, _, _ := strings.Cut(cmd.Line, " ")
	return verb
}

func (s *Session) xforward(cmd wire.Command) error {
	if !s.xforwardOK {
		// Only a trusted MTA may say who its client was; anyone else
		// would choose the filter's REMOTE and the upstream's log.
		s.log.Warn("XFORWARD from an untrusted client refused")
		s.limit(LimitXForward)
		return s.refuse(replyNoXForward)
	}
	rep, err := s.command(cmd.Line)
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		// behaviour.md#xforward: attributes accumulate over XFORWARD lines, for one
		// transaction.
		s.txn.xforward = append(s.txn.xforward, cmd.Line)
		attrs := wire.ParseXForward(cmd.Arg)
		if v, ok := attrs["ADDR"]; ok {
			s.txn.remoteAddr = &v
		}
		if v, ok := attrs["HELO"]; ok {
			s.txn.remoteHelo = &v
		}
	}
	return s.relay(rep)
}

// auth relays an AUTH exchange: while the upstream answers 334, the
// client's next line is a response, not a command (behaviour.md#auth).
func (s *Session) auth(line string) error {
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	for rep.Code == 334 {
		if err := s.relay(rep); err != nil {
			return err
		}
		resp, err := s.readCommand()
		if err != nil {
			if !errors.Is(err, wire.ErrLineTooLong) && !errors.Is(err, wire.ErrBadLine) {
				return errStop
			}
			resp = "*" // cancel the exchange (RFC 4954)
		}
		if rep, err = s.command(resp); err != nil {
			return err
		}
	}
	if rep.Code == 235 {
		s.authenticated = true
	}
	return s.relay(rep)
}

func (s *Session) envelope() *Envelope {
	return &Envelope{
		Sender:     s.txn.sender,
		Recipients: s.txn.recipients,
		ClientAddr: s.clientIP,
		ClientHelo: s.helo,
		ServerAddr: s.up.RemoteIP(),
		RemoteAddr: s.txn.remoteAddr,
		RemoteHelo: s.txn.remoteHelo,
		TLS:        s.tls,
	}
}

// data handles DATA: checks, then the skip path or the filtered path.
func (s *Session) data(ctx context.Context) error {
	if s.rejectAll() {
		// behaviour.md#reject-and-passthrough: refused, and the upstream's transaction reset.
		defer s.txn.reset()
		return s.conclude(nil, outcome{Kind: Rejected, Reply: s.cfg.FilterReject, reset: true})
	}
	if s.cfg.SkipAuthenticated && s.authenticated {
		return s.skip()
	}
	// behaviour.md#data: no 354 for a message nobody can receive.
	if !s.txn.open() {
		return s.refuse(replyNeedMail)
	}
	if len(s.txn.recipients) == 0 {
		return s.refuse(replyNoRcpt)
	}
	if err := s.reply(replyStartData); err != nil {
		return err
	}
	defer s.txn.reset() // behaviour.md#envelope: every DATA attempt ends the transaction
	return s.filtered(ctx)
}

// bodyReader remembers why reading the message stopped, so that a client
// failure can be told from a store failure.
type bodyReader struct {
	r   *wire.DataReader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

// filtered receives the message into the pipeline, waits for the verdict
// and acts on it. It always reads the message to its end before replying
// (behaviour.md#data).
func (s *Session) filtered(ctx context.Context) error {
	start := time.Now()
	body := &bodyReader{r: s.dataReader()}
	s.client.setBudget(s.cfg.DataDeadline, s.cfg.DataMinRate)
	stopKA := s.up.KeepAlive(s.cfg.KeepAlives) // behaviour.md#timeouts: while receiving and filtering
	m, err := s.pipe.Filter(ctx, s.envelope(), body)
	stopKA()
	if m != nil {
		defer s.pipe.Finish(m)
	}
	if body.err != io.EOF {
		// The message was not read to its end: the body failed, or the
		// pipeline gave up on it. Read the rest, whatever happens.
		if body.err == nil || refusable(body.err) {
			if derr := body.r.Discard(); derr != nil {
				body.err = derr
			}
		}
	}
	s.client.clearBudget()
	if o, ok := s.bodyOutcome(body.err); ok {
		return s.conclude(m, o)
	}
	if err != nil {
		return s.conclude(m, outcome{Kind: TempFailed, Reply: replyTempFail, reset: true,
			Attrs: []any{"err", err, "duration_ms", since(start)}})
	}
	return s.act(ctx, m, start)
}

// bodyOutcome is the outcome of a message that was not received whole,
// given why reading it stopped; ok is false when it was.
func (s *Session) bodyOutcome(err error) (o outcome, ok bool) {
	switch {
	case err == nil || err == io.EOF:
		return outcome{}, false
	case errors.Is(err, errDeadline):
		return s.deadlineOutcome(err), true
	case refusable(err):
		k, reply := refusal(err)
		o = outcome{Kind: k, Reply: reply, reset: true}
		if k == TooBig {
			o.Attrs = []any{"limit", s.cfg.MaxMessageSize}
		}
		return o, true
	}
	// behaviour.md#data: the client went away mid-DATA; nothing to answer, unless Stop
	// cut it short (behaviour.md#connection: 421, not a silent close).
	return outcome{Kind: ClientGone, Reply: s.stoppedReply(), reset: true, end: true, Attrs: []any{"err", err}}, true
}

// deadlineOutcome ends a session whose client took longer than
// DataDeadline (extended by DataMinRate) to send its message.
func (s *Session) deadlineOutcome(err error) outcome {
	return outcome{Kind: Deadline, Reply: s.closingReply(closeDataDeadline), end: true,
		Attrs: []any{"err", err, "deadline", s.cfg.DataDeadline, "min_rate", s.cfg.DataMinRate}}
}

// since is the time since start, as the summary line shows it.
// since is the milliseconds from start, for the logs' duration_ms.
func since(start time.Time) int64 { return time.Since(start).Milliseconds() }

// dataReader reads the message the client sends after 354.
func (s *Session) dataReader() *wire.DataReader {
	dr := wire.NewDataReader(s.cr, s.cfg.MaxMessageSize, s.cfg.RejectBare)
	if s.cfg.RejectNUL {
		dr.RejectNUL()
	}
	return dr
}

// refusable reports whether err refuses the message itself (too big, bare
// line endings, NUL): the client is told why once the message is read.
func refusable(err error) bool {
	return errors.Is(err, wire.ErrTooBig) || errors.Is(err, wire.ErrBareLineEnding) || errors.Is(err, wire.ErrNUL)
}

// refusal is the outcome and reply for a message refused for what it
// holds (a refusable error).
func refusal(err error) (Kind, string) {
	switch {
	case errors.Is(err, wire.ErrTooBig):
		return TooBig, replyTooBig
	case errors.Is(err, wire.ErrNUL):
		return NULByte, replyNUL
	}
	return BareLineEnding, replyBare
}

// stoppedReply is the reply for a client whose message Stop cut short:
// the edge is shutting down. "" when Stop did not.
func (s *Session) stoppedReply() string {
	if s.stopped.Load() && s.client.interrupted() {
		return s.closingReply(closeShutdown)
	}
	return ""
}

// act carries out a verdict.
func (s *Session) act(ctx context.Context, m *Message, start time.Time) error {
	v := m.Verdict
	reply, ok := v.reply()
	if !ok {
		if v == nil {
			v = &Verdict{}
		}
		return s.conclude(m, outcome{Kind: TempFailed, Reply: replyBadVerdict, reset: true,
			Attrs: []any{"err", "malformed verdict", "action", v.Action.String(), "reply", v.Reply}})
	}
	if v.Action != ActionAccept {
		// behaviour.md#filtering: the upstream never sees DATA; its transaction is reset.
		o := verdictOutcome(v, reply)
		o.Attrs = append(o.Attrs, "duration_ms", since(start))
		return s.conclude(m, o)
	}
	return s.deliver(ctx, m, start)
}

// deliver opens the upstream's DATA phase and sends the filtered message
// with the configured Header (behaviour.md#delivery).
func (s *Session) deliver(ctx context.Context, m *Message, start time.Time) error {
	if !m.Deadline.IsZero() {
		// The sender stops waiting at the deadline: a store that hangs
		// while the copy is opened or read must not make the edge deliver
		// after it (a duplicate once the sender retries).
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, m.Deadline)
		defer cancel()
	}
	// Open first: once the upstream said 354 there is no clean way back.
	rc, err := s.pipe.Open(ctx, m)
	if err != nil {
		return s.conclude(m, outcome{Kind: TempFailed, Reply: replyTempFail, reset: true, Attrs: []any{"err", err}})
	}
	defer rc.Close()
	if ne := m.Verdict.Envelope; ne != nil {
		if o, ok := s.reenvelope(ne); !ok {
			return s.conclude(m, o)
		}
	}
	rep, err := s.up.Command("DATA")
	if err != nil {
		// behaviour.md#replies
		return s.conclude(m, outcome{Kind: UpstreamError, Reply: replyLocalError, end: true, Attrs: []any{"err", err}})
	}
	if rep.Code != 354 {
		if c := rep.Class(); c != 4 && c != 5 {
			// Neither "go ahead" nor a refusal: the upstream did not take
			// the message and its state is unknown. Never a 2xx for a
			// message nobody took (the failure rule).
			return s.conclude(m, outcome{Kind: UpstreamError, Reply: replyLocalError, end: true,
				Attrs: []any{"reply", rep.String()}})
		}
		return s.conclude(m, outcome{Kind: UpstreamRefused, relayed: &rep, Attrs: []any{"reply", lastLine(rep)}})
	}
	var o wire.DataWriterOptions
	if !s.cfg.Header.IsZero() {
		o.Header = s.cfg.Header.Expand(s.clientIP, s.localIP, time.Now())
		o.HeaderOnTop = s.cfg.Header.OnTop()
	}
	n, rep, err := s.up.SendData(rc, o)
	if err != nil {
		// Either the store failed mid-message or the upstream did: in both
		// cases the upstream transaction is gone, and so is the session
		// (behaviour.md#delivery: exactly one reply).
		return s.conclude(m, sendFailure(err))
	}
	done := outcome{Kind: Delivered, Status: m.Verdict.Status, relayed: &rep,
		Attrs: []any{"size", n, "reply", lastLine(rep), "duration_ms", since(start)}}
	if rep.Class() != 2 {
		done.Kind, done.Status = UpstreamRefused, "" // behaviour.md#replies: never FILTERED for refused mail
	}
	return s.conclude(m, done)
}

// reenvelope gives the upstream the envelope a milter changed: RSET, then
// the client's XFORWARD again, MAIL with the new sender (the client's
// parameters but SIZE), RCPT for
// each new recipient. Every recipient must be taken: a message is
// delivered to the whole envelope or not at all, and a refusal is relayed
// to the client (with the upstream's transaction reset).
func (s *Session) reenvelope(ne *NewEnvelope) (outcome, bool) {
	attrs := []any{"envelope_changed", true, "new_from", ne.Sender, "new_to", ne.Recipients}
	fail := func(rep wire.Reply, err error, more ...any) (outcome, bool) {
		a := append(append(attrs, more...), "reply", lastLine(rep))
		if err != nil {
			return outcome{Kind: UpstreamError, Reply: replyLocalError, end: true, Attrs: append(a, "err", err)}, false
		}
		if c := rep.Class(); c != 4 && c != 5 {
			return outcome{Kind: UpstreamError, Reply: replyLocalError, end: true, Attrs: a}, false
		}
		return outcome{Kind: UpstreamRefused, relayed: &rep, reset: true, Attrs: a}, false
	}
	if rep, err := s.up.Command("RSET"); err != nil || rep.Class() != 2 {
		return fail(rep, err, "step", "RSET")
	}
	// RSET ends what XFORWARD said for the transaction: say it again.
	for _, line := range s.txn.xforward {
		if rep, err := s.up.Command(line); err != nil || rep.Class() != 2 {
			return fail(rep, err, "step", "XFORWARD")
		}
	}
	if rep, err := s.up.Command("MAIL " + s.txn.mail.WithAddr(ne.Sender).Arg()); err != nil || rep.Class() != 2 {
		return fail(rep, err, "step", "MAIL")
	}
	for _, r := range ne.Recipients {
		if rep, err := s.up.Command("RCPT TO:<" + r + ">"); err != nil || rep.Class() != 2 {
			return fail(rep, err, "step", "RCPT", "rcpt", r)
		}
	}
	s.log.Info("delivering to the envelope a milter changed", attrs...)
	return outcome{}, true
}

// sendFailure is the outcome of a message the upstream did not get whole:
// the copy to deliver could not be read (4xx, as any store failure), or
// the upstream failed.
func sendFailure(err error) outcome {
	var se *upstream.ErrSource
	if errors.As(err, &se) {
		return outcome{Kind: TempFailed, Reply: replyTempFail, end: true, Attrs: []any{"err", err}}
	}
	return outcome{Kind: UpstreamError, Reply: replyLocalError, end: true, Attrs: []any{"err", err}}
}

// lastLine is a reply's last line, for the summary line.
func lastLine(rep wire.Reply) string { return rep.Lines[len(rep.Lines)-1] }

// skip relays DATA of an authenticated client straight to the upstream
// (Skip: authenticated, behaviour.md#auth), still enforcing the end-of-data rules.
func (s *Session) skip() error {
	rep, err := s.command("DATA")
	if err != nil {
		return err
	}
	if err := s.relay(rep); err != nil || rep.Code != 354 {
		return err
	}
	defer s.txn.reset()
	dr := s.dataReader()
	s.client.setBudget(s.cfg.DataDeadline, s.cfg.DataMinRate)
	defer s.client.clearBudget()
	n, rep, err := s.up.SendData(dr, wire.DataWriterOptions{})
	var se *upstream.ErrSource
	switch {
	case err == nil:
		return s.conclude(nil, outcome{Kind: Skipped, relayed: &rep, Attrs: []any{"size", n, "reply", lastLine(rep)}})
	case !errors.As(err, &se):
		dr.Discard()
		return s.conclude(nil, outcome{Kind: UpstreamError, Reply: replyLocalError, end: true, Attrs: []any{"err", err}})
	case errors.Is(se.Err, errDeadline):
		return s.conclude(nil, s.deadlineOutcome(se.Err))
	}
	// The upstream transaction was aborted by closing its connection.
	o := outcome{Kind: Skipped, Reply: s.stoppedReply(), end: true, Attrs: []any{"err", se.Err}}
	if refusable(se.Err) && dr.Discard() == nil {
		_, o.Reply = refusal(se.Err)
	}
	return s.conclude(nil, o)
}
