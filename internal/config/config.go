// Package config is sluice's configuration: one struct holding every
// setting, its default and its checks. Load reads four sources with one
// precedence, flags > environment (SLUICE_*) > configuration file >
// defaults, through viper, and validates the result once, so that bad
// configuration stops the program at start-up with one line naming the
// setting and the file, never at the first message.
//
// The file is an unmodified proxsmtpd.conf (read by ParseProxsmtpd) or,
// when its name ends in .yaml, .yml or .json, the same key space in YAML
// or JSON. Other packages take the values they need from Config.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/privs"
)

// Role is which program is loading its configuration.
type Role int

const (
	Edge   Role = iota // holds SMTP sessions; needs OutAddress
	Worker             // runs filters; ignores Listen and OutAddress
	Replay             // reads the store and runs filters; needs neither OutAddress nor nats.url
)

func (r Role) String() string {
	switch r {
	case Worker:
		return "worker"
	case Replay:
		return "replay"
	}
	return "edge"
}

// DefaultEdgeConfig is the edge's configuration file when neither -f nor
// $SLUICE_CONFIG names one, as for proxsmtpd. The worker has none.
const DefaultEdgeConfig = "/etc/proxsmtpd.conf"

// FilterType is proxsmtpd's FilterType.
type FilterType string

const (
	FilterTypePipe   FilterType = "pipe"   // message on stdin, filtered message on stdout
	FilterTypeFile   FilterType = "file"   // message in the file named by $EMAIL, edited in place
	FilterTypeReject FilterType = "reject" // every message refused with FilterReject
)

// Transparent is proxsmtpd's TransparentProxy mode.
type Transparent string

const (
	TransparentOff    Transparent = "off"
	TransparentClient Transparent = "client"
	TransparentFull   Transparent = "full"
)

// LineEndings is what the edge does with a bare CR or LF inside DATA.
type LineEndings string

const (
	LineEndingsNormalise LineEndings = "normalise" // turned into CRLF
	LineEndingsReject    LineEndings = "reject"    // message refused after it was read to its end
)

// StoreType picks the blob store implementation.
type StoreType string

const (
	StoreFS StoreType = "fs"
	StoreS3 StoreType = "s3"
)

// LogFormat is the slog handler.
type LogFormat string

const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Limits of the timeout budget: a sender waits 10 minutes for the reply
// after the final dot (RFC 5321 4.5.3.2.6), so the edge must have
// answered before that.
const (
	senderWait    = 10 * time.Minute
	maxJobTimeout = 9 * time.Minute

	// DefaultAckWait is nats.ack_wait unless set: a worker killed
	// outright has its jobs running elsewhere within it (issue 10).
	DefaultAckWait = 8 * time.Second
	minAckWait     = time.Second
)

// Config is every setting of sluice, validated.
type Config struct {
	Role        Role
	ConfigFile  string   // from -f, $SLUICE_CONFIG or DefaultEdgeConfig; "" for none
	ShowVersion bool     // -v: print the version and ConfigFile, exit 0; nothing else is loaded
	Debug       int      // -d level 0..4, -1 when -d was not given (see LogLevel)
	PidFile     string   // the PidFile option, else -p; "" for none
	Warnings    []string // for main to log at start-up

	// proxsmtpd.conf options.
	FilterCommand     string        // run as /bin/sh -c; "" passes mail through
	FilterTimeout     time.Duration // total deadline of one filter run
	FilterType        FilterType
	FilterReject      string        // reply for FilterTypeReject
	Header            string        // raw template (%i %l %d %%, \r \n \t); "" adds nothing
	KeepAlives        time.Duration // NOOP interval towards the upstream; 0 = off
	Listen            Address       // edge only; a port alone means 0.0.0.0
	MaxConnections    int           // 2..10239
	OutAddress        Address       // edge only; PortOnly() = the client's own IP
	SkipAuthenticated bool          // Skip: authenticated
	TempDirectory     string        // filters' $TMPDIR and file-mode spool
	TimeOut           time.Duration // every network read and write
	TransparentProxy  Transparent
	User              string // switch to this user once the listeners are bound (internal/privs)
	XClient           bool

	// sluice's own settings.
	Hostname        string // greeting and EHLO reply
	DataDir         string // absolute
	MaxMessageSize  int64  // bytes; 0 = unlimited
	BareLineEndings LineEndings
	Retention       time.Duration // 0 = delete a message's copies after its transaction
	DrainTimeout    time.Duration // on SIGTERM, before open sessions get 421
	JobTimeout      time.Duration // edge's wait for a verdict after the final dot
	LogFormat       LogFormat
	HTTPListen      string // host:port for health, readiness, metrics; "" = off

	Limits   Limits
	XForward XForward
	TLS      TLS

	ProxyProtocol ProxyProtocol
	Upstream      Upstream
	NATS          NATS
	Store         Store
	Filter        FilterSettings
	Worker        WorkerSettings
}

