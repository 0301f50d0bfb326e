// Package edge puts the edge together: the blob store, the job queue (an
// embedded NATS server unless one is configured), in-process workers when
// asked for, the listener with its connection limit, and one session per
// client. cmd/edge and the end-to-end tests start it the same way.
package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/rs/xid"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/certs"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/header"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/replycode"
	"github.com/sluice-mail/sluice/internal/session"
	"github.com/sluice-mail/sluice/internal/upstream"
	"github.com/sluice-mail/sluice/internal/wire"
	"github.com/sluice-mail/sluice/internal/wiring"
	"github.com/sluice-mail/sluice/internal/worker"
)

// Edge is a running edge.
type Edge struct {
	cfg   *config.Config
	log   *slog.Logger
	scfg  session.Config
	pipe  *pipeline
	ln    net.Listener
	store blob.Store
	q     *queue.Queue
	sub   *queue.Submitter

	natsDir  string                 // the embedded server's JetStream store, "" with an external NATS
	mon      *monitor.Server        // nil when http_listen is off
	metrics  *monitor.EdgeMetrics   // nil: nothing counted
	wmetrics *monitor.WorkerMetrics // in-process workers

	workersStop context.CancelFunc
	workersDone chan struct{}
	replay      ReplayServer // nil: the replay pools are served elsewhere
	bgStop      context.CancelFunc
	bg          sync.WaitGroup

	certs      *certs.Store  // nil without TLS
	tls        *tls.Config   // from certs
	hup        chan struct{} // ReloadTLS
	implicitLn net.Listener  // tls.implicit_listen; nil for none
	removePid  func()        // removes the PidFile the edge wrote

	// listenerDone is closed when the accept loop ended on its own, its
	// listener broken; listenerErr says why.
	listenerDone chan struct{}
	listenerErr  error

	// sessionCtx is every session's context; Shutdown cancels it with
	// stopSessions once the drain period is over.
	sessionCtx   context.Context
	stopSessions context.CancelFunc

	mu       sync.Mutex
	sessions map[*session.Session]struct{}
	perIP    map[netip.Addr]int // sessions per client address, for max_connections_per_client
	active   sync.WaitGroup
	slots    chan struct{}
	connID   atomic.Uint32
	closing  atomic.Bool
	acceptWG sync.WaitGroup
}

// Start brings every part up and listens once the edge can filter: NATS,
// the store and (in the single-process default) the workers are ready.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (*Edge, error) {
	return start(ctx, cfg, log, listenerFor(cfg), opts...)
}

// Option is an optional part of the edge.
type Option func(*Edge)

// ReplayServer serves the replay pools of worker.replay_pools on q and
// store until ctx ends; wait returns once its jobs in progress are done
// (replaypool.Serve).
type ReplayServer func(ctx context.Context, cfg *config.Config, q *queue.Queue, store blob.Store, log *slog.Logger) (wait func())

// WithReplayPools has the in-process workers also serve the replay pools
// of worker.replay_pools with serve, as a sluice-worker does.
func WithReplayPools(serve ReplayServer) Option {
	return func(e *Edge) { e.replay = serve }
}

