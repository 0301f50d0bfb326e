// Package milter runs a message past Sendmail-protocol milters (OpenDKIM,
// spamass-milter, rspamd's proxy, clamav-milter) as an MTA does: the
// worker replays the stored SMTP transaction to each milter in turn
// (connect, HELO, MAIL, each RCPT, the headers, the body, end of
// message), applies the header and body changes each one asks for, and
// maps the outcome onto the filter contract: accept and continue
// deliver, reject and custom replies refuse, tempfail defers, discard
// drops silently, quarantine drops and keeps the reason.
//
// The protocol is github.com/d--j/go-milter's client (docs/architecture.md
// says why that library). This package holds what an MTA adds: the
// transaction from the job, the chain, the changes applied to a streamed
// message, the default action when a milter fails (Postfix's
// milter_default_action), and the timeouts.
package milter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"

	"github.com/sluice-mail/sluice/internal/filter"
)

// Default actions when a milter cannot be used (Postfix's
// milter_default_action).
const (
	DefaultTempFail = "tempfail"
	DefaultAccept   = "accept"
	DefaultReject   = "reject"
)

// Postfix's defaults.
const (
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultContentTimeout = 300 * time.Second
	DefaultProtocol       = 6
)

// maxHeader bounds the header block read into memory (the body is
// streamed).
const maxHeader = 1 << 20

// actions are the modifications sluice applies and so offers: headers,
// the body, the envelope (sender, recipients; the edge delivers to the
// changed envelope), quarantine, and the macros a milter asks for.
const actions = milter.OptAddHeader | milter.OptChangeHeader | milter.OptChangeBody | milter.OptQuarantine |
	milter.OptSetMacros | milter.OptChangeFrom | milter.OptAddRcpt | milter.OptAddRcptWithArgs | milter.OptRemoveRcpt

// Config is the milter part of the filter settings.
type Config struct {
	Milters        []string // Postfix's forms: inet:host:port, unix:/path
	DefaultAction  string   // tempfail (default), accept, reject
	ConnectTimeout time.Duration
	CommandTimeout time.Duration // each protocol step
	ContentTimeout time.Duration // the whole message, from connect to end of message
	Protocol       uint32        // milter protocol version offered, 2..6
	Hostname       string        // the j macro
	TempDir        string        // where the body is spooled between milters
	MaxIdle        int           // idle connections kept per milter (the worker's slots); 0 = none
	Logger         *slog.Logger  // nil: no log
}

// Chain is the configured milters, applied in order, as a filter.Filter.
type Chain struct {
	cfg     Config
	milters []target
	pools   []*pool   // one per milter
	health  []*health // one per milter

	stop    context.CancelFunc // ends the retries of milters that are down
	stopCtx context.Context
	retries sync.WaitGroup
}

type target struct {
	name             string // as configured, for logs and replies
	network, address string
}

// ParseAddress reads Postfix's milter address forms: inet:host:port,
// inet:[ipv6]:port, unix:/path (also local:/path); and Sendmail's
// inet:port@host, which OpenDKIM and spamass-milter document.
func ParseAddress(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%q: want inet:host:port or unix:/path", s)
	}
	switch kind {
	case "unix", "local":
		return "unix", rest, nil
	case "inet", "inet6":
		if port, host, ok := strings.Cut(rest, "@"); ok {
			rest = net.JoinHostPort(host, port)
		}
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" || port == "" {
			return "", "", fmt.Errorf("%q: want inet:host:port", s)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("%q: unknown kind %q (want inet: or unix:)", s, kind)
}

// libLog is where the library's own warnings go (the last chain's
// logger), instead of the standard log package's stderr.
var libLog atomic.Pointer[slog.Logger]

func init() {
	milter.LogWarning = func(format string, v ...any) {
		l := libLog.Load()
		if l == nil {
			l = slog.Default()
		}
		l.Warn("milter library: " + fmt.Sprintf(format, v...))
	}
}