// UpstreamTLS is whether the edge asks the upstream for STARTTLS.
type UpstreamTLS string

const (
	UpstreamTLSNone          UpstreamTLS = "none"          // never: today's behaviour
	UpstreamTLSOpportunistic UpstreamTLS = "opportunistic" // when offered, certificate unchecked
	UpstreamTLSRequired      UpstreamTLS = "required"      // always, certificate verified
)

// Upstream is the edge's TLS towards the upstream (OutAddress).
type Upstream struct {
	TLS        UpstreamTLS
	CAFile     string // "" = the system's roots
	ServerName string // "" = OutAddress's host
	CertFile   string // client certificate, for mutual TLS
	KeyFile    string
}

// ProxyProtocol is who may put a PROXY protocol header before the SMTP
// dialog: the load balancers in front of the edge.
type ProxyProtocol struct {
	Trusted []netip.Prefix // empty: nobody, and no header is read
}

// Trusts reports whether a connection from ip starts with a header.
func (p ProxyProtocol) Trusts(ip netip.Addr) bool { return containsAddr(p.Trusted, ip) }

// TLS is the edge's TLS towards its clients: STARTTLS, and optionally a
// listener where TLS starts at once.
type TLS struct {
	CertFile       string  // PEM, the full chain; "" = no TLS
	KeyFile        string  // PEM
	Required       bool    // MAIL before STARTTLS gets 530 5.7.0
	ImplicitListen Address // RFC 8314 listener; Network "" = none
}

// Enabled reports whether the edge offers TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// NULBytes is what the edge does with a NUL byte inside DATA.
type NULBytes string

const (
	NULReject NULBytes = "reject" // message refused after it was read to its end
	NULKeep   NULBytes = "keep"   // passed on as it is, as proxsmtpd does
)

// Limits are what one client may cost the edge: they keep a hostile or
// broken client from holding sessions, slots or memory for long.
type Limits struct {
	RecipientLimit     int           // recipients per message; more get 452 4.5.3
	HardErrorLimit     int           // errors in one session before 421
	RejectEarlyTalkers bool          // a client that talks before the greeting gets 554
	NULBytes           NULBytes      // NUL inside DATA
	CommandDeadline    time.Duration // total time for one command line
	DataDeadline       time.Duration // total time for DATA, before data_min_rate extends it
	DataMinRate        int64         // bytes per second that extend DataDeadline; 0 = none
	PerClient          int           // sessions per client address; 0 = no limit
	PerClientExempt    []netip.Prefix
}

// XForward is whose XFORWARD the edge believes.
type XForward struct {
	Trusted []netip.Prefix // empty: nobody
}

// TrustedXForward reports whether ip may send XFORWARD.
func (x XForward) TrustedXForward(ip netip.Addr) bool { return containsAddr(x.Trusted, ip) }

// Exempt reports whether ip is exempt from the per-client limit.
func (l Limits) Exempt(ip netip.Addr) bool { return containsAddr(l.PerClientExempt, ip) }

func containsAddr(ps []netip.Prefix, ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// FilterSettings are what a worker applies around the FilterCommand.
type FilterSettings struct {
	EnvAllow      []string // the only variables a filter inherits (NAME or PREFIX*); empty = all but sluice's own
	MaxOutputSize int64    // largest filtered message; 0 = unlimited

	// Milters, after the FilterCommand (see internal/milter).
	Milters              []string
	MilterDefaultAction  string // tempfail, accept, reject
	MilterConnectTimeout time.Duration
	MilterCommandTimeout time.Duration
	MilterContentTimeout time.Duration
	MilterProtocol       int
}

// NATS is how to reach the job queue.
type NATS struct {
	URLs          []string // empty: the edge runs an embedded server
	Listen        string   // embedded server's client address (host:port); "" = in-process only
	Stream        string
	Subject       string
	Consumer      string
	VerdictPrefix string
	Replicas      int
	MaxAge        time.Duration
	AckWait       time.Duration
	MaxDeliver    int
	// Domain is the JetStream domain the stream lives in ("" = the
	// connected server's own): a leaf node's clients reach the central
	// cluster's JetStream through it.
	Domain string
	// PublishTimeout bounds an edge's retries of a job's publish.
	PublishTimeout time.Duration
	User           string
	Password       string
	Token          string
	NKeyFile       string
	CredsFile      string
	TLSCA          string
	TLSCert        string
	TLSKey         string
}

// Embedded reports whether no external NATS server is configured.
func (n NATS) Embedded() bool { return len(n.URLs) == 0 }

// RedactedURLs is URLs for logs: a password (or a token in the user
// part) becomes "xxxxx".
func (n NATS) RedactedURLs() []string {
	out := make([]string, len(n.URLs))
	for i, s := range n.URLs {
		out[i] = redactURL(s)
	}
	return out
}

func redactURL(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
		u.User = url.User("xxxxx") // nats://TOKEN@host
		return u.String()
	}
	// Without a scheme ("user:pass@host:4222") url.Parse fails: keep the
	// host only.
	return "xxxxx@" + s[at+1:]
}