// start is Start with the function that opens the listener.
func start(ctx context.Context, cfg *config.Config, log *slog.Logger, listen func(config.Address) (net.Listener, error), opts ...Option) (*Edge, error) {
	e := &Edge{cfg: cfg, log: log, sessions: map[*session.Session]struct{}{}, perIP: map[netip.Addr]int{},
		listenerDone: make(chan struct{}), hup: make(chan struct{}, 1)}
	for _, o := range opts {
		o(e)
	}
	e.sessionCtx, e.stopSessions = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			e.closeListeners()
			e.closeBackends()
			e.removePidFile()
		}
	}()
	if err := e.startMonitor(ctx); err != nil {
		return nil, err
	}
	if cfg.TLS.Enabled() {
		var err error
		if e.certs, err = certs.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile, log); err != nil {
			return nil, err
		}
		e.tls = e.certs.Config()
	}
	upTLS, err := upstreamTLS(cfg)
	if err != nil {
		return nil, err
	}
	e.scfg = e.sessionConfig(upTLS)
	if cfg.User != "" {
		// proxsmtpd's User: the listeners are bound (a port below 1024
		// needs root) and the pid file written as root (bind), then the whole
		// process switches before anything else runs: the store, NATS,
		// the workers and their filters run as the user.
		if err := e.bind(listen); err != nil {
			return nil, err
		}
		if err := wiring.SwitchUser(cfg, log); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	edgeID := xid.New().String()
	qo, err := e.openBackends(ctx, edgeID)
	if err != nil {
		return nil, err
	}
	if cfg.Worker.Slots > 0 {
		if err := e.startWorkers(ctx, qo); err != nil {
			return nil, err
		}
	}
	if e.ln == nil {
		if err := e.bind(listen); err != nil {
			return nil, err
		}
	}
	e.mon.SetCheck("listener", e.listenerCheck)
	e.slots = make(chan struct{}, cfg.MaxConnections)
	e.startBackground()
	e.acceptWG.Add(1)
	go e.accept(e.ln, false)
	if e.implicitLn != nil {
		e.acceptWG.Add(1)
		go e.accept(e.implicitLn, true)
		log.Info("edge listening with implicit TLS", "addr", e.implicitLn.Addr().String())
	}
	log.Info("edge listening", "addr", e.ln.Addr().String(), "edge_id", edgeID, "out", e.upstreamName(),
		"nats", natsDescription(cfg), "store", wiring.StoreDescription(cfg), "workers", cfg.Worker.Slots,
		"version", wiring.VersionString())
	log.Info(retentionNotice(cfg.Retention), "retention_s", int64(cfg.Retention.Seconds()), "store", wiring.StoreDescription(cfg))
	ok = true
	return e, nil
}

// bind opens the listeners, Listen and tls.implicit_listen if set, and
// writes the PidFile, as proxsmtpd does once it listens. The edge accepts
// nothing on them until it is ready.
func (e *Edge) bind(listen func(config.Address) (net.Listener, error)) error {
	var err error
	if e.ln, err = listen(e.cfg.Listen); err != nil {
		return fmt.Errorf("cannot listen on %s (Listen): %w", e.cfg.Listen, err)
	}
	if a := e.cfg.TLS.ImplicitListen; a.Network != "" {
		if e.implicitLn, err = listen(a); err != nil {
			return fmt.Errorf("cannot listen on %s (tls.implicit_listen): %w", a, err)
		}
	}
	e.removePid = wiring.WritePidFile(e.cfg.PidFile, e.log)
	return nil
}

// retentionNotice says at start-up what the store keeps, and for how long:
// every message as received, the filter's rewritten copy when it made
// one, and the verdict record.
func retentionNotice(keep time.Duration) string {
	if keep == 0 {
		return "messages are stored only for their transaction (retention: 0): nothing is kept for replay"
	}
	return "every message is stored as received, with the filter's rewritten copy and its verdict, and kept for " +
		keep.String() + " (retention) for replay; retention: 0 keeps nothing beyond the transaction"
}