// New checks cfg and returns the chain.
func New(cfg Config) (*Chain, error) {
	if cfg.Logger != nil {
		libLog.Store(cfg.Logger)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.ContentTimeout <= 0 {
		cfg.ContentTimeout = DefaultContentTimeout
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultProtocol
	}
	if cfg.Protocol < 2 || cfg.Protocol > milter.MaxClientProtocolVersion {
		return nil, fmt.Errorf("protocol version %d: want 2 to %d", cfg.Protocol, milter.MaxClientProtocolVersion)
	}
	switch cfg.DefaultAction {
	case "":
		cfg.DefaultAction = DefaultTempFail
	case DefaultTempFail, DefaultAccept, DefaultReject:
	default:
		return nil, fmt.Errorf("default action %q: want tempfail, accept or reject", cfg.DefaultAction)
	}
	c := &Chain{cfg: cfg}
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	for _, m := range cfg.Milters {
		network, address, err := ParseAddress(m)
		if err != nil {
			return nil, err
		}
		c.milters = append(c.milters, target{name: m, network: network, address: address})
		c.pools = append(c.pools, &pool{max: cfg.MaxIdle})
		c.health = append(c.health, &health{})
	}
	if len(c.milters) == 0 {
		return nil, errors.New("no milter")
	}
	return c, nil
}

// String names the milters, for logs.
func (c *Chain) String() string {
	return "milters " + strings.Join(c.cfg.Milters, ", ")
}

// Run passes the message in past every milter in order and writes what
// to deliver to out. A milter's reject, tempfail or discard ends the
// chain; a milter that fails (refused, timed out, garbled, gone) takes
// the default action. The error is only for in and out.
func (c *Chain) Run(ctx context.Context, env filter.Env, in io.Reader, out io.Writer) (filter.Result, error) {
	start := time.Now()
	br := bufio.NewReaderSize(in, 64<<10)
	hdr, bodyStart, err := readHeader(br)
	if err != nil {
		if errors.Is(err, errHeaderTooLarge) {
			return c.done(start, filter.Result{Action: filter.Reject, Reply: "552 5.3.4 Message header too large",
				Status: "FILTER-ERROR", Detail: err.Error()}), nil
		}
		return filter.Result{}, fmt.Errorf("read message: %w", err)
	}
	var body *spooled
	if f, ok := in.(*os.File); ok {
		// A file (the store's copy, the FilterCommand's output): the
		// milters read the body where it starts in it, no copy.
		pos, err := f.Seek(0, io.SeekCurrent) // where the reads left it
		if err != nil {
			return filter.Result{}, fmt.Errorf("read message: %w", err)
		}
		body = &spooled{dir: c.cfg.TempDir, src: f, off: pos - int64(br.Buffered()) - int64(len(bodyStart))}
	} else if body, err = c.spool(io.MultiReader(bytes.NewReader(bodyStart), br)); err != nil {
		return filter.Result{}, err
	}
	defer body.remove()

	var quarantine []string
	envChanged, changed := false, false
	for i, m := range c.milters {
		res, mods, err := c.one(ctx, i, env, hdr, body)
		if err != nil {
			res, skip := c.fallback(m, err)
			if skip {
				continue
			}
			return c.done(start, res), nil
		}
		if res != nil {
			return c.done(start, *res), nil
		}
		for _, mod := range mods {
			switch mod.Type {
			case milter.ActionAddHeader:
				hdr.add(mod.HeaderName, mod.HeaderValue)
				changed = true
			case milter.ActionInsertHeader:
				hdr.insert(int(mod.HeaderIndex), mod.HeaderName, mod.HeaderValue)
				changed = true
			case milter.ActionChangeHeader:
				hdr.change(int(mod.HeaderIndex), mod.HeaderName, mod.HeaderValue)
				changed = true
			case milter.ActionQuarantine:
				quarantine = append(quarantine, m.name+": "+mod.Reason)
			case milter.ActionChangeFrom, milter.ActionAddRcpt, milter.ActionDelRcpt:
				// The next milter sees the envelope as this one left it.
				env = changeEnvelope(env, mod)
				envChanged = true
			}
		}
		replaced, err := body.replace(mods)
		if err != nil {
			return filter.Result{}, err
		}
		changed = changed || replaced
	}
	if envChanged && len(env.Recipients) == 0 {
		return c.done(start, filter.Result{Action: filter.Drop, Reply: "250 2.0.0 Ok: queued (no recipient left)",
			Status: "DISCARDED", Detail: "the milters deleted every recipient"}), nil
	}
	if len(quarantine) > 0 {
		// Held, not delivered: the message stays in the store as
		// received, the reason in the verdict record.
		return c.done(start, filter.Result{Action: filter.Drop, Reply: "250 2.0.0 Ok: queued (quarantined)",
			Status: "QUARANTINED", Detail: strings.Join(quarantine, "; ")}), nil
	}
	res := filter.Result{Action: filter.Accept, Status: "FILTERED", Detail: c.String(), Unchanged: true}
	if changed {
		n, err := writeMessage(out, hdr, body)
		if err != nil {
			return filter.Result{}, err
		}
		res.Unchanged, res.OutputSize = false, n
	}
	if envChanged {
		sender := "<>"
		if env.Sender != nil && *env.Sender != "" {
			sender = *env.Sender
		}
		res.Envelope = &filter.Envelope{Sender: sender, Recipients: env.Recipients}
	}
	return c.done(start, res), nil
}

// changeEnvelope applies a milter's change of the sender or the
// recipients to a copy of env's envelope. Addresses come in brackets.
func changeEnvelope(env filter.Env, mod milter.ModifyAction) filter.Env {
	bare := func(a string) string {
		return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a), "<"), ">")
	}
	rcpts := append([]string(nil), env.Recipients...)
	switch mod.Type {
	case milter.ActionChangeFrom:
		from := bare(mod.From)
		if from == "" {
			from = "<>"
		}
		env.Sender = &from
	case milter.ActionAddRcpt:
		r := bare(mod.Rcpt)
		if r != "" && !slices.ContainsFunc(rcpts, func(x string) bool { return strings.EqualFold(x, r) }) {
			rcpts = append(rcpts, r)
		}
	case milter.ActionDelRcpt:
		r := bare(mod.Rcpt)
		rcpts = slices.DeleteFunc(rcpts, func(x string) bool { return strings.EqualFold(x, r) })
	}
	env.Recipients = rcpts
	return env
}