// Store is where message bodies go.
type Store struct {
	Type StoreType
	Dir  string // fs store root, absolute
	S3   S3
}

// S3 is an S3-compatible object store.
type S3 struct {
	Endpoint     string // host or host:port
	Bucket       string
	Region       string
	AccessKey    string
	SecretKey    string
	SessionToken string
	TLS          bool
	PathStyle    bool
	CreateBucket bool
	PartSize     int64 // bytes, >= 5 MiB
}

// WorkerSettings is the filter pool of this process.
type WorkerSettings struct {
	Slots int // concurrent filter runs; 0 = none in this process (edge only)
	// ReplayPools are the replay pools served (replay --pool), each on
	// ReplaySlots filter runs of its own.
	ReplayPools []string
	ReplaySlots int
}

// Error is a configuration error: main prints it and exits with ExitCode.
type Error struct {
	Source  string // the file, environment variable (SLUICE_X) or flag (--x) at fault; "" for none
	Setting string // proxsmtpd option name or sluice key; "" for command-line errors
	Msg     string // proxsmtpd's text for proxsmtpd options, "key: problem" for sluice's
	Code    int    // exit status; 0 means 2
	Usage   bool   // print Usage after the message

	// Warnings gathered before the error (e.g. "configuration file not
	// found"), for main to print first, as proxsmtpd does.
	Warnings []string
}

func (e *Error) Error() string {
	if e.Source == "" {
		return e.Msg
	}
	return e.Source + ": " + e.Msg
}

// ExitCode is the exit status for an error from Load, as proxsmtpd's:
// 0 for nil and ErrHelp, 2 for configuration and usage errors, 1 for the
// rest (a non-numeric -d level, an unreadable file).
func ExitCode(err error) int {
	var e *Error
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &e):
		if e.Code == 0 {
			return 2
		}
		return e.Code
	}
	return 1
}

// LogLevel maps -d to proxsmtpd's syslog levels: 0 errors, 1 warnings,
// 2 notices, 3 info (the per-message lines), 4 debug. Without -d the
// level is info, as proxsmtpd logs to syslog without debug.
func (c *Config) LogLevel() slog.Level {
	switch {
	case c.Debug < 0 || c.Debug == 3:
		return slog.LevelInfo
	case c.Debug == 0:
		return slog.LevelError
	case c.Debug == 1:
		return slog.LevelWarn
	case c.Debug == 2:
		return LevelNotice
	}
	return slog.LevelDebug
}

// LevelNotice is syslog's notice, between slog's info and warn.
const LevelNotice = slog.Level(2)

// Load parses args (without the program name), the environment (in
// os.Environ form) and the configuration file, and returns the validated
// configuration or an *Error (or ErrHelp).
func Load(role Role, args []string, environ []string) (*Config, error) {
	env := envMap(environ)
	fs, cf := newFlagSet(role)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, ErrHelp) {
			return nil, ErrHelp
		}
		return nil, &Error{Msg: err.Error(), Usage: true}
	}
	if fs.NArg() > 0 {
		return nil, &Error{Msg: "unexpected argument: " + fs.Arg(0), Usage: true}
	}

	c := &Config{Role: role, Debug: -1}
	switch {
	case cf.config.Changed:
		c.ConfigFile = cf.config.Value.String()
	case env["SLUICE_CONFIG"] != "":
		c.ConfigFile = env["SLUICE_CONFIG"]
	case role == Edge:
		c.ConfigFile = DefaultEdgeConfig
	}
	if v, _ := parseBool(cf.version.s); v {
		c.ShowVersion = true
		return c, nil
	}
	if cf.debug.Changed {
		level, err := parseDebug(cf.debug.Value.String())
		if err != nil {
			return nil, err
		}
		c.Debug = level
	}

	l := newLoader(role, env, c.ConfigFile)
	if err := l.readFile(); err != nil {
		err.Warnings = l.warnings
		return nil, err
	}
	l.readEnv()
	fs.VisitAll(func(f *pflag.Flag) {
		if key, ok := l.flagKeys[f.Name]; ok {
			l.flags[key] = f
			_ = l.v.BindFlagValue(key, viperFlag{f})
		}
	})
	l.build(c)
	if l.err != nil {
		l.err.Warnings = l.warnings
		return nil, l.err
	}
	if c.PidFile != "" && cf.pidFile.Changed {
		l.warn("ignoring pid file specified on the command line.")
	} else if c.PidFile == "" {
		c.PidFile = cf.pidFile.Value.String()
	}
	c.Warnings = l.warnings
	return c, nil
}