// upstreamTLS is the TLS configuration towards the upstream, nil for
// upstream.tls: none.
func upstreamTLS(cfg *config.Config) (*tls.Config, error) {
	u := cfg.Upstream
	if u.TLS == config.UpstreamTLSNone || u.TLS == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.ServerName}
	if tc.ServerName == "" {
		tc.ServerName = cfg.OutAddress.Host
	}
	if u.TLS == config.UpstreamTLSOpportunistic {
		// Encryption against passive listeners only, as Postfix's "may":
		// any certificate will do; required is for verified peers.
		tc.InsecureSkipVerify = true
	}
	if u.CAFile != "" {
		pem, err := os.ReadFile(u.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls_ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream.tls_ca_file: %s holds no PEM certificate", u.CAFile)
		}
	}
	if u.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(u.CertFile, u.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls_cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// startBackground starts the retention sweep and, with TLS, the watch on
// the certificate's files.
func (e *Edge) startBackground() {
	bgctx, bgStop := context.WithCancel(context.Background())
	e.bgStop = bgStop
	e.bg.Add(1)
	go func() { defer e.bg.Done(); e.sweep(bgctx) }()
	if e.certs != nil {
		e.bg.Add(1)
		go func() { defer e.bg.Done(); e.certs.Watch(bgctx, certCheckEvery, e.hup) }()
	}
}

// certCheckEvery is how often the certificate's files are looked at for
// a renewal.
const certCheckEvery = 30 * time.Second

// ReloadTLS reads the certificate again (SIGHUP); a pair that does not
// load keeps the one in use, logged.
func (e *Edge) ReloadTLS() {
	select {
	case e.hup <- struct{}{}:
	default: // a reload is pending already
	}
}

// startMonitor starts the monitoring endpoint first, so that a busy
// address fails start-up before anything else opens; readiness says
// "starting" until the parts are up.
func (e *Edge) startMonitor(ctx context.Context) error {
	if e.cfg.HTTPListen == "" {
		return nil
	}
	reg := monitor.NewRegistry(wiring.VersionString())
	e.metrics = monitor.NewEdgeMetrics(reg)
	if e.cfg.Worker.Slots > 0 {
		e.wmetrics = monitor.NewWorkerMetrics(reg)
	}
	var err error
	e.mon, err = wiring.Monitor(ctx, e.cfg, reg, e.log, "queue", "store")
	return err
}

// sessionConfig is what every session needs of the configuration;
// upTLS is the TLS towards the upstream (upstreamTLS).
func (e *Edge) sessionConfig(upTLS *tls.Config) session.Config {
	cfg := e.cfg
	hdr, warnings := header.Parse(cfg.Header)
	for _, w := range warnings {
		e.log.Warn(w, "setting", "Header")
	}
	return session.Config{
		Hostname:          cfg.Hostname,
		TimeOut:           cfg.TimeOut,
		KeepAlives:        cfg.KeepAlives,
		RejectAll:         cfg.FilterType == "reject",
		FilterReject:      rejectReply(cfg.FilterReject),
		SkipAuthenticated: cfg.SkipAuthenticated,
		XClient:           cfg.XClient,
		MaxMessageSize:    cfg.MaxMessageSize,
		RejectBare:        cfg.BareLineEndings == "reject",
		RejectNUL:         cfg.Limits.NULBytes == config.NULReject,
		Header:            hdr,

		RecipientLimit:     cfg.Limits.RecipientLimit,
		HardErrorLimit:     cfg.Limits.HardErrorLimit,
		RejectEarlyTalkers: cfg.Limits.RejectEarlyTalkers,
		CommandDeadline:    cfg.Limits.CommandDeadline,
		DataDeadline:       cfg.Limits.DataDeadline,
		DataMinRate:        cfg.Limits.DataMinRate,
		XForwardTrusted:    cfg.XForward.TrustedXForward,
		TLS:                e.tls,
		TLSRequired:        cfg.TLS.Required,

		UpstreamTLS:         upTLS,
		UpstreamTLSRequired: cfg.Upstream.TLS == config.UpstreamTLSRequired,

		OnMessage: func(k session.Kind) { e.metrics.Message(k.String()) },
		OnLimit:   e.metrics.Limit,
		OnPanic:   e.metrics.SessionPanic,
	}
}

// openBackends opens the store and the job queue (starting the embedded
// NATS server when no nats.url is set) and builds the pipeline on them.
// It returns the queue options, for the in-process workers.
func (e *Edge) openBackends(ctx context.Context, edgeID string) (queue.Options, error) {
	cfg := e.cfg
	var err error
	if e.store, err = wiring.OpenStore(ctx, cfg, e.log); err != nil {
		return queue.Options{}, err
	}
	e.mon.SetCheck("store", blob.ReadyCheck(e.store))
	qo := wiring.QueueOptions(cfg, "sluice-edge", e.log)
	if cfg.NATS.Embedded() {
		qo.StoreDir = filepath.Join(cfg.DataDir, "nats", instanceName(cfg.Listen.String()))
		e.natsDir = qo.StoreDir
		qo.Listen = cfg.NATS.Listen
	}
	if e.q, err = queue.Open(ctx, qo); err != nil {
		return qo, fmt.Errorf("job queue: %w", err)
	}
	if err := checkJobFits(cfg.Limits.RecipientLimit, e.q.MaxPayload()); err != nil {
		return qo, err
	}
	e.mon.SetCheck("queue", e.q.Ready)
	sub, err := e.q.NewSubmitter(ctx, edgeID)
	if err != nil {
		return qo, fmt.Errorf("job queue: %w", err)
	}
	e.sub = sub
	e.pipe = &pipeline{store: e.store, sub: sub, edgeID: edgeID, jobTimeout: cfg.JobTimeout, storeIdle: cfg.TimeOut,
		retention: cfg.Retention, log: e.log, metrics: e.metrics}
	return qo, nil
}

// rejectReply formats FilterReject like a filter's message (behaviour.md#reject-and-passthrough): a text
// without a code gets proxsmtpd's prefix.
func rejectReply(s string) string {
	s = strings.TrimSpace(s)
	if class, ok := replycode.Final(s); ok && class != 2 {
		return s
	}
	return "550 Content Rejected; " + s
}

// jobOverhead bounds what a filter job holds besides its recipients: the
// keys, the client's HELO (one command line at most) and the rest.
const jobOverhead = 16 << 10

// checkJobFits refuses a recipient_limit whose envelopes could make a job
// bigger than the NATS server takes: such a message would be answered
// 451 for ever. Each recipient costs its address (wire.MaxPath at most)
// and a few bytes of framing.
func checkJobFits(recipients int, maxPayload int64) error {
	need := int64(recipients)*(wire.MaxPath+4) + jobOverhead
	if maxPayload > 0 && need > maxPayload {
		return fmt.Errorf("recipient_limit: %d recipients make filter jobs of up to %d bytes, more than the NATS server's max_payload (%d bytes): lower recipient_limit or raise max_payload",
			recipients, need, maxPayload)
	}
	return nil
}

// instanceName makes a directory name of the listen address, so that
// several edges on one host keep separate embedded JetStream stores.
func instanceName(listen string) string {
	r := strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "")
	return "edge-" + r.Replace(listen)
}

