package config

import (
	"math"
	"net/netip"
	"strings"
	"time"
)

// kind is how a setting's text is read; it also picks the flag's look in
// the usage text.
type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindDuration
	kindSize
	kindList
)

// setting is one key of the key space shared by every source.
//
// A setting whose value stands on its own names its Config field here
// (field), with its checks, and readPlain reads it: adding one touches
// this table, the field and docs/configuration.md, nothing else. A
// setting whose default or validity depends on others has no field; its
// section's builder in config.go reads it.
type setting struct {
	key       string // viper key: lower case, dotted for nested YAML maps
	name      string // how messages name it: proxsmtpd's spelling, or key
	proxsmtpd bool   // a proxsmtpd.conf option (no long flag; proxsmtpd error texts)
	kind      kind
	def       string // static default; "" = none, or derived in Load
	help      string // one line for the usage text

	field    func(*Config) any  // the address of its field, for readPlain
	lo, hi   int                // kindInt: the range
	positive bool               // kindDuration: more than zero
	words    []string           // kindString: the values, "alias=value" for another spelling
	check    func(string) error // kindString: the value; kindList: each element
	file     bool               // kindString: an existing file, when set
	raw      bool               // kindString: kept as written, spaces included
	networks bool               // kindList: CIDR prefixes or addresses; "none" is empty
}