// parseDebug reads -d as proxsmtpd does: strtol, so "" is 0 and a
// negative level counts as 0; above 4 is exit 2, not a number exit 1.
func parseDebug(s string) (int, error) {
	if strings.Trim(s, cSpace) == "" {
		return 0, nil
	}
	n, ok := parseCInt(s)
	if !ok {
		return 0, &Error{Setting: "-d", Msg: "invalid debug log level", Code: 1}
	}
	if n > 4 {
		return 0, &Error{Setting: "-d", Msg: "invalid debug log level (must be between 1 and 4)"}
	}
	return int(max(n, 0)), nil
}

// envMap indexes os.Environ-style entries; the first of a repeated name
// wins, as for os.Getenv.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if _, seen := m[k]; !seen {
			m[k] = v
		}
	}
	return m
}

// build reads every setting into c, in table order; the first failure
// is kept in l.err.
func (l *loader) build(c *Config) {
	// proxsmtpd.conf options.
	c.FilterCommand = l.text("filtercommand")
	c.FilterTimeout = l.seconds("filtertimeout", false)
	switch strings.ToLower(strings.Trim(l.text("filtertype"), cSpace)) {
	case "pipe":
		c.FilterType = FilterTypePipe
	case "file":
		c.FilterType = FilterTypeFile
	case "reject":
		c.FilterType = FilterTypeReject
	default:
		l.fail("filtertype", "invalid value for FilterType (must specify 'pipe' or 'file' or 'reject')")
	}
	c.FilterReject = l.text("filterreject")
	c.Header = l.text("header")
	c.KeepAlives = l.seconds("keepalives", true)
	if l.role == Edge {
		c.Listen = l.address("listen", 10025)
		if c.Listen.PortOnly() {
			c.Listen.Host = "0.0.0.0" // proxsmtpd binds all addresses
		}
	}
	if n, ok := parseCInt(l.text("maxconnections")); ok && n > 1 && n < 10240 {
		c.MaxConnections = int(n)
	} else {
		// proxsmtpd's text, although it accepts 2..10239.
		l.fail("maxconnections", "invalid setting: MaxConnections (must be between 1 and 10240)")
	}
	if l.role == Edge && l.present("outaddress") {
		c.OutAddress = l.address("outaddress", 25)
	}
	if l.present("skip") {
		if strings.EqualFold(strings.Trim(l.text("skip"), cSpace), "authenticated") {
			c.SkipAuthenticated = true
		} else {
			l.fail("skip", "invalid value for Skip (must specify 'authenticated')")
		}
	}
	c.TempDirectory = strings.Trim(l.text("tempdirectory"), cSpace)
	if c.TempDirectory == "" {
		l.fail("tempdirectory", "invalid setting: TempDirectory")
	}
	c.TimeOut = l.seconds("timeout", false)
	c.TransparentProxy = l.transparent()
	c.User = strings.Trim(l.text("user"), cSpace)
	if b, ok := parseBool(l.text("xclient")); ok {
		c.XClient = b
	} else {
		l.fail("xclient", "invalid value for XClient")
	}
	c.PidFile = strings.Trim(l.text("pidfile"), cSpace)
	l.checkProxsmtpd(c)
	l.buildSluice(c)
}

// transparent reads TransparentProxy: client, full, or a boolean (on is
// client), as proxsmtpd does.
func (l *loader) transparent() Transparent {
	tp := strings.ToLower(strings.Trim(l.text("transparentproxy"), cSpace))
	switch b, isBool := parseBool(tp); {
	case tp == "client" || tp == "full":
		return Transparent(tp)
	case isBool && b:
		return TransparentClient
	case isBool:
		return TransparentOff
	}
	l.fail("transparentproxy", "invalid value for TransparentProxy")
	return ""
}