func (c *Chain) done(start time.Time, r filter.Result) filter.Result {
	r.Duration = time.Since(start)
	r.ExitCode = -1
	return r
}

// fallback is the default action for a milter that failed; skip is true
// when the chain goes on without it (accept).
func (c *Chain) fallback(m target, err error) (filter.Result, bool) {
	detail := m.name + ": " + err.Error()
	switch c.cfg.DefaultAction {
	case DefaultAccept:
		return filter.Result{}, true
	case DefaultReject:
		return filter.Result{Action: filter.Reject, Reply: "550 5.5.0 Service unavailable", Status: "FILTER-ERROR", Detail: detail}, false
	}
	return filter.Result{Action: filter.TempFail, Reply: "451 4.7.1 Service unavailable - try again later", Status: "FILTER-ERROR", Detail: detail}, false
}

// one replays the transaction to one milter. A non-nil result ends the
// chain (reject, tempfail, discard); nil with the modifications goes on.
// A connection from the pool that fails before the milter answered the
// connect step (a milter that does not take QUIT_NC, or closed an idle
// connection) is replaced once by a new one.
func (c *Chain) one(ctx context.Context, i int, env filter.Env, hdr *header, body *spooled) (r *filter.Result, mods []milter.ModifyAction, err error) {
	defer func() {
		// The library panics on some malformed packets (an empty one):
		// that is a milter that failed, not a worker that did.
		if p := recover(); p != nil {
			r, mods, err = nil, nil, fmt.Errorf("malformed answer (%v)", p)
		}
	}()
	if err := c.health[i].check(); err != nil {
		return nil, nil, err // down: the default action at once
	}
	deadline := time.Now().Add(c.cfg.ContentTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroMTAFQDN, c.cfg.Hostname)
	macros.Set(milter.MacroDaemonName, "sluice")
	macros.Set(milter.MacroQueueId, env.MessageID)
	if env.TLSVersion != "" {
		macros.Set(milter.MacroTlsVersion, env.TLSVersion)
		macros.Set(milter.MacroCipher, env.TLSCipher)
	}
	for attempt := 0; ; attempt++ {
		conn, reused, err := c.session(ctx, i, macros, deadline, attempt == 0)
		if err != nil {
			return nil, nil, err
		}
		r, mods, answered, err := c.replay(ctx, conn, reused, deadline, env, hdr, body)
		if err != nil && reused && !answered {
			if !errors.Is(err, errNoReuseAnswer) {
				continue // replay closed it; the milter restarted, say
			}
			// replay closed it. Many milters built on Sendmail's
			// libmilter (OpenDKIM, spamass-milter) do not answer on a
			// connection after QUIT_NC: from now on this one gets a
			// connection per message.
			if c.pools[i].disable() && c.cfg.Logger != nil {
				c.cfg.Logger.Warn("milter does not take a second message on a connection (QUIT_NC): one connection per message from now on",
					"milter", c.milters[i].name, "err", err)
			}
			continue
		}
		return r, mods, err
	}
}