func natsDescription(cfg *config.Config) string {
	if len(cfg.NATS.URLs) == 0 {
		if cfg.NATS.Listen != "" {
			return "embedded, listening on " + cfg.NATS.Listen
		}
		return "embedded"
	}
	return strings.Join(cfg.NATS.RedactedURLs(), ",")
}

// startWorkers runs the in-process worker pool: the same worker package
// as cmd/worker, on its own NATS connection, sharing only the queue and
// the store with the edge.
func (e *Edge) startWorkers(ctx context.Context, qo queue.Options) error {
	qo.Name = "sluice-worker"
	qo.Server = e.q.Server()
	wq, err := queue.Open(ctx, qo)
	if err != nil {
		return fmt.Errorf("worker queue connection: %w", err)
	}
	f, err := wiring.Filter(e.cfg, e.log.With("component", "worker"))
	if err != nil {
		return err
	}
	if ready := wiring.FilterReady(f); ready != nil {
		e.mon.SetCheck("milters", ready)
	}
	w := &worker.Worker{
		ID:      wiring.ProcessID("-edge"),
		Store:   e.store,
		Filter:  f,
		Logger:  e.log.With("component", "worker"),
		Metrics: e.wmetrics,
		Abandon: e.sessionCtx, // cancelled once Shutdown is done with the sessions
	}
	e.mon.SetCheck("worker_queue", wq.Ready)
	wctx, stop := context.WithCancel(context.Background())
	e.workersStop = stop
	e.workersDone = make(chan struct{})
	replayDone := func() {}
	if e.replay != nil && len(e.cfg.Worker.ReplayPools) > 0 {
		replayDone = e.replay(wctx, e.cfg, wq, e.store, e.log.With("component", "worker"))
	}
	go func() {
		defer close(e.workersDone)
		defer wq.Close()
		defer replayDone()
		if err := worker.Run(wctx, wq, w, e.cfg.Worker.Slots); err != nil {
			e.log.Error("in-process workers stopped", "err", err)
		}
	}()
	return nil
}

