// Package queue carries filter jobs from edges to workers over NATS
// JetStream and their verdicts back: one work-queue stream, one durable
// pull consumer shared by every worker, and a core NATS subject per edge
// for the verdicts. With no server URL it runs an embedded nats-server.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for Options; also the documented names.
const (
	DefaultStream        = "SLUICE_JOBS"
	DefaultSubject       = "sluice.jobs"
	DefaultConsumer      = "sluice-workers"
	DefaultVerdictPrefix = "sluice.verdicts"
	DefaultMaxAge        = time.Hour
	DefaultAckWait       = 60 * time.Second
	DefaultMaxDeliver    = 5
)

const (
	// requestTimeout bounds each JetStream API call: during a leader
	// election requests go unanswered, and a short call retried within the
	// caller's deadline gets through sooner than one long call.
	requestTimeout = 2 * time.Second
	// duplicateWindow is how long a Nats-Msg-Id is remembered.
	duplicateWindow = 2 * time.Minute
	// maxAckPending bounds jobs handed out and not yet acked, across all
	// workers; the workers' slots are the real limit.
	maxAckPending = 10000
)

// Options configure Open. Zero values take the defaults above.
type Options struct {
	URLs     []string       // servers to connect to; empty: start an embedded nats-server (unless Server is set)
	Server   *server.Server // connect in-process to this already running embedded server
	StoreDir string         // embedded: JetStream file storage directory
	Listen   string         // embedded: "host:port" client listener; "" = no TCP port (in-process connections only)
	Name     string         // connection name

	Stream        string // default DefaultStream
	Subject       string // jobs are published on Subject; the stream binds Subject and Subject+".>"
	Consumer      string // the durable pull consumer every worker shares
	VerdictPrefix string // an edge listens on VerdictPrefix+"."+edgeID
	Replicas      int
	MaxAge        time.Duration // jobs older than this leave the stream even if never run
	AckWait       time.Duration
	MaxDeliver    int
	// Domain is the JetStream domain of the stream, for clients of a
	// leaf node whose JetStream is the hub's; "" = the server's own.
	// Ignored for the embedded server.
	Domain string
	// PublishTimeout bounds Submit's publish retries (default 15 s).
	PublishTimeout time.Duration

	// Credentials. For an embedded server, User/Password or Token also
	// become the server's own authorization, so that workers joining
	// through Listen must present them.
	User, Password, Token string
	NKeyFile, CredsFile   string
	TLSCA, TLSCert        string
	TLSKey                string

	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Subject == "" {
		o.Subject = DefaultSubject
	}
	if o.Consumer == "" {
		o.Consumer = DefaultConsumer
	}
	if o.VerdictPrefix == "" {
		o.VerdictPrefix = DefaultVerdictPrefix
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *Options) validate() error {
	for _, s := range []struct{ name, v string }{
		{"subject", o.Subject}, {"verdict prefix", o.VerdictPrefix},
	} {
		if !validSubject(s.v) {
			return fmt.Errorf("queue: bad %s %q", s.name, s.v)
		}
	}
	for _, s := range []struct{ name, v string }{
		{"stream", o.Stream}, {"consumer", o.Consumer},
	} {
		if !validToken(s.v) {
			return fmt.Errorf("queue: bad %s name %q", s.name, s.v)
		}
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("queue: a TLS certificate needs its key, and a key its certificate")
	}
	return nil
}

// validToken reports whether s can be one element of a subject (and so a
// stream, consumer or edge name).
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ". \t\r\n*>")
}

// validSubject reports whether s is a literal subject (no wildcards).
func validSubject(s string) bool {
	for _, t := range strings.Split(s, ".") {
		if !validToken(t) {
			return false
		}
	}
	return true
}

// Queue is one connection to NATS with the stream and the consumer set up.
type Queue struct {
	opts   Options
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	ns     *server.Server // the embedded server, if any
	ownNS  bool           // we started ns and shut it down on Close
	closed chan struct{}  // closed when nc is closed

	pullWait time.Duration // see defaultPullWait; tests shorten it

	mu      sync.Mutex
	cons    jetstream.Consumer
	connErr error // the last failed connection attempt, for error messages
}