var errNoReuseAnswer = errors.New("no answer on a reused connection")

// reuseProbe bounds the wait for a reused connection's first answer: a
// milter that ignores QUIT_NC says nothing at all.
const reuseProbe = 2 * time.Second

// replay runs the steps on one session and gives it back to the pool
// when the milter can take another message on it. answered is true once
// the milter answered the connect step.
func (c *Chain) replay(ctx context.Context, conn *pooledConn, reused bool, deadline time.Time, env filter.Env, hdr *header, body *spooled) (r *filter.Result, mods []milter.ModifyAction, answered bool, err error) {
	s := conn.s
	// The library sets a deadline per read and write (the command
	// timeout); the message's own deadline closes the connection.
	mctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stopDeadline := context.AfterFunc(mctx, func() { _ = conn.conn.Close() })
	var probe *time.Timer
	if reused {
		probe = time.AfterFunc(reuseProbe, func() { _ = conn.conn.Close() })
	}
	reusable := false
	defer func() {
		// A closer that already ran closed the connection.
		intact := stopDeadline() && (probe == nil || probe.Stop())
		if reusable && intact && err == nil {
			c.pools[conn.i].put(conn)
		} else {
			conn.close()
		}
	}()
	steps := []func() (*milter.Action, error){
		func() (*milter.Action, error) {
			host, family, addr := clientOf(env.Client)
			return s.Conn(host, family, 0, addr)
		},
		func() (*milter.Action, error) { return s.Helo(env.Helo) },
		func() (*milter.Action, error) {
			// The library puts the address in brackets; "" is the null
			// sender.
			from := ""
			if env.Sender != nil && *env.Sender != "<>" {
				from = *env.Sender
			}
			return s.Mail(from, "")
		},
	}
	for _, r := range env.Recipients {
		steps = append(steps, func() (*milter.Action, error) { return s.Rcpt(r, "") })
	}
	steps = append(steps, s.DataStart)
	for _, f := range hdr.fields {
		steps = append(steps, func() (*milter.Action, error) { return s.HeaderField(f.name, f.value, nil) })
	}
	steps = append(steps, s.HeaderEnd)
	for n, step := range steps {
		act, err := step()
		if n == 0 && probe != nil {
			fired := !probe.Stop()
			probe = nil
			if fired {
				return nil, nil, false, errNoReuseAnswer
			}
		}
		if err != nil {
			return nil, nil, n > 0, err
		}
		answered = true
		if r, final := c.outcome(c.milters[conn.i], act); final {
			// Decided before the end: past HELO the transaction can be
			// aborted and the connection used again.
			reusable = n >= 1 && s.Abort(nil) == nil
			return r, nil, true, nil
		}
	}
	rd, err := body.open()
	if err != nil {
		return nil, nil, true, err
	}
	defer rd.Close()
	mods, act, err := s.BodyReadFrom(rd)
	if err != nil {
		return nil, nil, true, err
	}
	reusable = true // End leaves the session after HELO
	// At the end of the message, accept means "with these changes".
	if r, _ := c.outcome(c.milters[conn.i], act); r != nil {
		return r, nil, true, nil
	}
	return nil, mods, true, nil
}