func listen(a config.Address) (net.Listener, error) {
	if a.Network == "unix" {
		_ = os.Remove(a.Path)
		return net.Listen("unix", a.Path)
	}
	return net.Listen(tcpNetwork(a.Host), net.JoinHostPort(a.Host, strconv.Itoa(a.Port)))
}

// tcpNetwork is "tcp4" for an IPv4 address, so that 0.0.0.0 listens on
// IPv4 only, as proxsmtpd does (Go's "tcp" makes 0.0.0.0 a dual-stack
// socket, open on IPv6 too); "tcp" for anything else.
func tcpNetwork(host string) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		return "tcp4"
	}
	return "tcp"
}

// Addr is the address the edge listens on.
func (e *Edge) Addr() net.Addr { return e.ln.Addr() }

func (e *Edge) accept(ln net.Listener, implicitTLS bool) {
	defer e.acceptWG.Done()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if e.closing.Load() {
				return
			}
			if temporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				e.log.Warn("accept failed", "err", err, "retry_in_ms", delay.Milliseconds())
				time.Sleep(delay)
				continue
			}
			e.log.Error("listener failed: no more connections accepted", "err", err)
			e.mu.Lock()
			if e.listenerErr == nil {
				e.listenerErr = err
				close(e.listenerDone)
			}
			e.mu.Unlock()
			return
		}
		delay = 0
		select {
		case e.slots <- struct{}{}:
		default:
			// behaviour.md#connection: over MaxConnections; the upstream is never contacted.
			e.metrics.Connection(monitor.ConnBusy)
			e.log.Warn("too many connections open, sent busy response", "max", e.cfg.MaxConnections, "client", c.RemoteAddr().String())
			go session.Refuse(c, "421 Server busy, too many connections")
			continue
		}
		e.active.Add(1)
		go e.serve(c, implicitTLS)
	}
}

// serve admits one connection, its PROXY protocol header read when it
// comes from a trusted load balancer, and runs its session.
func (e *Edge) serve(c net.Conn, implicitTLS bool) {
	defer e.active.Done()
	defer func() { <-e.slots }()
	c, err := e.proxied(c)
	if err != nil {
		e.log.Warn("no valid PROXY protocol header from a trusted peer; closed", "peer", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	ip, ok := e.admitClient(c)
	if !ok {
		e.metrics.Connection(monitor.ConnPerClient)
		e.log.Warn("too many connections from one client, sent busy response",
			"max", e.cfg.Limits.PerClient, "client", c.RemoteAddr().String())
		session.Refuse(c, "421 4.7.0 Error: too many connections from "+ip.String())
		return
	}
	defer e.releaseClient(ip)
	e.serveSession(c, implicitTLS)
}

// proxyHeaderTimeout bounds the wait for a PROXY protocol header when
// TimeOut does not.
const proxyHeaderTimeout = 10 * time.Second

// proxied reads the PROXY protocol header (v1 or v2) that a trusted load
// balancer puts before the dialog: the address it carries is the client
// from here on, everywhere. A connection from anyone else is returned as
// it is; one from a trusted peer without a valid header is an error.
func (e *Edge) proxied(c net.Conn) (net.Conn, error) {
	if !e.cfg.ProxyProtocol.Trusts(session.PolicyAddr(c.RemoteAddr())) {
		return c, nil
	}
	timeout := e.cfg.TimeOut
	if timeout <= 0 || timeout > proxyHeaderTimeout {
		timeout = proxyHeaderTimeout
	}
	pc := proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(timeout))
	if _, err := pc.Read(nil); err != nil {
		return c, err
	}
	return pc, nil
}

// temporary reports whether an accept error passes: out of file
// descriptors or memory for a moment, or a client that gave up before it
// was accepted. Anything else means the listener is broken.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// Failed is closed when the edge stopped accepting connections on its own
// because its listener broke (not on Shutdown); Err says why. The edge is
// unready from then on, and cmd/edge exits non-zero.
func (e *Edge) Failed() <-chan struct{} { return e.listenerDone }

// Err is why the listener broke, or nil.
func (e *Edge) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.listenerErr
}