// Open connects to NATS, starting an embedded server first when neither
// URLs nor Server is set, and creates or updates the stream and the
// consumer. It retries the set-up until ctx is done: a cluster may still be
// electing its leaders.
func Open(ctx context.Context, o Options) (*Queue, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	q := &Queue{opts: o, log: o.Logger, ns: o.Server, closed: make(chan struct{}), pullWait: defaultPullWait}
	if len(o.URLs) == 0 && o.Server == nil {
		ns, err := StartServer(o)
		if err != nil {
			return nil, err
		}
		q.ns, q.ownNS = ns, true
	}
	if err := q.connect(); err != nil {
		q.shutdownServer()
		return nil, err
	}
	if err := q.setup(ctx); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Dial connects as Open does but sets nothing up: no job stream, no
// consumer, and no embedded server (o.URLs or o.Server is required). It
// returns once the JetStream API answers, or with why not when ctx ends
// first: for clients of streams of their own (replay's pool).
func Dial(ctx context.Context, o Options) (*Queue, error) {
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	if len(o.URLs) == 0 && o.Server == nil {
		return nil, errors.New("queue: no NATS server to connect to (nats.url)")
	}
	q := &Queue{opts: o, log: o.Logger, ns: o.Server, closed: make(chan struct{}), pullWait: defaultPullWait}
	if err := q.connect(); err != nil {
		return nil, err
	}
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := q.js.AccountInfo(actx)
		cancel()
		if err == nil {
			return q, nil
		}
		if cause := q.connFailure(); cause != nil {
			err = fmt.Errorf("%w; not connected: %w", err, cause)
		}
		if q.nc.IsClosed() {
			return nil, fmt.Errorf("queue: connect to NATS: %w", q.connCause(err))
		}
		select {
		case <-ctx.Done():
			q.nc.Close()
			return nil, fmt.Errorf("queue: NATS JetStream at %s: %w", strings.Join(o.URLs, ","), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// JetStream is the connection's JetStream API, for streams other than
// the job stream.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Conn is the NATS connection.
func (q *Queue) Conn() *nats.Conn { return q.nc }

// Embedded reports whether the connection is to an embedded server in
// this process.
func (q *Queue) Embedded() bool { return q.ns != nil }

// StartServer starts an embedded nats-server with JetStream storing under
// o.StoreDir, listening on o.Listen ("" = in-process connections only), and
// waits until it accepts connections.
func StartServer(o Options) (*server.Server, error) {
	o.setDefaults()
	if o.StoreDir == "" {
		return nil, errors.New("queue: the embedded NATS server needs a store directory")
	}
	so := &server.Options{
		ServerName: "sluice-embedded",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		Username:   o.User,
		Password:   o.Password,
	}
	if o.Token != "" {
		so.Authorization = o.Token
	}
	if o.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("queue: embedded NATS listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("queue: embedded NATS listen address %q: bad port", o.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT // for nats-server, 0 means its default 4222
		}
		so.Host, so.Port = host, p
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("queue: embedded NATS server: %w", err)
	}
	ns.SetLoggerV2(serverLogger{o.Logger.With("component", "nats-server")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("queue: embedded NATS server did not start (listen %q, store %s)", o.Listen, o.StoreDir)
	}
	return ns, nil
}

func (q *Queue) connect() error {
	o := q.opts
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(func(nc *nats.Conn) {
			q.log.Info("nats connected", "url", q.connectedURL(nc))
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && nc.IsClosed() {
				q.log.Debug("nats connection closed")
				return
			}
			q.log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			q.log.Info("nats reconnected", "url", q.connectedURL(nc))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			q.mu.Lock()
			q.connErr = err
			q.mu.Unlock()
			q.log.Debug("nats connection attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(q.closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			q.log.Warn("nats error", "subject", subj, "err", err)
		}),
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return fmt.Errorf("queue: nkey file: %w", err)
		}
		opts = append(opts, opt)
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	url := strings.Join(o.URLs, ",")
	if q.ns != nil {
		opts = append(opts, nats.InProcessServer(q.ns))
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("queue: connect to NATS: %w", err)
	}
	var js jetstream.JetStream
	if o.Domain != "" && q.ns == nil { // an embedded server's JetStream is its own
		js, err = jetstream.NewWithDomain(nc, o.Domain, jetstream.WithDefaultTimeout(requestTimeout))
	} else {
		js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(requestTimeout))
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("queue: %w", err)
	}
	q.nc, q.js = nc, js
	return nil
}

// connectedURL is for logs; nats.go reports its default URL for an
// in-process connection.
func (q *Queue) connectedURL(nc *nats.Conn) string {
	if q.ns != nil {
		return "in-process"
	}
	return nc.ConnectedUrlRedacted()
}

// reconnectDelay backs off from 100ms to 2s, with jitter so that a pool of
// workers does not reconnect in lock-step.
func reconnectDelay(attempts int) time.Duration {
	d := 100 * time.Millisecond << min(attempts, 5)
	d = min(d, 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// setup creates or updates the stream and the consumer until it works or
// ctx is done. A connection closed for good (nats.go gives up after the
// same authorization error twice) ends it at once. Either way the error
// names why the connection failed (bad credentials, a TLS error), not
// only the time-out it caused.
func (q *Queue) setup(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		err := q.ensure(ctx)
		if err == nil {
			return nil
		}
		if q.nc.IsClosed() {
			return fmt.Errorf("queue: connect to NATS: %w", q.connCause(err))
		}
		if cause := q.connFailure(); cause != nil {
			err = fmt.Errorf("%w; not connected: %w", err, cause)
		}
		q.log.Warn("nats: stream set-up failed, retrying", "stream", q.opts.Stream, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue: set up stream %s: %w (%w)", q.opts.Stream, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// connFailure is why the connection is down, or nil when it is up.
func (q *Queue) connFailure() error {
	if q.nc.Status() == nats.CONNECTED {
		return nil
	}
	if err := q.nc.LastError(); err != nil {
		return err // a handshake or authorization error of the last attempt
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.connErr // e.g. connection refused
}

// connCause is the reason a closed connection closed, else err.
func (q *Queue) connCause(err error) error {
	if last := q.nc.LastError(); last != nil {
		return last
	}
	return err
}

func (q *Queue) ensure(ctx context.Context) error {
	o := q.opts
	ctx, cancel := context.WithTimeout(ctx, 2*requestTimeout)
	defer cancel()
	storage, err := q.storage(ctx)
	if err != nil {
		return err
	}
	_, err = q.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "sluice filter jobs",
		Subjects:    []string{o.Subject, o.Subject + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     storage,
		Replicas:    o.Replicas,
		MaxAge:      o.MaxAge,
		Duplicates:  min(duplicateWindow, o.MaxAge), // the server wants it within MaxAge
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", o.Stream, err)
	}
	cons, err := q.js.CreateOrUpdateConsumer(ctx, o.Stream, jetstream.ConsumerConfig{
		Durable:       o.Consumer,
		Description:   "sluice workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		return fmt.Errorf("consumer %s: %w", o.Consumer, err)
	}
	q.mu.Lock()
	q.cons = cons
	q.mu.Unlock()
	return nil
}

// storage is where the job stream keeps its jobs. A job only matters
// while the edge that published it holds the sender's session, waiting
// for the verdict: if that edge ends, the sender retries (the failure
// rule), and the job is an orphan. With the embedded server the edge,
// its sessions and the stream live and die together, so the jobs are
// kept in memory: a file per message block, recreated on every ack, buys
// nothing there. A stream on a NATS cluster outlives any one process, and
// is on file, replicated. A client joining a stream that exists keeps its
// storage (a worker connecting to an edge's embedded server through
// nats.listen); the embedded server's owner moves a stream an older
// version left on file to memory, dropping the orphans in it.
func (q *Queue) storage(ctx context.Context) (jetstream.StorageType, error) {
	want := jetstream.FileStorage
	if q.ns != nil {
		want = jetstream.MemoryStorage
	}
	st, err := q.js.Stream(ctx, q.opts.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return want, nil
	case err != nil:
		return want, fmt.Errorf("stream %s: %w", q.opts.Stream, err)
	}
	info := st.CachedInfo()
	if info.Config.Storage == want {
		return want, nil
	}
	if !q.ownNS {
		return info.Config.Storage, nil
	}
	if err := q.js.DeleteStream(ctx, q.opts.Stream); err != nil {
		return want, fmt.Errorf("stream %s: moving it to memory: %w", q.opts.Stream, err)
	}
	q.log.Info("nats: the embedded job stream is now kept in memory; jobs of sessions that ended before this start dropped",
		"stream", q.opts.Stream, "dropped", info.State.Msgs)
	return want, nil
}

func (q *Queue) consumer() jetstream.Consumer {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cons
}

// Server is the embedded server this queue runs or was given, or nil.
func (q *Queue) Server() *server.Server { return q.ns }

// MaxPayload is the largest message the connected server takes, a job
// included.
func (q *Queue) MaxPayload() int64 { return q.nc.MaxPayload() }

// Ready reports whether the connection is up and the stream answers: for
// readiness endpoints.
func (q *Queue) Ready(ctx context.Context) error {
	if st := q.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("queue: nats connection %s", st)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := q.js.Stream(ctx, q.opts.Stream); err != nil {
		return fmt.Errorf("queue: stream %s: %w", q.opts.Stream, err)
	}
	return nil
}

// Close drains the connection (pending verdicts and acks go out first) and
// shuts the embedded server down if Open started it.
func (q *Queue) Close() {
	if err := q.nc.Drain(); err != nil {
		q.nc.Close()
	}
	select {
	case <-q.closed:
	case <-time.After(10 * time.Second):
		q.nc.Close()
	}
	q.shutdownServer()
}

func (q *Queue) shutdownServer() {
	if q.ownNS && q.ns != nil {
		q.ns.Shutdown()
		q.ns.WaitForShutdown()
	}
}

// serverLogger sends the embedded server's log to slog. Its start-up
// banner is a page of notices, hence notices at debug level.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  {}
func (l serverLogger) Tracef(format string, v ...any)  {}