// checkProxsmtpd refuses what proxsmtpd's options ask for that the edge
// cannot do, with proxsmtpd's words.
func (l *loader) checkProxsmtpd(c *Config) {
	if c.User != "" {
		if _, err := privs.Lookup(c.User); err != nil {
			l.fail("user", "couldn't look up user: "+c.User)
		}
	}
	if l.role != Edge {
		return
	}
	switch {
	case c.TransparentProxy == TransparentOff && !l.present("outaddress"):
		l.fail("outaddress", "no OutAddress specified.")
	case c.TransparentProxy != TransparentOff && l.present("outaddress"):
		l.warn("the OutAddress option will be ignored when TransparentProxy is enabled")
	case c.OutAddress.Network != "" && c.OutAddress == c.Listen:
		l.warn(fmt.Sprintf("OutAddress %s is the Listen address %s: mail would loop", c.OutAddress, c.Listen))
	}
}

// buildSluice reads sluice's own settings: those the table describes
// whole, then, section by section, those that depend on others.
func (l *loader) buildSluice(c *Config) {
	l.readPlain(c)
	l.buildHost(c)
	l.buildLimits(c)
	l.buildFilter(c)
	l.buildTLS(c)
	l.buildUpstream(c)
	l.buildNATS(c)
	l.buildJobTimeout(c)
	l.buildStore(c)
	l.buildWorker(c)
	l.checkSystem(c)
}

// buildHost reads the names the edge goes by and where it keeps state.
func (l *loader) buildHost(c *Config) {
	if c.Hostname = l.text("hostname"); c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || checkHostname(h) != nil {
			h = "localhost"
		}
		c.Hostname = h
	} else if err := checkHostname(c.Hostname); err != nil {
		l.failf("hostname", "%v", err)
	}
	c.DataDir = l.text("data_dir")
	if c.DataDir == "" {
		file, _ := filepath.Abs(c.ConfigFile)
		var warning string
		c.DataDir, warning = defaultDataDir(dataDirContext{system: systemDataDir, instance: instanceOf(file),
			env: l.env, tmp: os.TempDir(), uid: os.Getuid()})
		if warning != "" {
			l.warn(warning)
		}
	}
	c.DataDir = l.absPath("data_dir", c.DataDir)
}

// buildLimits reads the per-client limit, half of MaxConnections unless
// set.
func (l *loader) buildLimits(c *Config) {
	if l.explicit("max_connections_per_client") {
		c.Limits.PerClient = l.integer("max_connections_per_client", 0, 10239)
	} else {
		c.Limits.PerClient = (c.MaxConnections + 1) / 2
	}
}

// buildFilter reads the filter's output limit, max_message_size unless
// set.
func (l *loader) buildFilter(c *Config) {
	if l.explicit("filter.max_output_size") {
		c.Filter.MaxOutputSize = l.size("filter.max_output_size")
	} else {
		c.Filter.MaxOutputSize = c.MaxMessageSize
	}
}

// buildTLS checks that the TLS settings make one whole, and reads the
// implicit-TLS listener.
func (l *loader) buildTLS(c *Config) {
	t := &c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		l.failf("tls.cert_file", "tls.cert_file and tls.key_file go together")
	}
	if t.Required && !t.Enabled() {
		l.failf("tls.required", "needs tls.cert_file and tls.key_file")
	}
	if l.role != Edge || strings.TrimSpace(l.text("tls.implicit_listen")) == "" {
		return
	}
	if !t.Enabled() {
		l.failf("tls.implicit_listen", "needs tls.cert_file and tls.key_file")
		return
	}
	t.ImplicitListen = l.address("tls.implicit_listen", 465)
	if t.ImplicitListen == c.Listen {
		l.failf("tls.implicit_listen", "is the Listen address %s", c.Listen)
	}
}

// buildUpstream checks the upstream settings against each other and
// against OutAddress and TransparentProxy.
func (l *loader) buildUpstream(c *Config) {
	u := &c.Upstream
	if (u.CertFile == "") != (u.KeyFile == "") {
		l.failf("upstream.tls_cert_file", "upstream.tls_cert_file and upstream.tls_key_file go together")
	}
	if u.TLS == UpstreamTLSNone && (u.CAFile != "" || u.ServerName != "" || u.CertFile != "") {
		l.warn("upstream.tls is none: the other upstream.tls_* settings are ignored")
	}
	if l.role == Edge && c.TransparentProxy != TransparentOff && len(c.ProxyProtocol.Trusted) > 0 {
		l.failf("proxy_protocol.trusted", "cannot be used with TransparentProxy: a load balancer's connection is not the client's, and has no original destination of its own")
	}
	if l.role != Edge || u.TLS != UpstreamTLSRequired || u.ServerName != "" {
		return
	}
	if c.TransparentProxy != TransparentOff {
		l.failf("upstream.tls_server_name", "required with upstream.tls: required and TransparentProxy: the original destinations have no host name to verify")
	} else if c.OutAddress.Network == "unix" || c.OutAddress.PortOnly() {
		l.failf("upstream.tls_server_name", "required with upstream.tls: required when OutAddress has no host name to verify (%s)", c.OutAddress)
	}
}