// listenerCheck is the readiness check "listener".
func (e *Edge) listenerCheck(context.Context) error {
	select {
	case <-e.listenerDone:
		return fmt.Errorf("not accepting connections: %w", e.Err())
	default:
		return nil
	}
}

// admitClient counts a new session of c's client address against
// max_connections_per_client: one address holding every session, at a
// byte every TimeOut, would otherwise lock all other senders out.
func (e *Edge) admitClient(c net.Conn) (netip.Addr, bool) {
	ip := session.PolicyAddr(c.RemoteAddr())
	lim := e.cfg.Limits
	if lim.PerClient == 0 || lim.Exempt(ip) {
		return netip.Addr{}, true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.perIP[ip] >= lim.PerClient {
		return ip, false
	}
	e.perIP[ip]++
	return ip, true
}

// releaseClient ends a session counted by admitClient.
func (e *Edge) releaseClient(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.perIP[ip]--; e.perIP[ip] <= 0 {
		delete(e.perIP, ip)
	}
}

// serveSession runs the session of an admitted connection.
func (e *Edge) serveSession(c net.Conn, implicitTLS bool) {
	e.metrics.SessionStarted()
	defer e.metrics.SessionEnded()
	id := strings.ToUpper(strconv.FormatUint(uint64(0x100000+e.connID.Add(1)-1), 16))
	log := e.log.With("conn", id)
	if pc, ok := c.(*proxyproto.Conn); ok {
		log.Info("accepted connection", "client", c.RemoteAddr().String(), "proxy", pc.Raw().RemoteAddr().String())
	} else {
		log.Info("accepted connection", "client", c.RemoteAddr().String())
	}
	// Shutdown cancels ctx when the drain period is over: the dial, the
	// session (Stop) and its pipeline all end with it.
	ctx, cancel := context.WithCancel(e.sessionCtx)
	defer cancel()
	raw := c
	if implicitTLS {
		tc, err := e.handshake(ctx, c)
		if err != nil {
			log.Info("TLS handshake failed", "err", err)
			c.Close()
			return
		}
		c = tc
	}

	// behaviour.md#connection: the upstream first; the client is greeted only once it greeted.
	up, err := e.dialUpstream(ctx, raw)
	if err != nil {
		log.Warn("couldn't connect to upstream", "out", e.upstreamName(), "err", err)
		e.metrics.Connection(monitor.ConnUpstreamUnreachable)
	} else {
		e.metrics.Connection(monitor.ConnAccepted)
	}
	s := session.New(&e.scfg, e.pipe, e.log, id, c, up)
	e.mu.Lock()
	if e.closing.Load() {
		s.Drain() // Shutdown's Drain loop has passed this one
	}
	e.sessions[s] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.sessions, s)
		e.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, s.Stop)
	defer stop()
	s.Serve(ctx)
	log.Debug("connection closed")
}

