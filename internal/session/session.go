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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-mail/sluice/internal/header"
	"github.com/sluice-mail/sluice/internal/upstream"
	"github.com/sluice-mail/sluice/internal/wire"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
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
	Header            header.Template // added to delivered mail

	// OnMessage, if set, is called with the status of every DATA attempt
	// as logged (FILTERED, REJECTED, ...; CLIENT-GONE for a client that
	// vanished mid-DATA, which proxsmtpd logs as FILTER-ERROR).
	OnMessage func(status string)
}

// Envelope is what the pipeline needs to know of one message.
type Envelope struct {
	Sender     *string // nil when no MAIL was accepted
	Recipients []string
	ClientAddr string
	ClientHelo string
	ServerAddr string
	RemoteAddr *string // XFORWARD ADDR, accepted by the upstream
	RemoteHelo *string // XFORWARD HELO
}

// Message is a message handed to the pipeline: its id, when it was
// received, and the verdict once there is one.
type Message struct {
	ID       string
	Received time.Time
	Size     int64
	Verdict  *sluicev1.Verdict
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
	replyNeedMail     = "503 5.5.1 Error: need MAIL command"
	replyNoRcpt       = "554 5.5.1 Error: no valid recipients"
	replyTooBig       = "552 5.3.4 Message size exceeds fixed limit"
	replyBare         = "554 5.6.0 Message contains a bare CR or LF; use CRLF line endings"
	replyTempFail     = "451 4.3.0 Temporary failure, please try again later"
	replyLocalError   = "451 Local Error: delivery to the next hop failed"
	replyBadVerdict   = "451 Local Error"
	replyUpstreamGone = "421 4.4.2 %s Lost connection to the next hop"
	replyIdle         = "421 4.4.2 %s Error: timeout exceeded"
	replyShutdown     = "421 4.3.2 %s Service shutting down, please try again later"
	replyUnreachable  = "421 4.4.1 %s Next hop unavailable, please try again later"
)

// Session is one client connection.
type Session struct {
	cfg  *Config
	pipe Pipeline
	log  *slog.Logger
	id   string // connection id for logs

	conn    net.Conn
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
	authenticated  bool

	txn transaction

	draining atomic.Bool
	stopped  atomic.Bool
	idle     atomic.Bool // reading a command with no transaction open; the one thing Drain reads
}

// transaction is the envelope the upstream accepted, and the XFORWARD
// attributes it accepted for this transaction.
type transaction struct {
	sender     *string
	recipients []string
	remoteAddr *string
	remoteHelo *string
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
	return s
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

// Stop ends the session at once: the next read fails, and the client gets
// a 421 if the session is between commands.
func (s *Session) Stop() {
	s.draining.Store(true)
	s.stopped.Store(true)
	s.client.interrupt()
}

// closeClient ends the client connection with a FIN, not a reset: closing
// a socket with unread input (a client that already sent its next
// command) makes the kernel answer RST, and the client may then lose the
// last reply, a 421 included. So: shut down the sending side, read what
// the client still sends for a moment (in the background), then close.
func (s *Session) closeClient() { closeGently(s.conn) }

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
		s.reply(fmt.Sprintf(replyUnreachable, s.cfg.Hostname))
		return
	}
	defer s.up.Close()
	if err := s.greet(); err != nil {
		return
	}
	for {
		if err := s.next(ctx); err != nil {
			return
		}
	}
}