// settings is every key, in the order Load validates them (so the first
// error reported is stable). Read only.
var settings = []setting{
	// proxsmtpd.conf options, as proxsmtpd 1.10 reads them.
	{key: "filtercommand", name: "FilterCommand", proxsmtpd: true},
	{key: "filtertimeout", name: "FilterTimeout", proxsmtpd: true, kind: kindInt, def: "30"},
	{key: "filtertype", name: "FilterType", proxsmtpd: true, def: "pipe"},
	{key: "filterreject", name: "FilterReject", proxsmtpd: true, def: "530 Email Rejected"},
	{key: "header", name: "Header", proxsmtpd: true},
	{key: "keepalives", name: "KeepAlives", proxsmtpd: true, kind: kindInt, def: "0"},
	{key: "listen", name: "Listen", proxsmtpd: true, def: "0.0.0.0:10025"},
	{key: "maxconnections", name: "MaxConnections", proxsmtpd: true, kind: kindInt, def: "64"},
	{key: "outaddress", name: "OutAddress", proxsmtpd: true},
	{key: "skip", name: "Skip", proxsmtpd: true},
	{key: "tempdirectory", name: "TempDirectory", proxsmtpd: true, def: "/tmp"},
	{key: "timeout", name: "TimeOut", proxsmtpd: true, kind: kindInt, def: "180"},
	{key: "transparentproxy", name: "TransparentProxy", proxsmtpd: true, def: "off"},
	{key: "user", name: "User", proxsmtpd: true},
	{key: "xclient", name: "XClient", proxsmtpd: true, kind: kindBool, def: "off"},
	{key: "pidfile", name: "PidFile", proxsmtpd: true},

	// sluice's own settings.
	{key: "hostname", help: "name in the greeting and EHLO reply (default: the system's host name)"},
	{key: "data_dir", help: "directory for local state (default: $STATE_DIRECTORY, else /var/lib/sluice[/INSTANCE], else $XDG_STATE_HOME/sluice or ~/.local/state/sluice, else a temporary directory, with a warning)"},
	{key: "max_message_size", kind: kindSize, def: "64MiB", help: "largest accepted message, bytes or with K/M/G suffix; 0 = unlimited", field: fieldOf(func(c *Config) *int64 { return &c.MaxMessageSize })},
	{key: "bare_line_endings", def: "normalise", help: "bare CR or LF inside DATA: normalise or reject", words: []string{"normalise", "normalize=normalise", "reject"}, field: fieldOf(func(c *Config) *LineEndings { return &c.BareLineEndings })},
	{key: "retention", kind: kindDuration, def: "168h", help: "how long stored messages are kept; 0 = delete after the transaction", field: fieldOf(func(c *Config) *time.Duration { return &c.Retention })},
	{key: "drain_timeout", kind: kindDuration, def: "10s", help: "on SIGTERM, time open sessions get before a 421", field: fieldOf(func(c *Config) *time.Duration { return &c.DrainTimeout })},
	{key: "job_timeout", kind: kindDuration, help: "how long the edge waits for a verdict (default: FilterTimeout + nats.ack_wait + 30s, at most 9m)"},
	{key: "log_format", def: "text", help: "text or json", words: []string{"text", "json"}, field: fieldOf(func(c *Config) *LogFormat { return &c.LogFormat })},
	{key: "http_listen", help: "host:port for health, readiness and metrics; empty = off", check: optional(checkHostPort), field: fieldOf(func(c *Config) *string { return &c.HTTPListen })},
	{key: "recipient_limit", kind: kindInt, def: "1000", help: "recipients accepted per message; more get 452 4.5.3", lo: 1, hi: 100000, field: fieldOf(func(c *Config) *int { return &c.Limits.RecipientLimit })},
	{key: "hard_error_limit", kind: kindInt, def: "20", help: "errors and unknown commands before a session is closed with 421", lo: 1, hi: 1000, field: fieldOf(func(c *Config) *int { return &c.Limits.HardErrorLimit })},
	{key: "reject_early_talkers", kind: kindBool, def: "true", help: "refuse clients that send before the greeting", field: fieldOf(func(c *Config) *bool { return &c.Limits.RejectEarlyTalkers })},
	{key: "nul_bytes", def: "reject", help: "NUL bytes inside DATA: reject or keep", words: []string{"reject", "keep"}, field: fieldOf(func(c *Config) *NULBytes { return &c.Limits.NULBytes })},
	{key: "command_deadline", kind: kindDuration, def: "5m", help: "total time to receive one command line", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.Limits.CommandDeadline })},
	{key: "data_deadline", kind: kindDuration, def: "10m", help: "total time to receive a message, extended by data_min_rate", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.Limits.DataDeadline })},
	{key: "data_min_rate", kind: kindSize, def: "1KiB", help: "bytes per second that extend data_deadline; 0 = a fixed deadline", field: fieldOf(func(c *Config) *int64 { return &c.Limits.DataMinRate })},
	{key: "max_connections_per_client", kind: kindInt, help: "sessions one client address may hold (default: half of MaxConnections)"},
	{key: "client_limit_exceptions", kind: kindList, def: "127.0.0.0/8,::1/128", help: "client networks exempt from max_connections_per_client; none = no exceptions", networks: true, field: fieldOf(func(c *Config) *[]netip.Prefix { return &c.Limits.PerClientExempt })},
	{key: "xforward.trusted", kind: kindList, def: "127.0.0.0/8,::1/128", help: "client networks whose XFORWARD is believed; none = nobody", networks: true, field: fieldOf(func(c *Config) *[]netip.Prefix { return &c.XForward.Trusted })},
	{key: "proxy_protocol.trusted", kind: kindList, help: "peers (load balancers) whose connections start with a PROXY protocol header, v1 or v2; empty = none", networks: true, field: fieldOf(func(c *Config) *[]netip.Prefix { return &c.ProxyProtocol.Trusted })},
	{key: "tls.cert_file", kind: kindString, help: "PEM certificate chain for STARTTLS and tls.implicit_listen; empty = no TLS", file: true, field: fieldOf(func(c *Config) *string { return &c.TLS.CertFile })},
	{key: "tls.key_file", kind: kindString, help: "PEM private key of tls.cert_file", file: true, field: fieldOf(func(c *Config) *string { return &c.TLS.KeyFile })},
	{key: "tls.required", kind: kindBool, def: "false", help: "refuse MAIL before STARTTLS (530 5.7.0)", field: fieldOf(func(c *Config) *bool { return &c.TLS.Required })},
	{key: "tls.implicit_listen", help: "address of a listener where TLS starts at once (RFC 8314, port 465 style); empty = none"},
	{key: "upstream.tls", kind: kindString, def: "none", help: "STARTTLS to the upstream: none, opportunistic (when offered, unverified) or required (verified)", words: []string{"none", "opportunistic", "required"}, field: fieldOf(func(c *Config) *UpstreamTLS { return &c.Upstream.TLS })},
	{key: "upstream.tls_ca_file", kind: kindString, help: "PEM CA certificates that verify the upstream (default: the system's)", file: true, field: fieldOf(func(c *Config) *string { return &c.Upstream.CAFile })},
	{key: "upstream.tls_server_name", kind: kindString, help: "name the upstream's certificate must carry (default: OutAddress's host)", field: fieldOf(func(c *Config) *string { return &c.Upstream.ServerName })},
	{key: "upstream.tls_cert_file", kind: kindString, help: "PEM client certificate for mutual TLS with the upstream", file: true, field: fieldOf(func(c *Config) *string { return &c.Upstream.CertFile })},
	{key: "upstream.tls_key_file", kind: kindString, help: "PEM key of upstream.tls_cert_file", file: true, field: fieldOf(func(c *Config) *string { return &c.Upstream.KeyFile })},
	{key: "nats.url", kind: kindList, help: "NATS server URLs, comma-separated; empty = embedded server", check: checkNATSURL, field: fieldOf(func(c *Config) *[]string { return &c.NATS.URLs })},
	{key: "nats.listen", help: "host:port where the embedded server accepts clients; empty = in-process only"},
	{key: "nats.stream", def: "SLUICE_JOBS", help: "JetStream stream holding filter jobs", check: checkName, field: fieldOf(func(c *Config) *string { return &c.NATS.Stream })},
	{key: "nats.subject", def: "sluice.jobs", help: "subject filter jobs are published on", check: checkSubject, field: fieldOf(func(c *Config) *string { return &c.NATS.Subject })},
	{key: "nats.consumer", def: "sluice-workers", help: "durable consumer shared by all workers", check: checkName, field: fieldOf(func(c *Config) *string { return &c.NATS.Consumer })},
	{key: "nats.verdict_prefix", def: "sluice.verdicts", help: "subject prefix for verdict replies", check: checkSubject, field: fieldOf(func(c *Config) *string { return &c.NATS.VerdictPrefix })},
	{key: "nats.replicas", kind: kindInt, def: "1", help: "stream replicas, 1..5", lo: 1, hi: 5, field: fieldOf(func(c *Config) *int { return &c.NATS.Replicas })},
	{key: "nats.max_age", kind: kindDuration, def: "1h", help: "oldest job kept in the stream", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.NATS.MaxAge })},
	{key: "nats.ack_wait", kind: kindDuration, help: "redelivery delay of an unacknowledged job (default: FilterTimeout + 30s)"},
	{key: "nats.max_deliver", kind: kindInt, def: "5", help: "deliveries of one job before it is given up", lo: 1, hi: math.MaxInt32, field: fieldOf(func(c *Config) *int { return &c.NATS.MaxDeliver })},
	{key: "nats.domain", help: "JetStream domain of the job stream: the central cluster's domain, for edges and workers whose NATS server is a leaf node of it; empty = the connected server's own JetStream", check: optional(checkName), field: fieldOf(func(c *Config) *string { return &c.NATS.Domain })},
	{key: "nats.publish_timeout", kind: kindDuration, def: "15s", help: "how long an edge retries publishing a job before the sender gets 451 (rides out a JetStream leader election)", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.NATS.PublishTimeout })},
	{key: "nats.user", help: "NATS user name", raw: true, field: fieldOf(func(c *Config) *string { return &c.NATS.User })},
	{key: "nats.password", help: "NATS password", raw: true, field: fieldOf(func(c *Config) *string { return &c.NATS.Password })},
	{key: "nats.token", help: "NATS token", raw: true, field: fieldOf(func(c *Config) *string { return &c.NATS.Token })},
	{key: "nats.nkey_file", help: "NATS NKey seed file", file: true, field: fieldOf(func(c *Config) *string { return &c.NATS.NKeyFile })},
	{key: "nats.creds_file", help: "NATS credentials (JWT) file", file: true, field: fieldOf(func(c *Config) *string { return &c.NATS.CredsFile })},
	{key: "nats.tls_ca", help: "CA certificate file for NATS TLS", file: true, field: fieldOf(func(c *Config) *string { return &c.NATS.TLSCA })},
	{key: "nats.tls_cert", help: "client certificate file for NATS TLS", file: true, field: fieldOf(func(c *Config) *string { return &c.NATS.TLSCert })},
	{key: "nats.tls_key", help: "client key file for NATS TLS", file: true, field: fieldOf(func(c *Config) *string { return &c.NATS.TLSKey })},
	{key: "store.type", help: "fs or s3 (default: s3 when store.s3.endpoint is set, else fs)"},
	{key: "store.dir", help: "directory of the fs store (default: <data_dir>/messages)"},
	{key: "store.s3.endpoint", help: "S3 endpoint, host or host:port"},
	{key: "store.s3.bucket", def: "sluice", help: "S3 bucket", check: checkBucket, field: fieldOf(func(c *Config) *string { return &c.Store.S3.Bucket })},
	{key: "store.s3.region", help: "S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)"},
	{key: "store.s3.access_key", help: "S3 access key (default: $AWS_ACCESS_KEY_ID)"},
	{key: "store.s3.secret_key", help: "S3 secret key (default: $AWS_SECRET_ACCESS_KEY)"},
	{key: "store.s3.session_token", help: "S3 session token (default: $AWS_SESSION_TOKEN)"},
	{key: "store.s3.tls", kind: kindBool, def: "true", help: "use HTTPS to the S3 endpoint", field: fieldOf(func(c *Config) *bool { return &c.Store.S3.TLS })},
	{key: "store.s3.path_style", kind: kindBool, def: "true", help: "path-style bucket URLs", field: fieldOf(func(c *Config) *bool { return &c.Store.S3.PathStyle })},
	{key: "store.s3.create_bucket", kind: kindBool, def: "false", help: "create the bucket at start-up if missing", field: fieldOf(func(c *Config) *bool { return &c.Store.S3.CreateBucket })},
	{key: "store.s3.part_size", kind: kindSize, def: "16MiB", help: "multipart upload part size, at least 5MiB", field: fieldOf(func(c *Config) *int64 { return &c.Store.S3.PartSize })},
	{key: "filter.env_allow", kind: kindList, help: "the only environment variables a filter inherits (NAME or PREFIX*); empty = all but sluice's own and credentials", check: checkEnvPattern, field: fieldOf(func(c *Config) *[]string { return &c.Filter.EnvAllow })},
	{key: "filter.milters", kind: kindList, help: "milters each message passes after FilterCommand, in order: inet:host:port or unix:/path (Postfix's smtpd_milters)", check: checkMilter, field: fieldOf(func(c *Config) *[]string { return &c.Filter.Milters })},
	{key: "filter.milter_default_action", kind: kindString, def: "tempfail", help: "when a milter cannot be used: tempfail, accept (skip it) or reject (Postfix's milter_default_action)", words: []string{"tempfail", "accept", "reject"}, field: fieldOf(func(c *Config) *string { return &c.Filter.MilterDefaultAction })},
	{key: "filter.milter_connect_timeout", kind: kindDuration, def: "30s", help: "connecting to a milter (Postfix's milter_connect_timeout)", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.Filter.MilterConnectTimeout })},
	{key: "filter.milter_command_timeout", kind: kindDuration, def: "30s", help: "each answer of a milter (Postfix's milter_command_timeout)", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.Filter.MilterCommandTimeout })},
	{key: "filter.milter_content_timeout", kind: kindDuration, def: "300s", help: "one message through one milter, connect to end of message (Postfix's milter_content_timeout); never past job_timeout", positive: true, field: fieldOf(func(c *Config) *time.Duration { return &c.Filter.MilterContentTimeout })},
	{key: "filter.milter_protocol", kind: kindInt, def: "6", help: "milter protocol version offered, 2..6 (Postfix's milter_protocol)", lo: 2, hi: 6, field: fieldOf(func(c *Config) *int { return &c.Filter.MilterProtocol })},
	{key: "filter.max_output_size", kind: kindSize, help: "largest filtered message delivered (default: max_message_size); 0 = unlimited"},
	{key: "worker.slots", kind: kindInt, help: "concurrent filter runs in this process (default: see docs/configuration.md)"},
	{key: "worker.replay_pools", kind: kindList, help: "replay pools this process serves (replay --pool NAME); empty = none. A replay job names the filter to run: whoever may publish on sluice.replay.NAME.jobs.> runs commands as this process", check: checkName, field: fieldOf(func(c *Config) *[]string { return &c.Worker.ReplayPools })},
	{key: "worker.replay_slots", kind: kindInt, def: "4", help: "concurrent replay filter runs in this process, besides worker.slots", lo: 1, hi: 1024, field: fieldOf(func(c *Config) *int { return &c.Worker.ReplaySlots })},
}

// groups are the nested maps of the YAML form; "nats:" with every entry
// commented out is null, not an unknown setting.
var groups = map[string]bool{"nats": true, "store": true, "store.s3": true, "worker": true, "xforward": true, "filter": true, "tls": true, "proxy_protocol": true, "upstream": true}

// lookup returns the setting for a lower-case key.
func lookup(key string) (setting, bool) {
	for _, s := range settings {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// EnvName is the environment variable for a key: "nats.url" -> "SLUICE_NATS_URL".
func EnvName(key string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// FlagName is the long flag for a sluice key: "store.s3.access_key" ->
// "store-s3-access-key". proxsmtpd options have no long flags.
func FlagName(key string) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(key)
}

// Keys lists every key of the key space, in a stable order (for docs and tests).
func Keys() []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.key
	}
	return out
}

func (s setting) display() string {
	if s.name != "" {
		return s.name
	}
	return s.key
}