// handshake starts TLS at once on a connection to the implicit-TLS
// listener, within TimeOut.
func (e *Edge) handshake(ctx context.Context, c net.Conn) (*tls.Conn, error) {
	if t := e.cfg.TimeOut; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	tc := tls.Server(c, e.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// upstreamName is where sessions are relayed, for the log.
func (e *Edge) upstreamName() string {
	if tp := e.cfg.TransparentProxy; tp != config.TransparentOff {
		return "original destination (TransparentProxy " + string(tp) + ")"
	}
	return e.cfg.OutAddress.String()
}

// dialUpstream connects to OutAddress; a port alone means the client's own
// address (the loopback feature, behaviour.md#other). With
// TransparentProxy it connects where the client meant to
// (transparentDest). c is the accepted connection, before any TLS.
func (e *Edge) dialUpstream(ctx context.Context, c net.Conn) (*upstream.Conn, error) {
	if e.cfg.TransparentProxy != config.TransparentOff {
		addr, d, err := e.transparentDest(c)
		if err != nil {
			return nil, err
		}
		up, err := upstream.DialWith(ctx, d, "tcp", addr, e.cfg.TimeOut)
		var se *os.SyscallError
		if err != nil && errors.As(err, &se) && se.Syscall == "bind" {
			err = fmt.Errorf("couldn't set source of transparent connection to: %s: %w", c.RemoteAddr(), err)
		} else if err == nil && d.LocalAddr != nil {
			e.log.Debug("setup source of transparent connection: " + c.RemoteAddr().String())
		}
		return up, err
	}
	a := e.cfg.OutAddress
	network, addr := "tcp", ""
	switch {
	case a.Network == "unix":
		network, addr = "unix", a.Path
	case a.PortOnly():
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		addr = net.JoinHostPort(host, strconv.Itoa(a.Port))
	default:
		addr = net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
	}
	return upstream.Dial(ctx, network, addr, e.cfg.TimeOut)
}

// sweep deletes stored messages older than the retention period, hourly.
// With retention 0 each transaction deletes its own copies; the sweep
// then removes what a worker still wrote after the edge had given up on
// it (a verdict past its deadline), a day later.
func (e *Edge) sweep(ctx context.Context) {
	keep := e.cfg.Retention
	if keep == 0 {
		keep = 24 * time.Hour
	}
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := blob.Sweep(ctx, e.store, time.Now().Add(-keep), e.log)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("retention sweep failed", "err", err)
		} else if n > 0 {
			e.log.Info("retention sweep", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Shutdown stops accepting, lets open sessions finish their transactions
// for up to the drain period, then ends the rest with 421, and stops the
// workers and the queue.
func (e *Edge) Shutdown(ctx context.Context) {
	e.mon.SetDraining()
	e.closing.Store(true)
	e.closeListeners()
	e.acceptWG.Wait()
	e.mu.Lock()
	for s := range e.sessions {
		s.Drain()
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.stopSessions()
		<-done
	}
	e.stopSessions() // all ended: releases the context
	e.closeBackends()
	if e.natsDir != "" {
		// The embedded stream only ever holds jobs whose sessions are now
		// gone: after a restart their deadlines have passed. Nothing in it
		// is worth keeping, and one directory per listen address would
		// otherwise pile up. Only after a clean run: this edge held the
		// listen address, so no other edge uses the directory.
		if err := os.RemoveAll(e.natsDir); err != nil {
			e.log.Warn("removing the embedded JetStream store", "dir", e.natsDir, "err", err)
		}
	}
	e.removePidFile()
}

func (e *Edge) closeListeners() {
	if e.ln != nil {
		e.ln.Close()
	}
	if e.implicitLn != nil {
		e.implicitLn.Close()
	}
}

func (e *Edge) removePidFile() {
	if e.removePid != nil {
		e.removePid()
	}
}

func (e *Edge) closeBackends() {
	if e.bgStop != nil {
		e.bgStop()
		e.bg.Wait()
	}
	if e.workersStop != nil {
		e.workersStop()
		<-e.workersDone
	}
	if e.sub != nil {
		e.sub.Close()
	}
	if e.q != nil {
		e.q.Close()
	}

	if e.mon != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.mon.Shutdown(ctx)
	}
}