// session is a connection to milter i for one message: an idle one
// from the pool (reset with QUIT_NC), when pooled allows, else a new one.
func (c *Chain) session(ctx context.Context, i int, macros milter.Macros, deadline time.Time, pooled bool) (*pooledConn, bool, error) {
	if pooled {
		for conn := c.pools[i].get(); conn != nil; conn = c.pools[i].get() {
			if err := conn.conn.SetDeadline(deadline); err == nil && conn.s.Reset(macros) == nil {
				return conn, true, nil
			}
			conn.close()
		}
	}
	conn, err := c.dial(ctx, i, macros, deadline)
	if err != nil {
		if ctx.Err() == nil {
			c.markDown(i, err)
		}
		return nil, false, err
	}
	c.markUp(i)
	return conn, false, nil
}

// dial opens a connection to milter i and negotiates a session on it.
func (c *Chain) dial(ctx context.Context, i int, macros milter.Macros, deadline time.Time) (*pooledConn, error) {
	m := c.milters[i]
	d := &deadlineDialer{ctx: ctx, timeout: c.cfg.ConnectTimeout, deadline: deadline}
	client := milter.NewClient(m.network, m.address, milter.WithDialer(d),
		milter.WithReadTimeout(c.cfg.CommandTimeout), milter.WithWriteTimeout(c.cfg.CommandTimeout),
		milter.WithMaximumVersion(c.cfg.Protocol), milter.WithActions(actions))
	s, err := client.Session(macros)
	if err != nil {
		if d.conn != nil {
			d.conn.Close()
		}
		return nil, err
	}
	return &pooledConn{i: i, s: s, conn: d.conn}, nil
}

// probe is a session with milter i that ends at once (connect,
// negotiate, QUIT): is it reachable?
func (c *Chain) probe(ctx context.Context, i int) error {
	deadline := time.Now().Add(c.cfg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn, err := c.dial(ctx, i, nil, deadline)
	if err != nil {
		return err
	}
	conn.close()
	return nil
}

// Backoff between tries of a milter that is down.
const (
	retryFirst = 500 * time.Millisecond
	retryMax   = 10 * time.Second
)

// health is what the chain knows of one milter's reachability. A milter
// that cannot be reached (the connection or the negotiation failed) is
// down: its messages take the default action at once instead of each
// waiting on it, while one goroutine tries it again with backoff; the
// first session that works, a retry's or a readiness check's, brings it
// back.
type health struct {
	mu      sync.Mutex
	down    bool
	since   time.Time
	lastErr error
	next    time.Time // the next retry
}

// check is nil when the milter is up, else why it is skipped.
func (h *health) check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		return nil
	}
	return fmt.Errorf("down for %s (%v); next try in %s",
		time.Since(h.since).Round(time.Second), h.lastErr, time.Until(h.next).Round(100*time.Millisecond))
}

// markDown records a failed connection to milter i; the first one
// starts the retries.
func (c *Chain) markDown(i int, err error) {
	h := c.health[i]
	h.mu.Lock()
	h.lastErr = err
	if h.down {
		h.mu.Unlock()
		return
	}
	h.down, h.since, h.next = true, time.Now(), time.Now().Add(retryFirst)
	h.mu.Unlock()
	if c.cfg.Logger != nil {
		c.cfg.Logger.Warn("milter unreachable: its messages take milter_default_action until it answers; trying it again with backoff",
			"milter", c.milters[i].name, "default_action", c.cfg.DefaultAction, "err", err)
	}
	c.retries.Add(1)
	go c.retry(i)
}

// markUp records a working session with milter i.
func (c *Chain) markUp(i int) {
	h := c.health[i]
	h.mu.Lock()
	was, since := h.down, h.since
	h.down = false
	h.mu.Unlock()
	if was && c.cfg.Logger != nil {
		c.cfg.Logger.Info("milter reachable again", "milter", c.milters[i].name,
			"down_ms", time.Since(since).Milliseconds())
	}
}