// buildNATS reads the NATS settings that depend on others: the embedded
// server's port, the redelivery delay, and authentication.
func (l *loader) buildNATS(c *Config) {
	n := &c.NATS
	if n.Listen = strings.TrimSpace(l.text("nats.listen")); n.Listen != "" {
		if err := checkHostPort(n.Listen); err != nil {
			l.failf("nats.listen", "%v", err)
		}
		if !n.Embedded() {
			l.warn("nats.listen is ignored: nats.url names an external server")
		}
	}
	if n.Domain != "" && n.Embedded() {
		l.warn("nats.domain is ignored: the embedded server is the job stream's own")
	}
	if subjectsOverlap(n.Subject, n.VerdictPrefix) {
		l.failf("nats.verdict_prefix", "must not overlap nats.subject (%s)", n.Subject)
	}
	// ack_wait is how soon a dead worker's jobs run elsewhere: a running
	// job is kept by heartbeats every ack_wait/3, so it need not cover
	// FilterTimeout.
	if l.explicit("nats.ack_wait") {
		n.AckWait = l.duration("nats.ack_wait")
		if n.AckWait < minAckWait {
			l.failf("nats.ack_wait", "must be at least %s (heartbeats go every third of it)", minAckWait)
		}
	} else {
		n.AckWait = DefaultAckWait
	}
	if n.Password != "" && n.User == "" {
		l.failf("nats.password", "set without nats.user")
	}
	// Whoever reaches the embedded server's port reads every job and can
	// answer verdicts: open it beyond this host only behind the
	// authorization the server takes (nats.user with nats.password, or
	// nats.token).
	if l.role == Edge && n.Embedded() && n.Listen != "" && l.err == nil &&
		!(n.User != "" && n.Password != "" || n.Token != "") && !loopbackHostPort(n.Listen) {
		l.failf("nats.listen", "%s is reachable from other hosts but the embedded server has no authentication: "+
			"anyone who reaches it reads every job and can answer verdicts; set nats.user and nats.password, "+
			"or nats.token, or listen on a loopback address (127.0.0.1:PORT, [::1]:PORT)", n.Listen)
	}
	if (n.TLSCert == "") != (n.TLSKey == "") {
		l.failf("nats.tls_cert", "nats.tls_cert and nats.tls_key go together")
	}
}

// buildJobTimeout reads job_timeout and checks the budget: FilterTimeout
// < job_timeout < 10m, and nats.ack_wait < job_timeout (a warning).
func (l *loader) buildJobTimeout(c *Config) {
	n := &c.NATS
	if l.explicit("job_timeout") {
		c.JobTimeout = l.duration("job_timeout")
		switch {
		case c.JobTimeout >= senderWait:
			l.failf("job_timeout", "must be less than 10m, the time a sender waits after the final dot")
		case c.JobTimeout <= c.FilterTimeout:
			l.failf("job_timeout", "must be greater than FilterTimeout (%s)", c.FilterTimeout)
		}
	} else {
		// Room for a filter run, a redelivery and a second run (a
		// worker that died), and never less than before ack_wait was
		// shortened: 2 x FilterTimeout + 60s.
		c.JobTimeout = min(max(c.FilterTimeout+n.AckWait+30*time.Second, 2*c.FilterTimeout+60*time.Second), maxJobTimeout)
		if c.JobTimeout <= c.FilterTimeout {
			l.fail("filtertimeout", fmt.Sprintf("invalid setting: FilterTimeout (must be less than job_timeout, %s, as a sender waits 10m after the final dot)", c.JobTimeout))
		}
	}
	if l.err == nil && n.AckWait >= c.JobTimeout {
		l.warn(fmt.Sprintf("nats.ack_wait (%s) is not less than job_timeout (%s): a job whose worker died is not redelivered before the sender gets its answer", n.AckWait, c.JobTimeout))
	}
	if l.err == nil && n.MaxAge <= c.JobTimeout {
		l.failf("nats.max_age", "must be greater than job_timeout (%s)", c.JobTimeout)
	}
	// The job's deadline bounds the publish anyway: only a value set
	// beyond it is a mistake worth stopping for.
	if l.err == nil && l.explicit("nats.publish_timeout") && n.PublishTimeout >= c.JobTimeout {
		l.failf("nats.publish_timeout", "must be less than job_timeout (%s)", c.JobTimeout)
	}
}