func (s *Session) greet() error {
	rep, err := s.up.ReadReply()
	if err != nil {
		s.log.Warn("upstream did not greet", "err", err)
		s.reply(fmt.Sprintf(replyUnreachable, s.cfg.Hostname))
		return errStop
	}
	if rep.Code == 220 {
		// B2: the edge speaks for itself once the upstream is ready.
		return s.reply(fmt.Sprintf("220 %s ESMTP", s.cfg.Hostname))
	}
	// B3: any other greeting (554 and such) reaches the client as it is;
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
// session (B53: the upstream is closing).
func (s *Session) relay(rep wire.Reply) error {
	s.cw.Write(rep.Bytes())
	if err := s.cw.Flush(); err != nil {
		return errStop
	}
	if rep.Code == 421 {
		return errStop
	}
	return nil
}

// upstreamLost answers the current command when the upstream failed, and
// ends the session: without its upstream it cannot go on.
func (s *Session) upstreamLost(err error) error {
	s.log.Warn("upstream connection lost", "err", err)
	s.reply(fmt.Sprintf(replyUpstreamGone, s.cfg.Hostname))
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
		s.reply(fmt.Sprintf(replyShutdown, s.cfg.Hostname))
		s.up.Quit()
		return errStop
	}
	line, err := wire.ReadLine(s.cr)
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
		return s.reply(replyLineTooLong)
	case errors.Is(err, wire.ErrBadLine):
		return s.reply(replyBadLine)
	case s.client.interrupted():
		s.client.clearInterrupt()
		return nil // the check at the top decides
	case isTimeout(err):
		s.log.Info("client idle timeout")
		s.reply(fmt.Sprintf(replyIdle, s.cfg.Hostname))
		s.up.Quit()
		return errStop
	default:
		return errStop // client gone (B7, B28)
	}

	verb, arg := wire.Verb(line)
	if s.xclientPending && verb != "QUIT" {
		if err := s.sendXClient(); err != nil {
			return err
		}
	}
	switch verb {
	case "EHLO", "HELO":
		return s.hello(line, verb, arg)
	case "STARTTLS", "BDAT":
		// B13: not offered, so not accepted; never relayed.
		return s.reply(replyNotImpl)
	case "XCLIENT":
		// B14: a client may not speak for someone else.
		s.log.Warn("client attempted use of privileged XCLIENT feature")
		return s.reply(replyNoXClient)
	case "MAIL":
		return s.mail(line)
	case "RCPT":
		return s.rcpt(line)
	case "DATA":
		return s.data(ctx, line)
	case "RSET":
		rep, err := s.command(line)
		if err != nil {
			return err
		}
		if rep.Class() == 2 {
			s.txn.reset()
		}
		return s.relay(rep)
	case "XFORWARD":
		return s.xforward(line, arg)
	case "AUTH":
		return s.auth(line)
	case "QUIT":
		rep, err := s.command(line)
		if err != nil {
			return err
		}
		s.relay(rep)
		return errStop
	}
	// B12: everything else is relayed, replies verbatim.
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	return s.relay(rep)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Session) hello(line, verb, arg string) error {
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	if rep.Class() != 2 {
		return s.relay(rep)
	}
	// B11: a new greeting starts over.
	s.txn.reset()
	s.helo, s.heloVerb = arg, verb
	out, offered := wire.FilterEHLO(rep, s.cfg.Hostname)
	if verb == "EHLO" {
		s.offered = offered
		// COMPAT 9: XCLIENT only when the upstream says it takes it.
		if _, ok := offered["XCLIENT"]; ok && s.cfg.XClient && !s.xclientDone {
			s.xclientPending = true
		}
	} else {
		s.offered = nil
	}
	return s.relay(out)
}

// sendXClient tells the upstream who the client is, once, before the
// first command after EHLO (B46). Postfix answers 220 and restarts the
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

func (s *Session) mail(line string) error {
	if s.rejectAll() {
		return s.reply(s.cfg.FilterReject) // B44: not forwarded
	}
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		if addr, ok := wire.MailPath(line); ok {
			// A new transaction: the upstream forgot any earlier recipients.
			s.txn.sender = &addr
			s.txn.recipients = nil
		}
	}
	return s.relay(rep)
}

func (s *Session) rcpt(line string) error {
	if s.rejectAll() {
		return s.reply(s.cfg.FilterReject)
	}
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		if addr, ok := wire.RcptPath(line); ok {
			s.txn.recipients = append(s.txn.recipients, addr)
		}
	}
	return s.relay(rep)
}