// retry tries milter i with backoff until it answers or the chain is
// closed.
func (c *Chain) retry(i int) {
	defer c.retries.Done()
	h := c.health[i]
	wait := retryFirst
	for {
		select {
		case <-c.stopCtx.Done():
			return
		case <-time.After(wait):
		}
		h.mu.Lock()
		down := h.down
		h.mu.Unlock()
		if !down {
			return // a readiness check found it first
		}
		err := c.probe(c.stopCtx, i)
		if err == nil {
			c.markUp(i)
			return
		}
		if c.stopCtx.Err() != nil {
			return
		}
		wait = min(2*wait, retryMax)
		h.mu.Lock()
		h.lastErr, h.next = err, time.Now().Add(wait)
		h.mu.Unlock()
	}
}

// pooledConn is one milter connection and the session on it.
type pooledConn struct {
	i    int // which milter
	s    *milter.ClientSession
	conn net.Conn
}

func (p *pooledConn) close() { _ = p.s.Close() }

// pool keeps up to max idle connections to one milter (protocol version
// 6's QUIT_NC lets a connection serve the next message), so that a
// message does not pay a TCP connection and the negotiation.
type pool struct {
	mu   sync.Mutex
	idle []*pooledConn
	max  int
}

// disable stops pooling for good and closes what is idle; it reports
// whether pooling was on.
func (p *pool) disable() bool {
	p.mu.Lock()
	was := p.max > 0
	p.max = 0
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, conn := range idle {
		conn.close()
	}
	return was
}

func (p *pool) get() *pooledConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) == 0 {
		return nil
	}
	conn := p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	return conn
}

func (p *pool) put(conn *pooledConn) {
	p.mu.Lock()
	if len(p.idle) < p.max {
		p.idle = append(p.idle, conn)
		conn = nil
	}
	p.mu.Unlock()
	if conn != nil {
		conn.close()
	}
}

// Ready opens a session with every milter (connect, negotiate, QUIT)
// and says which cannot be reached: the readiness check of a worker
// whose milters are down. Messages meanwhile take milter_default_action.
func (c *Chain) Ready(ctx context.Context) error {
	var errs []error
	for i, m := range c.milters {
		if err := c.probe(ctx, i); err != nil {
			if ctx.Err() == nil {
				c.markDown(i, err)
			}
			errs = append(errs, fmt.Errorf("milter %s: %w", m.name, err))
			continue
		}
		c.markUp(i)
	}
	return errors.Join(errs...)
}

// Close ends the retries and closes the idle connections.
func (c *Chain) Close() {
	c.stop()
	c.retries.Wait()
	for _, p := range c.pools {
		for conn := p.get(); conn != nil; conn = p.get() {
			conn.close()
		}
	}
}

// outcome maps a milter's answer to a step: final is true when it
// decided the message (accept before the end of the message included,
// which delivers it unchanged by this milter: r is nil then).
func (c *Chain) outcome(m target, act *milter.Action) (r *filter.Result, final bool) {
	reply := strings.TrimSpace(strings.ReplaceAll(act.SMTPReply, "\r\n", " "))
	switch act.Type {
	case milter.ActionAccept:
		return nil, true
	case milter.ActionDiscard:
		return &filter.Result{Action: filter.Drop, Reply: "250 2.0.0 Ok: queued as discarded",
			Status: "DISCARDED", Detail: m.name}, true
	case milter.ActionReject, milter.ActionRejectWithCode:
		if reply == "" || act.SMTPCode < 400 || act.SMTPCode > 599 {
			reply = "550 5.7.1 Command rejected"
		}
		return &filter.Result{Action: filter.Reject, Reply: reply, Status: "REJECTED", Detail: m.name}, true
	case milter.ActionTempFail:
		if reply == "" || act.SMTPCode < 400 || act.SMTPCode > 499 {
			reply = "451 4.7.1 Service unavailable - try again later"
		}
		return &filter.Result{Action: filter.Reject, Reply: reply, Status: "TEMPFAILED", Detail: m.name}, true
	}
	return nil, false
}