// buildStore reads the store's type, directory, endpoint, region and
// credentials, which have derived defaults.
func (l *loader) buildStore(c *Config) {
	s := &c.Store
	s.S3.Endpoint = strings.TrimSpace(l.text("store.s3.endpoint"))
	switch t := strings.ToLower(strings.TrimSpace(l.text("store.type"))); t {
	case "":
		s.Type = StoreFS
		if s.S3.Endpoint != "" {
			s.Type = StoreS3
		}
	case "fs", "s3":
		s.Type = StoreType(t)
	default:
		l.failf("store.type", "must be fs or s3, not %q", l.text("store.type"))
	}
	if s.Dir = l.text("store.dir"); s.Dir == "" {
		s.Dir = filepath.Join(c.DataDir, "messages")
	}
	s.Dir = l.absPath("store.dir", s.Dir)
	if s.Type == StoreS3 {
		if s.S3.Endpoint == "" {
			// Blame store.type: that is where the fix usually goes.
			l.fail("store.type", "store.s3.endpoint: required when store.type is s3")
		} else if err := checkEndpoint(s.S3.Endpoint); err != nil {
			l.failf("store.s3.endpoint", "%v", err)
		}
	}
	s.S3.Region = strings.TrimSpace(l.textOr("store.s3.region", "AWS_REGION", "AWS_DEFAULT_REGION"))
	if s.S3.Region == "" {
		s.S3.Region = "us-east-1"
	} else if strings.ContainsAny(s.S3.Region, cSpace+"/") {
		l.failf("store.s3.region", "invalid region %q", s.S3.Region)
	}
	s.S3.AccessKey = l.textOr("store.s3.access_key", "AWS_ACCESS_KEY_ID")
	s.S3.SecretKey = l.textOr("store.s3.secret_key", "AWS_SECRET_ACCESS_KEY")
	s.S3.SessionToken = l.textOr("store.s3.session_token", "AWS_SESSION_TOKEN")
	if s.Type == StoreS3 && (s.S3.AccessKey == "") != (s.S3.SecretKey == "") {
		l.failf("store.s3.access_key", "store.s3.access_key and store.s3.secret_key go together")
	}
	if l.err == nil && (s.S3.PartSize < 5<<20 || s.S3.PartSize > 5<<30) {
		l.failf("store.s3.part_size", "must be between 5MiB and 5GiB")
	}
}

// buildWorker reads worker.slots, whose default depends on the role.
func (l *loader) buildWorker(c *Config) {
	w := &c.Worker
	minSlots := 0
	if l.role == Worker {
		minSlots = 1
	}
	switch {
	case l.explicit("worker.slots"):
		w.Slots = l.integer("worker.slots", minSlots, 1<<16)
	case l.role == Edge && c.NATS.Embedded():
		// One filter per connection, as proxsmtpd runs them: a session
		// waits for one message's filter at a time, so no message ever
		// queues behind another's filter, and a filter that waits on its
		// daemon (spamc, clamdscan) does not hold others up.
		w.Slots = c.MaxConnections
	case l.role == Worker:
		// The same rule for the pool, unknown here: proxsmtpd's
		// MaxConnections default. CPU-bound filters want fewer
		// (docs/operations.md, Worker slots).
		w.Slots = DefaultWorkerSlots
	}
}

// DefaultWorkerSlots is a worker's worker.slots unless set: proxsmtpd's
// default MaxConnections, one filter for each connection an edge serves.
const DefaultWorkerSlots = 64

// checkSystem checks the whole system, so that no message meets a
// misconfiguration first.
func (l *loader) checkSystem(c *Config) {
	n, w, s := &c.NATS, &c.Worker, &c.Store
	if l.role == Worker && n.Embedded() {
		l.failf("nats.url", "required for the worker (the embedded NATS server lives in the edge)")
	}
	if l.role == Edge && n.Embedded() && n.Listen == "" && w.Slots == 0 {
		l.failf("worker.slots", "must be at least 1 when the embedded NATS server opens no port (nats.listen): no worker could take a job")
	}
	if l.role == Edge && !n.Embedded() && s.Type == StoreFS {
		l.warn("store.type is fs with an external NATS server: workers elsewhere must see the same store.dir")
	}
	runsFilters := (w.Slots > 0 || l.role == Replay) && c.FilterCommand != "" && c.FilterType != FilterTypeReject
	// Only a warning: the directory may appear later (a tmpfs mounted
	// after start-up), and until then each filter run fails with a 4xx,
	// which senders retry (compat scenario j13).
	if l.err == nil && runsFilters {
		if err := checkWritableDir(c.TempDirectory); err != nil {
			l.warn("TempDirectory: " + err.Error() + "; filter runs will fail with 451 until it is usable")
		}
		// Only a warning too: the program may be installed later.
		var path []string // filters inherit the process's PATH (unless filter.env_allow leaves it out)
		if p, ok := l.env["PATH"]; ok {
			path = []string{"PATH=" + p}
		}
		if prog, err := filter.FindProgram(c.FilterCommand, path); err != nil {
			l.warn(fmt.Sprintf("FilterCommand: %s: %v; every filter run will fail with 451 until it is there", prog, err))
		}
	}
}