func (s *Session) xforward(line, arg string) error {
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	if rep.Class() == 2 {
		// B47: attributes accumulate over XFORWARD lines, for one
		// transaction.
		attrs := wire.ParseXForward(arg)
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
// client's next line is a response, not a command (B48).
func (s *Session) auth(line string) error {
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	for rep.Code == 334 {
		if err := s.relay(rep); err != nil {
			return err
		}
		resp, err := wire.ReadLine(s.cr)
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
	}
}

// logMessage writes the one summary line per DATA attempt (proxsmtpd's
// "client=..., from=..., to=..., status=...").
func (s *Session) logMessage(m *Message, status string, attrs ...any) {
	s.logMessageAs(m, status, status, attrs...)
}

// logMessageAs is logMessage with a status for OnMessage that differs
// from the logged one.
func (s *Session) logMessageAs(m *Message, status, counted string, attrs ...any) {
	if s.cfg.OnMessage != nil {
		s.cfg.OnMessage(counted)
	}
	args := make([]any, 0, 8+2*len(s.txn.recipients)+len(attrs))
	if m != nil {
		args = append(args, "id", m.ID)
	}
	if s.txn.sender != nil {
		args = append(args, "from", *s.txn.sender)
	}
	for _, r := range s.txn.recipients {
		args = append(args, "to", r)
	}
	if status != "" {
		args = append(args, "status", status)
	}
	args = append(args, attrs...)
	s.log.Info("message", args...)
}

// data handles DATA: checks, then the skip path or the filtered path.
func (s *Session) data(ctx context.Context, line string) error {
	if s.rejectAll() {
		// B44: refused, and the upstream's transaction reset.
		err := s.reply(s.cfg.FilterReject)
		s.up.Command("RSET")
		s.logMessage(nil, "REJECTED")
		s.txn.reset()
		if s.up.Err() != nil {
			return errStop
		}
		return err
	}
	if s.cfg.SkipAuthenticated && s.authenticated {
		return s.skip(line)
	}
	// COMPAT 4: no 354 for a message nobody can receive.
	if !s.txn.open() {
		return s.reply(replyNeedMail)
	}
	if len(s.txn.recipients) == 0 {
		return s.reply(replyNoRcpt)
	}
	if err := s.reply(replyStartData); err != nil {
		return err
	}
	defer s.txn.reset() // B20: every DATA attempt ends the transaction
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
// (COMPAT 3, B54).
func (s *Session) filtered(ctx context.Context) error {
	start := time.Now()
	body := &bodyReader{r: wire.NewDataReader(s.cr, s.cfg.MaxMessageSize, s.cfg.RejectBare)}
	stopKA := s.up.KeepAlive(s.cfg.KeepAlives) // COMPAT 8: while receiving and filtering
	m, err := s.pipe.Filter(ctx, s.envelope(), body)
	stopKA()
	if m != nil {
		defer s.pipe.Finish(m)
	}
	if body.err != io.EOF {
		// The message was not read to its end: the body failed, or the
		// pipeline gave up on it. Read the rest, whatever happens.
		if body.err == nil || errors.Is(body.err, wire.ErrTooBig) || errors.Is(body.err, wire.ErrBareLineEnding) {
			if derr := body.r.Discard(); derr != nil {
				body.err = derr
			}
		}
	}
	switch {
	case body.err != nil && body.err != io.EOF && !errors.Is(body.err, wire.ErrTooBig) && !errors.Is(body.err, wire.ErrBareLineEnding):
		// B28: the client went away mid-DATA; nothing to answer, unless
		// Stop cut it short (COMPAT 7: 421, not a silent close).
		s.logMessageAs(m, "FILTER-ERROR", "CLIENT-GONE", "err", body.err)
		s.up.Command("RSET")
		s.stoppedReply()
		return errStop
	case errors.Is(body.err, wire.ErrTooBig):
		s.up.Command("RSET")
		s.logMessage(m, "TOO-BIG", "limit", s.cfg.MaxMessageSize)
		return s.afterRefusal(s.reply(replyTooBig))
	case errors.Is(body.err, wire.ErrBareLineEnding):
		s.up.Command("RSET")
		s.logMessage(m, "BARE-LINE-ENDING")
		return s.afterRefusal(s.reply(replyBare))
	case err != nil:
		s.up.Command("RSET")
		s.logMessage(m, "FILTER-ERROR", "err", err, "duration", time.Since(start).Round(time.Millisecond))
		return s.afterRefusal(s.reply(replyTempFail))
	}
	return s.act(ctx, m, start)
}

// stoppedReply tells a client whose message Stop cut short that the edge
// is shutting down.
func (s *Session) stoppedReply() {
	if s.stopped.Load() && s.client.interrupted() {
		s.reply(fmt.Sprintf(replyShutdown, s.cfg.Hostname))
	}
}

// afterRefusal ends the session if the upstream failed while the
// transaction was being reset.
func (s *Session) afterRefusal(err error) error {
	if err != nil || s.up.Err() != nil {
		return errStop
	}
	return nil
}

// act carries out a verdict.
func (s *Session) act(ctx context.Context, m *Message, start time.Time) error {
	v := m.Verdict
	reply, ok := verdictReply(v)
	if !ok {
		s.up.Command("RSET")
		s.logMessage(m, "FILTER-ERROR", "err", "malformed verdict", "action", v.GetAction().String(), "reply", v.GetReply())
		return s.afterRefusal(s.reply(replyBadVerdict))
	}
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		// B34: the upstream never sees DATA; its transaction is reset.
		s.up.Command("RSET")
		s.logMessage(m, v.Status, "reply", reply, "detail", v.Detail, "duration", time.Since(start).Round(time.Millisecond))
		return s.afterRefusal(s.reply(reply))
	}
	return s.deliver(ctx, m, start)
}

// verdictReply checks the reply of a verdict against its action: a worker
// is another process, possibly another version; nothing it says reaches
// the client unless it is one well-formed reply line of the right class.
func verdictReply(v *sluicev1.Verdict) (string, bool) {
	if v == nil {
		return "", false
	}
	want := 0
	switch v.Action {
	case sluicev1.Verdict_ACTION_ACCEPT:
		return "", true
	case sluicev1.Verdict_ACTION_DROP:
		want = 2
	case sluicev1.Verdict_ACTION_REJECT:
		want = -1 // 4 or 5
	case sluicev1.Verdict_ACTION_TEMPFAIL:
		want = 4
	default:
		return "", false
	}
	rep, err := wire.ParseReply(v.Reply)
	if err != nil || len(rep.Lines) != 1 || strings.HasPrefix(rep.Lines[0][3:], "-") {
		return "", false
	}
	c := rep.Class()
	if (want == -1 && c != 4 && c != 5) || (want > 0 && c != want) {
		return "", false
	}
	return rep.Lines[0], true
}

// deliver opens the upstream's DATA phase and sends the filtered message
// with the configured Header (B37).
func (s *Session) deliver(ctx context.Context, m *Message, start time.Time) error {
	v := m.Verdict
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
		s.up.Command("RSET")
		s.logMessage(m, "FILTER-ERROR", "err", err)
		return s.afterRefusal(s.reply(replyTempFail))
	}
	defer rc.Close()
	rep, err := s.up.Command("DATA")
	if err != nil {
		s.logMessage(m, "UPSTREAM-ERROR", "err", err)
		s.reply(replyLocalError) // B38
		return errStop
	}
	if rep.Code != 354 {
		if c := rep.Class(); c != 4 && c != 5 {
			// Neither "go ahead" nor a refusal: the upstream did not take
			// the message and its state is unknown. Never a 2xx for a
			// message nobody took (the failure rule).
			s.logMessage(m, "UPSTREAM-ERROR", "reply", rep.String())
			s.reply(replyLocalError)
			return errStop
		}
		s.logMessage(m, "UPSTREAM-REFUSED", "reply", rep.Lines[len(rep.Lines)-1])
		return s.relay(rep)
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
		// (B39: exactly one reply).
		var se *upstream.ErrSource
		if errors.As(err, &se) {
			s.logMessage(m, "FILTER-ERROR", "err", err)
			s.reply(replyTempFail)
		} else {
			s.logMessage(m, "UPSTREAM-ERROR", "err", err)
			s.reply(replyLocalError)
		}
		return errStop
	}
	status := v.Status
	if rep.Class() != 2 {
		status = "UPSTREAM-REFUSED" // B38: never FILTERED for refused mail
	}
	s.logMessage(m, status, "size", n, "reply", rep.Lines[len(rep.Lines)-1], "duration", time.Since(start).Round(time.Millisecond))
	return s.relay(rep)
}

// skip relays DATA of an authenticated client straight to the upstream
// (Skip: authenticated, B49), still enforcing the end-of-data rules.
func (s *Session) skip(line string) error {
	rep, err := s.command(line)
	if err != nil {
		return err
	}
	if err := s.relay(rep); err != nil || rep.Code != 354 {
		return err
	}
	defer s.txn.reset()
	dr := wire.NewDataReader(s.cr, s.cfg.MaxMessageSize, s.cfg.RejectBare)
	n, rep, err := s.up.SendData(dr, wire.DataWriterOptions{})
	if err != nil {
		var se *upstream.ErrSource
		if !errors.As(err, &se) {
			s.logMessage(nil, "UPSTREAM-ERROR", "err", err)
			dr.Discard()
			s.reply(replyLocalError)
			return errStop
		}
		// The upstream transaction was aborted by closing its connection.
		s.logMessage(nil, "SKIPPED", "err", se.Err)
		s.stoppedReply()
		switch {
		case errors.Is(se.Err, wire.ErrTooBig):
			if dr.Discard() == nil {
				s.reply(replyTooBig)
			}
		case errors.Is(se.Err, wire.ErrBareLineEnding):
			if dr.Discard() == nil {
				s.reply(replyBare)
			}
		}
		return errStop
	}
	s.logMessage(nil, "SKIPPED", "size", n, "reply", rep.Lines[len(rep.Lines)-1])
	return s.relay(rep)
}