// clientOf is the connect step's arguments for the client address: the
// host name Postfix uses when it has none ("[ADDR]"), the family, the
// address.
func clientOf(client string) (string, milter.ProtoFamily, string) {
	a, err := netip.ParseAddr(client)
	if err != nil {
		return "unknown", milter.FamilyUnknown, ""
	}
	a = a.Unmap()
	if a.Is4() {
		return "[" + a.String() + "]", milter.FamilyInet, a.String()
	}
	return "[" + a.String() + "]", milter.FamilyInet6, a.String()
}

// deadlineDialer connects within the connect timeout and gives the
// connection the message's deadline: no milter holds a job past it. It
// keeps the connection, whose deadline each later message sets anew.
type deadlineDialer struct {
	ctx      context.Context
	timeout  time.Duration
	deadline time.Time
	conn     net.Conn
}

func (d *deadlineDialer) Dial(network, address string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout, Deadline: d.deadline}
	conn, err := nd.DialContext(d.ctx, network, address)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(d.deadline)
	d.conn = conn
	return conn, nil
}

// spooled is the body, which every milter in the chain reads and the
// result is written from after the last one: in the input file itself
// when the input is one (src, from off), else in a temporary file of the
// chain's (path), as is a body a milter replaced.
type spooled struct {
	dir  string // TempDirectory
	path string // the temporary file, removed at the end; "" for none
	src  *os.File
	off  int64
}

func (c *Chain) spool(r io.Reader) (*spooled, error) {
	f, err := os.CreateTemp(c.cfg.TempDir, "sluice-milter.*")
	if err != nil {
		return nil, fmt.Errorf("spool the body: %w", err)
	}
	s := &spooled{dir: c.cfg.TempDir, path: f.Name()}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		s.remove()
		return nil, fmt.Errorf("read message: %w", err)
	}
	if err := f.Close(); err != nil {
		s.remove()
		return nil, fmt.Errorf("spool the body: %w", err)
	}
	return s, nil
}

func (s *spooled) open() (io.ReadCloser, error) {
	if s.src != nil {
		return io.NopCloser(io.NewSectionReader(s.src, s.off, math.MaxInt64-s.off)), nil
	}
	return os.Open(s.path)
}

func (s *spooled) remove() {
	if s.path != "" {
		_ = os.Remove(s.path)
	}
}

// replace writes a milter's replacement body (its ReplaceBody chunks, in
// order) in place of the body; without any it leaves it and reports
// false.
func (s *spooled) replace(mods []milter.ModifyAction) (bool, error) {
	var f *os.File
	for _, m := range mods {
		if m.Type != milter.ActionReplaceBody {
			continue
		}
		if f == nil {
			var err error
			if s.path == "" {
				f, err = os.CreateTemp(s.dir, "sluice-milter.*")
			} else {
				f, err = os.Create(s.path)
			}
			if err != nil {
				return false, fmt.Errorf("replace the body: %w", err)
			}
			s.path, s.src = f.Name(), nil
		}
		if _, err := f.Write(crlf(m.Body)); err != nil {
			f.Close()
			return false, fmt.Errorf("replace the body: %w", err)
		}
	}
	if f != nil {
		return true, f.Close()
	}
	return false, nil
}

// crlf turns bare LF line ends into CRLF: milters may send either.
func crlf(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	var out bytes.Buffer
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}

// writeMessage writes the header fields, the blank line and the body.
func writeMessage(out io.Writer, hdr *header, body *spooled) (int64, error) {
	var buf bytes.Buffer
	for _, f := range hdr.fields {
		if f.raw != nil {
			buf.Write(f.raw)
			continue
		}
		buf.WriteString(f.name)
		buf.WriteString(":")
		if !strings.HasPrefix(f.value, " ") && !strings.HasPrefix(f.value, "\t") {
			buf.WriteString(" ")
		}
		buf.Write(crlf([]byte(f.value)))
		buf.WriteString("\r\n")
	}
	buf.WriteString("\r\n")
	n, err := out.Write(buf.Bytes())
	if err != nil {
		return int64(n), err
	}
	rd, err := body.open()
	if err != nil {
		return int64(n), err
	}
	defer rd.Close()
	m, err := io.Copy(out, rd)
	return int64(n) + m, err
}