// prefixes reads a list of networks (CIDR, or a single address); "none"
// is the empty list, which an empty value cannot say (it means the
// default).
func (l *loader) prefixes(key string) []netip.Prefix {
	list := splitList(l.text(key))
	if len(list) == 1 && strings.EqualFold(list[0], "none") {
		return nil
	}
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := parsePrefix(s)
		if err != nil {
			l.failf(key, "%v", err)
			return nil
		}
		out = append(out, p)
	}
	return out
}

// checkWritableDir is for TempDirectory: a missing directory should show
// at start-up, not only in the first filter run.
func checkWritableDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	if !usableDir(dir) {
		return fmt.Errorf("%s: not writable", dir)
	}
	return nil
}

// absPath makes a directory setting absolute, so a later chdir cannot move it.
func (l *loader) absPath(key, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		l.failf(key, "%v", err)
		return p
	}
	return a
}

// file is a path setting that must name an existing file when set.
func (l *loader) file(key string) string {
	p := strings.TrimSpace(l.text(key))
	if p == "" {
		return ""
	}
	if fi, err := os.Stat(p); err != nil {
		l.failf(key, "%s: %s", p, reason(err))
	} else if fi.IsDir() {
		l.failf(key, "%s is a directory", p)
	}
	return p
}

// seconds reads a proxsmtpd option counted in whole seconds.
func (l *loader) seconds(key string, zeroOK bool) time.Duration {
	n, ok := parseCInt(l.text(key))
	if !ok || n < 0 || (n == 0 && !zeroOK) {
		s, _ := lookup(key)
		l.fail(key, "invalid setting: "+s.name)
		return 0
	}
	return time.Duration(n) * time.Second
}

// address reads Listen or OutAddress.
func (l *loader) address(key string, defaultPort int) Address {
	raw := strings.Trim(l.text(key), cSpace)
	a, err := ParseAddress(raw, defaultPort)
	if err != nil {
		s, _ := lookup(key)
		l.fail(key, "invalid "+s.name+" socket name or ip: "+raw)
	}
	return a
}

func (l *loader) duration(key string) time.Duration {
	d, err := parseDuration(l.text(key))
	if err != nil {
		l.failf(key, "%v", err)
	}
	return d
}

func (l *loader) size(key string) int64 {
	n, err := parseSize(l.text(key))
	if err != nil {
		l.failf(key, "%v", err)
	}
	return n
}

func (l *loader) boolean(key string) bool {
	b, ok := parseBool(l.text(key))
	if !ok {
		l.failf(key, "must be a boolean (on/off, yes/no, true/false, 1/0), not %q", l.text(key))
	}
	return b
}

func (l *loader) integer(key string, lo, hi int) int {
	n, err := strconv.Atoi(strings.TrimSpace(l.text(key)))
	switch {
	case err != nil:
		l.failf(key, "must be an integer, not %q", l.text(key))
	case hi < 1<<16 && (n < lo || n > hi):
		l.failf(key, "must be between %d and %d", lo, hi)
	case n < lo:
		l.failf(key, "must be at least %d", lo)
	case n > hi:
		l.failf(key, "must be at most %d", hi)
	}
	return n
}

// textOr is a sluice setting that falls back to other environment
// variables (AWS_*) when empty.
func (l *loader) textOr(key string, envNames ...string) string {
	if s := l.text(key); s != "" {
		return s
	}
	for _, name := range envNames {
		if s := l.env[name]; s != "" {
			return s
		}
	}
	return ""
}

// Report prints an error from Load the way proxsmtpd does (warnings
// first, then the error, then the usage text when it is a usage error)
// and returns the exit status.
func Report(w io.Writer, prog string, role Role, err error) int {
	if errors.Is(err, ErrHelp) {
		fmt.Fprint(w, Usage(role))
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		for _, warn := range e.Warnings {
			fmt.Fprintf(w, "%s: %s\n", prog, warn)
		}
	}
	fmt.Fprintf(w, "%s: %v\n", prog, err)
	if e != nil && e.Usage {
		fmt.Fprint(w, Usage(role))
	}
	return ExitCode(err)
}
