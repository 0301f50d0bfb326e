package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeConf writes a configuration file named name into a fresh directory.
func writeConf(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, role Role, args, environ []string) *Config {
	t.Helper()
	c, err := Load(role, args, environ)
	if err != nil {
		t.Fatalf("Load(%v, %q): %v", role, args, err)
	}
	return c
}

func loadErr(t *testing.T, role Role, args, environ []string) *Error {
	t.Helper()
	c, err := Load(role, args, environ)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Load(%v, %q) = %+v, %v; want *Error", role, args, c, err)
	}
	if strings.Contains(e.Error(), "\n") {
		t.Errorf("error is not one line: %q", e.Error())
	}
	return e
}

// workerSlots is worker.slots' default for the edge with the embedded
// server and for a worker: one filter per connection, MaxConnections'
// default (issue 10).
const workerSlots = 64

func TestDefaults(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	c := mustLoad(t, Edge, []string{"-f", p}, []string{"HOME=/home/u"})

	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"ConfigFile", c.ConfigFile, p},
		{"Debug", c.Debug, -1},
		{"LogLevel", c.LogLevel().String(), "INFO"},
		{"PidFile", c.PidFile, ""},
		{"Warnings", len(c.Warnings), 0},
		{"FilterCommand", c.FilterCommand, ""},
		{"FilterTimeout", c.FilterTimeout, 30 * time.Second},
		{"FilterType", c.FilterType, FilterTypePipe},
		{"FilterReject", c.FilterReject, "530 Email Rejected"},
		{"Header", c.Header, ""},
		{"KeepAlives", c.KeepAlives, time.Duration(0)},
		{"Listen", c.Listen, Address{Network: "tcp", Host: "0.0.0.0", Port: 10025}},
		{"MaxConnections", c.MaxConnections, 64},
		{"OutAddress", c.OutAddress, Address{Network: "tcp", Port: 2525}},
		{"SkipAuthenticated", c.SkipAuthenticated, false},
		{"TempDirectory", c.TempDirectory, "/tmp"},
		{"TimeOut", c.TimeOut, 180 * time.Second},
		{"TransparentProxy", c.TransparentProxy, TransparentOff},
		{"User", c.User, ""},
		{"XClient", c.XClient, false},
		{"Hostname", c.Hostname, host},
		{"MaxMessageSize", c.MaxMessageSize, int64(64 << 20)},
		{"BareLineEndings", c.BareLineEndings, LineEndingsNormalise},
		{"Retention", c.Retention, 168 * time.Hour},
		{"DrainTimeout", c.DrainTimeout, 10 * time.Second},
		{"JobTimeout", c.JobTimeout, 2 * time.Minute},
		{"LogFormat", c.LogFormat, LogText},
		{"HTTPListen", c.HTTPListen, ""},
		{"NATS.URLs", len(c.NATS.URLs), 0},
		{"NATS.Embedded", c.NATS.Embedded(), true},
		{"NATS.Listen", c.NATS.Listen, ""},
		{"NATS.Stream", c.NATS.Stream, "SLUICE_JOBS"},
		{"NATS.Subject", c.NATS.Subject, "sluice.jobs"},
		{"NATS.Consumer", c.NATS.Consumer, "sluice-workers"},
		{"NATS.VerdictPrefix", c.NATS.VerdictPrefix, "sluice.verdicts"},
		{"NATS.Replicas", c.NATS.Replicas, 1},
		{"NATS.MaxAge", c.NATS.MaxAge, time.Hour},
		{"NATS.AckWait", c.NATS.AckWait, 8 * time.Second},
		{"NATS.MaxDeliver", c.NATS.MaxDeliver, 5},
		{"NATS.User", c.NATS.User + c.NATS.Password + c.NATS.Token + c.NATS.NKeyFile + c.NATS.CredsFile + c.NATS.TLSCA + c.NATS.TLSCert + c.NATS.TLSKey, ""},
		{"Store.Type", c.Store.Type, StoreFS},
		{"Store.Dir", c.Store.Dir, filepath.Join(c.DataDir, "messages")},
		{"S3.Endpoint", c.Store.S3.Endpoint, ""},
		{"S3.Bucket", c.Store.S3.Bucket, "sluice"},
		{"S3.Region", c.Store.S3.Region, "us-east-1"},
		{"S3.Keys", c.Store.S3.AccessKey + c.Store.S3.SecretKey + c.Store.S3.SessionToken, ""},
		{"S3.TLS", c.Store.S3.TLS, true},
		{"S3.PathStyle", c.Store.S3.PathStyle, true},
		{"S3.CreateBucket", c.Store.S3.CreateBucket, false},
		{"S3.PartSize", c.Store.S3.PartSize, int64(16 << 20)},
		{"Worker.Slots", c.Worker.Slots, workerSlots},
		{"Limits.RecipientLimit", c.Limits.RecipientLimit, 1000},
		{"Limits.HardErrorLimit", c.Limits.HardErrorLimit, 20},
		{"Limits.RejectEarlyTalkers", c.Limits.RejectEarlyTalkers, true},
		{"Limits.NULBytes", c.Limits.NULBytes, NULReject},
		{"Limits.CommandDeadline", c.Limits.CommandDeadline, 5 * time.Minute},
		{"Limits.DataDeadline", c.Limits.DataDeadline, 10 * time.Minute},
		{"Limits.DataMinRate", c.Limits.DataMinRate, int64(1024)},
		{"Limits.PerClient", c.Limits.PerClient, 32},
		{"Limits.PerClientExempt", fmt.Sprint(c.Limits.PerClientExempt), "[127.0.0.0/8 ::1/128]"},
		{"XForward.Trusted", fmt.Sprint(c.XForward.Trusted), "[127.0.0.0/8 ::1/128]"},
		{"Filter.EnvAllow", len(c.Filter.EnvAllow), 0},
		{"Filter.MaxOutputSize", c.Filter.MaxOutputSize, int64(64 << 20)},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if want, _ := defaultDataDir(dataDirContext{system: systemDataDir, env: map[string]string{"HOME": "/home/u"}, tmp: os.TempDir(), uid: os.Getuid()}); c.DataDir != want {
		t.Errorf("DataDir = %q, want %q", c.DataDir, want)
	}
}

// Debian's example file as shipped: it sets User (_proxsmtp), which loads
// where that user exists (the proxsmtp package made it) and is proxsmtpd's
// fatal error where it does not.
func TestDebianSampleLoad(t *testing.T) {
	c, err := Load(Edge, []string{"-f", "testdata/debian-proxsmtpd.conf"}, nil)
	if _, lerr := user.Lookup("_proxsmtp"); lerr == nil {
		if err != nil || c.User != "_proxsmtp" {
			t.Errorf("with _proxsmtp present: %v, User %q", err, c.User)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) || e.Error() != "testdata/debian-proxsmtpd.conf: couldn't look up user: _proxsmtp" || ExitCode(e) != 2 {
		t.Errorf("without _proxsmtp: %v", err)
	}
}

// The same sample with every option uncommented, User excepted.
func TestSampleAllOptions(t *testing.T) {
	c := mustLoad(t, Edge, []string{"-f", "testdata/proxsmtpd-all-options.conf"}, nil)
	if want := (Address{Network: "tcp", Port: 10026}); c.OutAddress != want || !c.OutAddress.PortOnly() {
		t.Errorf("OutAddress = %+v", c.OutAddress)
	}
	if c.FilterCommand != "tee `mktemp -t sample-filter.XXXXXX`" {
		t.Errorf("FilterCommand = %q", c.FilterCommand)
	}
	if c.FilterTimeout != 10*time.Second || c.FilterType != FilterTypePipe || c.MaxConnections != 64 ||
		c.TimeOut != 180*time.Second || c.KeepAlives != 0 || c.XClient || c.TempDirectory != "/tmp" ||
		c.TransparentProxy != TransparentOff || c.User != "" {
		t.Errorf("values: %+v", c)
	}
	if c.Header != "X-Filtered: By ProxSMTP" {
		t.Errorf("Header = %q", c.Header)
	}
	if want := (Address{Network: "tcp", Host: "0.0.0.0", Port: 10025}); c.Listen != want {
		t.Errorf("Listen = %+v", c.Listen)
	}
	// Derived from FilterTimeout 10: job_timeout 2 x 10 + 60 s; ack_wait
	// does not depend on it.
	if c.NATS.AckWait != 8*time.Second || c.JobTimeout != 80*time.Second {
		t.Errorf("AckWait %v JobTimeout %v", c.NATS.AckWait, c.JobTimeout)
	}
}

func TestQuirksFile(t *testing.T) {
	c := mustLoad(t, Edge, []string{"-f", "testdata/quirks.conf"}, nil)
	if want := `/usr/bin/filter --re '^a\.b$' --home "${HOME}" --fmt %d:%i # not a comment`; c.FilterCommand != want {
		t.Errorf("FilterCommand = %q, want %q", c.FilterCommand, want)
	}
	if want := `X-Scanned: by %i at %d\r\n\tfolded: yes`; c.Header != want {
		t.Errorf("Header = %q, want %q", c.Header, want)
	}
	if c.FilterReject != "550 5.7.1 Rejected: policy" {
		t.Errorf("FilterReject = %q", c.FilterReject)
	}
	if c.OutAddress.String() != "127.0.0.1:2525" || c.Listen.String() != "127.0.0.1:10026" {
		t.Errorf("OutAddress %v Listen %v", c.OutAddress, c.Listen)
	}
	if !slices.Equal(c.NATS.URLs, []string{"nats://127.0.0.1:4222", "nats://127.0.0.1:4223"}) {
		t.Errorf("NATS.URLs = %q", c.NATS.URLs)
	}
	if c.Store.Type != StoreS3 || c.Store.S3.Endpoint != "127.0.0.1:9000" || c.Worker.Slots != 3 {
		t.Errorf("Store %+v Worker %+v", c.Store, c.Worker)
	}
}

func TestProxsmtpdFatal(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"", "no OutAddress specified."},
		{"# nothing\n", "no OutAddress specified."},
		{"OutAddress:\n", "invalid OutAddress socket name or ip: "},
		{"OutAddress: 1.2.3.4.5:25\n", "invalid OutAddress socket name or ip: 1.2.3.4.5:25"},
		{"OutAddress: 127.0.0.1:0\n", "invalid OutAddress socket name or ip: 127.0.0.1:0"},
		{"OutAddress: 70000\n", "invalid OutAddress socket name or ip: 70000"},
		{"OutAddress: 127.0.0.1:abc\n", "invalid OutAddress socket name or ip: 127.0.0.1:abc"},
		{"OutAddress: 25\nListen: bogus host\n", "invalid Listen socket name or ip: bogus host"},
		{"OutAddress: 25\nListen:\n", "invalid Listen socket name or ip: "},
		{"OutAddress: 25\nTimeOut: 10abc\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nTimeOut: 0\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nTimeOut: -1\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nTimeOut:\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nTimeOut: 0x10\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nTimeOut: 99999999999\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nFilterTimeout: 0\n", "invalid setting: FilterTimeout"},
		{"OutAddress: 25\nFilterTimeout: 1.5\n", "invalid setting: FilterTimeout"},
		{"OutAddress: 25\nKeepAlives: -1\n", "invalid setting: KeepAlives"},
		{"OutAddress: 25\nKeepAlives: x\n", "invalid setting: KeepAlives"},
		{"OutAddress: 25\nMaxConnections: 1\n", "invalid setting: MaxConnections (must be between 1 and 10240)"},
		{"OutAddress: 25\nMaxConnections: 10240\n", "invalid setting: MaxConnections (must be between 1 and 10240)"},
		{"OutAddress: 25\nMaxConnections: many\n", "invalid setting: MaxConnections (must be between 1 and 10240)"},
		{"OutAddress: 25\nFilterType: pipes\n", "invalid value for FilterType (must specify 'pipe' or 'file' or 'reject')"},
		{"OutAddress: 25\nFilterType:\n", "invalid value for FilterType (must specify 'pipe' or 'file' or 'reject')"},
		{"OutAddress: 25\nXClient: maybe\n", "invalid value for XClient"},
		{"OutAddress: 25\nXClient: y\n", "invalid value for XClient"},
		{"OutAddress: 25\nXClient:\n", "invalid value for XClient"},
		{"OutAddress: 25\nSkip: all\n", "invalid value for Skip (must specify 'authenticated')"},
		{"OutAddress: 25\nSkip:\n", "invalid value for Skip (must specify 'authenticated')"},
		{"OutAddress: 25\nTransparentProxy: bogus\n", "invalid value for TransparentProxy"},
		{"TransparentProxy: client\nproxy_protocol.trusted: 10.0.0.0/8\n", "proxy_protocol.trusted: cannot be used with TransparentProxy: a load balancer's connection is not the client's, and has no original destination of its own"},
		{"TransparentProxy: full\nupstream.tls: required\n", "upstream.tls_server_name: required with upstream.tls: required and TransparentProxy: the original destinations have no host name to verify"},
		{"OutAddress: 25\nUser: no-such-user-sluice\n", "couldn't look up user: no-such-user-sluice"},
		{"OutAddress: 25\nDebugFiles: 1\n", "invalid config line: DebugFiles"},
		{"OutAddress: 25\nNonsense line\n", "invalid config line: Nonsense line"},
		{"OutAddress: 25\nBogus : x\n", "invalid config line: Bogus"},
		{"OutAddress: 25\nTempDirectory:\n", "invalid setting: TempDirectory"},
	}
	for _, tt := range tests {
		p := writeConf(t, "proxsmtpd.conf", tt.conf)
		e := loadErr(t, Edge, []string{"-f", p}, nil)
		if want := p + ": " + tt.want; e.Error() != want {
			t.Errorf("%q:\n got %q\nwant %q", tt.conf, e.Error(), want)
		}
		if ExitCode(e) != 2 {
			t.Errorf("%q: exit code %d", tt.conf, ExitCode(e))
		}
	}
}

func TestProxsmtpdValues(t *testing.T) {
	tests := []struct {
		conf  string
		check func(*Config) bool
	}{
		{"TimeOut: +5", func(c *Config) bool { return c.TimeOut == 5*time.Second }},
		{"TimeOut: 007", func(c *Config) bool { return c.TimeOut == 7*time.Second }},
		{"FilterTimeout: 1", func(c *Config) bool { return c.FilterTimeout == time.Second }},
		{"KeepAlives: 0", func(c *Config) bool { return c.KeepAlives == 0 }},
		{"KeepAlives: 15", func(c *Config) bool { return c.KeepAlives == 15*time.Second }},
		{"MaxConnections: 2", func(c *Config) bool { return c.MaxConnections == 2 }},
		{"MaxConnections: 10239", func(c *Config) bool { return c.MaxConnections == 10239 }},
		{"FilterType: FILE", func(c *Config) bool { return c.FilterType == FilterTypeFile }},
		{"FilterType: Reject", func(c *Config) bool { return c.FilterType == FilterTypeReject }},
		{"XClient: ON", func(c *Config) bool { return c.XClient }},
		{"XClient: t", func(c *Config) bool { return c.XClient }},
		{"XClient: Yes", func(c *Config) bool { return c.XClient }},
		{"XClient: 1", func(c *Config) bool { return c.XClient }},
		{"XClient: F", func(c *Config) bool { return !c.XClient }},
		{"XClient: no", func(c *Config) bool { return !c.XClient }},
		{"Skip: Authenticated", func(c *Config) bool { return c.SkipAuthenticated }},
		{"TransparentProxy: OFF", func(c *Config) bool { return c.TransparentProxy == TransparentOff }},
		{"TransparentProxy: 0", func(c *Config) bool { return c.TransparentProxy == TransparentOff }},
		{"TransparentProxy: false", func(c *Config) bool { return c.TransparentProxy == TransparentOff }},
		// proxsmtpd's warning: the destination is the client's, not OutAddress.
		{"TransparentProxy: client", func(c *Config) bool {
			return c.TransparentProxy == TransparentClient &&
				slices.Equal(c.Warnings, []string{"the OutAddress option will be ignored when TransparentProxy is enabled"})
		}},
		{"TransparentProxy: FULL", func(c *Config) bool { return c.TransparentProxy == TransparentFull }},
		{"TransparentProxy: on\nupstream.tls: required\nupstream.tls_server_name: mx.example.org", func(c *Config) bool {
			return c.TransparentProxy == TransparentClient && c.Upstream.ServerName == "mx.example.org"
		}},
		{"User:", func(c *Config) bool { return c.User == "" }},
		{"Listen: 24517", func(c *Config) bool { return c.Listen == Address{Network: "tcp", Host: "0.0.0.0", Port: 24517} }},
		{"Listen: localhost", func(c *Config) bool { return c.Listen.String() == "localhost:10025" }},
		{"Listen: /run/sluice.sock", func(c *Config) bool { return c.Listen == Address{Network: "unix", Path: "/run/sluice.sock"} }},
		{"Header:", func(c *Config) bool { return c.Header == "" }},
		{"FilterReject: 550 5.7.1 No", func(c *Config) bool { return c.FilterReject == "550 5.7.1 No" }},
		{"PidFile: /run/x.pid", func(c *Config) bool { return c.PidFile == "/run/x.pid" }},
		// A missing TempDirectory is a warning: each filter run then fails with 451.
		{"FilterCommand: cat\nTempDirectory: /nonexistent-sluice-dir", func(c *Config) bool {
			return c.TempDirectory == "/nonexistent-sluice-dir" && slices.Equal(c.Warnings,
				[]string{"TempDirectory: stat /nonexistent-sluice-dir: no such file or directory; filter runs will fail with 451 until it is usable"})
		}},
		{"TempDirectory: /nonexistent-sluice-dir", func(c *Config) bool { return len(c.Warnings) == 0 }},
		// A short job_timeout cuts the default publish window short.
		{"FilterTimeout: 2\njob_timeout: 3s", func(c *Config) bool {
			return c.JobTimeout == 3*time.Second && c.NATS.PublishTimeout == 15*time.Second
		}},
		{"FilterTimeout: 300", func(c *Config) bool {
			return c.NATS.AckWait == 8*time.Second && c.JobTimeout == 9*time.Minute
		}},
	}
	for _, tt := range tests {
		p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n"+tt.conf+"\n")
		c, err := Load(Edge, []string{"-f", p}, nil)
		if err != nil {
			t.Errorf("%q: %v", tt.conf, err)
			continue
		}
		if !tt.check(c) {
			t.Errorf("%q: wrong value in %+v", tt.conf, c)
		}
	}
}

func TestFlags(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	for _, tt := range []struct {
		args  []string
		debug int
	}{
		{[]string{"-d", "4", "-f", p}, 4},
		{[]string{"-d4", "-f", p}, 4},
		{[]string{"-f" + p, "-d0"}, 0},
		{[]string{"--debug=2", "--config", p}, 2},
		{[]string{"-d", "-1", "-f", p}, 0},
		{[]string{"-f", p}, -1},
	} {
		c := mustLoad(t, Edge, tt.args, nil)
		if c.Debug != tt.debug || c.ConfigFile != p {
			t.Errorf("%q: Debug %d ConfigFile %q", tt.args, c.Debug, c.ConfigFile)
		}
	}
	if c := mustLoad(t, Edge, []string{"-d", "4", "-f", p}, nil); c.LogLevel().String() != "DEBUG" {
		t.Errorf("-d 4: level %v", c.LogLevel())
	}
	if c := mustLoad(t, Edge, []string{"-d", "0", "-f", p}, nil); c.LogLevel().String() != "ERROR" {
		t.Errorf("-d 0: level %v", c.LogLevel())
	}

	e := loadErr(t, Edge, []string{"-d", "5", "-f", p}, nil)
	if e.Error() != "invalid debug log level (must be between 1 and 4)" || ExitCode(e) != 2 {
		t.Errorf("-d 5: %q exit %d", e.Error(), ExitCode(e))
	}
	e = loadErr(t, Edge, []string{"-d", "4x", "-f", p}, nil)
	if e.Error() != "invalid debug log level" || ExitCode(e) != 1 {
		t.Errorf("-d 4x: %q exit %d", e.Error(), ExitCode(e))
	}

	// -v: version and configuration path only; the file is not even read.
	c := mustLoad(t, Edge, []string{"-v"}, nil)
	if !c.ShowVersion || c.ConfigFile != DefaultEdgeConfig {
		t.Errorf("-v: %+v", c)
	}
	c = mustLoad(t, Edge, []string{"-f", "/nonexistent.conf", "-v"}, nil)
	if !c.ShowVersion || c.ConfigFile != "/nonexistent.conf" {
		t.Errorf("-f -v: %+v", c)
	}
	c = mustLoad(t, Worker, []string{"-v"}, nil)
	if !c.ShowVersion || c.ConfigFile != "" {
		t.Errorf("worker -v: %+v", c)
	}

	for _, args := range [][]string{{"-x"}, {"--nope"}, {"-f", p, "stray"}, {"-f"}, {"-d"}} {
		e := loadErr(t, Edge, args, nil)
		if !e.Usage || ExitCode(e) != 2 {
			t.Errorf("%q: %+v exit %d", args, e, ExitCode(e))
		}
	}
	if e := loadErr(t, Edge, []string{"-f", p, "stray"}, nil); e.Error() != "unexpected argument: stray" {
		t.Errorf("stray: %q", e.Error())
	}
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		_, err := Load(Edge, args, nil)
		if !errors.Is(err, ErrHelp) || ExitCode(err) != 0 {
			t.Errorf("%q: %v", args, err)
		}
	}
	for _, role := range []Role{Edge, Worker} {
		u := Usage(role)
		for _, want := range []string{"usage: " + role.String() + " [-d debuglevel] [-f configfile] [-p pidfile]",
			"-f, --config", "-d, --debug", "-p, --pid-file", "-v, --version", "--nats-url", "--store-s3-create-bucket", "--worker-slots"} {
			if !strings.Contains(u, want) {
				t.Errorf("Usage(%v) lacks %q:\n%s", role, want, u)
			}
		}
	}
}

func TestPidFile(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	c := mustLoad(t, Edge, []string{"-f", p, "-p", "/run/flag.pid"}, nil)
	if c.PidFile != "/run/flag.pid" || len(c.Warnings) != 0 {
		t.Errorf("-p: %q %q", c.PidFile, c.Warnings)
	}
	p = writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nPidFile: /run/option.pid\n")
	c = mustLoad(t, Edge, []string{"-f", p, "-p", "/run/flag.pid"}, nil)
	if c.PidFile != "/run/option.pid" || !slices.Contains(c.Warnings, "ignoring pid file specified on the command line.") {
		t.Errorf("PidFile and -p: %q %q", c.PidFile, c.Warnings)
	}
	c = mustLoad(t, Edge, []string{"-f", p}, nil)
	if c.PidFile != "/run/option.pid" || len(c.Warnings) != 0 {
		t.Errorf("PidFile: %q %q", c.PidFile, c.Warnings)
	}
}

func TestMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "proxsmtpd.conf")
	e := loadErr(t, Edge, []string{"-f", missing}, nil)
	if e.Error() != missing+": no OutAddress specified." || ExitCode(e) != 2 {
		t.Errorf("got %q", e.Error())
	}
	if !slices.Equal(e.Warnings, []string{"configuration file not found: " + missing}) {
		t.Errorf("warnings %q", e.Warnings)
	}
	// The environment can supply everything: the missing file stays a warning.
	c := mustLoad(t, Edge, []string{"-f", missing}, []string{"SLUICE_OUTADDRESS=2525"})
	if !slices.Equal(c.Warnings, []string{"configuration file not found: " + missing}) || c.OutAddress.Port != 2525 {
		t.Errorf("%q %+v", c.Warnings, c.OutAddress)
	}
	if _, err := Load(Edge, []string{"-f", t.TempDir()}, nil); ExitCode(err) != 2 || !strings.Contains(err.Error(), "couldn't read configuration file") {
		t.Errorf("directory as file: %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	plain := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	withFile := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nnats.stream: FILE\nTimeOut: 100\n")
	env := []string{"SLUICE_NATS_STREAM=ENV", "SLUICE_TIMEOUT=200"}
	tests := []struct {
		name    string
		args    []string
		env     []string
		stream  string
		timeout time.Duration
	}{
		{"default", []string{"-f", plain}, nil, "SLUICE_JOBS", 180 * time.Second},
		{"file", []string{"-f", withFile}, nil, "FILE", 100 * time.Second},
		{"env", []string{"-f", withFile}, env, "ENV", 200 * time.Second},
		{"flag", []string{"-f", withFile, "--nats-stream", "FLAG"}, env, "FLAG", 200 * time.Second},
		{"flag=", []string{"-f", withFile, "--nats-stream=FLAG"}, nil, "FLAG", 100 * time.Second},
		{"empty env is unset", []string{"-f", withFile}, []string{"SLUICE_NATS_STREAM=", "SLUICE_TIMEOUT="}, "FILE", 100 * time.Second},
		{"empty file value is the default", []string{"-f", writeConf(t, "p.conf", "OutAddress: 25\nnats.stream:\n")}, nil, "SLUICE_JOBS", 180 * time.Second},
	}
	for _, tt := range tests {
		c := mustLoad(t, Edge, tt.args, tt.env)
		if c.NATS.Stream != tt.stream || c.TimeOut != tt.timeout {
			t.Errorf("%s: stream %q timeout %v, want %q %v", tt.name, c.NATS.Stream, c.TimeOut, tt.stream, tt.timeout)
		}
	}

	// -f beats $SLUICE_CONFIG, which beats the default file.
	other := writeConf(t, "other.conf", "OutAddress: 2626\n")
	c := mustLoad(t, Edge, nil, []string{"SLUICE_CONFIG=" + other})
	if c.ConfigFile != other || c.OutAddress.Port != 2626 {
		t.Errorf("SLUICE_CONFIG: %q %v", c.ConfigFile, c.OutAddress)
	}
	c = mustLoad(t, Edge, []string{"-f", plain}, []string{"SLUICE_CONFIG=" + other})
	if c.ConfigFile != plain || c.OutAddress.Port != 2525 {
		t.Errorf("-f and SLUICE_CONFIG: %q %v", c.ConfigFile, c.OutAddress)
	}
}

// Errors name where the bad value came from.
func TestErrorSource(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nTimeOut: 100\nnats.replicas: 2\n")
	tests := []struct {
		args, env []string
		want      string
		setting   string
	}{
		{[]string{"-f", p}, []string{"SLUICE_TIMEOUT=abc"}, "SLUICE_TIMEOUT: invalid setting: TimeOut", "TimeOut"},
		{[]string{"-f", p, "--nats-replicas", "9"}, nil, "--nats-replicas: nats.replicas: must be between 1 and 5", "nats.replicas"},
		{[]string{"-f", p}, []string{"SLUICE_NATS_REPLICAS=0"}, "SLUICE_NATS_REPLICAS: nats.replicas: must be between 1 and 5", "nats.replicas"},
		{[]string{"-f", writeConf(t, "x.conf", "OutAddress: 25\nnats.replicas: 6\n")}, nil, "", "nats.replicas"},
		{nil, []string{"SLUICE_OUTADDRESS=bogus host"}, "SLUICE_OUTADDRESS: invalid OutAddress", "OutAddress"},
	}
	for _, tt := range tests {
		e := loadErr(t, Edge, tt.args, tt.env)
		if tt.want != "" && !strings.HasPrefix(e.Error(), tt.want) {
			t.Errorf("got %q, want %q", e.Error(), tt.want)
		}
		if e.Setting != tt.setting {
			t.Errorf("%q: setting %q, want %q", e.Error(), e.Setting, tt.setting)
		}
	}
	e := loadErr(t, Edge, nil, []string{"SLUICE_OUTADDRESS=bogus host"})
	if e.Error() != "SLUICE_OUTADDRESS: invalid OutAddress socket name or ip: bogus host" {
		t.Errorf("got %q", e.Error())
	}
}

func TestSluiceErrors(t *testing.T) {
	dir := t.TempDir()
	certFile := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(certFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		env  string
		want string // prefix after "SLUICE_X: "
	}{
		{"SLUICE_HOSTNAME=bad host", "hostname: invalid host name"},
		{"SLUICE_MAX_MESSAGE_SIZE=64MB", "max_message_size: invalid size"},
		{"SLUICE_MAX_MESSAGE_SIZE=-1", "max_message_size: invalid size"},
		{"SLUICE_BARE_LINE_ENDINGS=keep", "bare_line_endings: must be normalise or reject"},
		{"SLUICE_RETENTION=-1h", "retention: must not be negative"},
		{"SLUICE_RETENTION=forever", "retention: invalid duration"},
		{"SLUICE_DRAIN_TIMEOUT=5 minutes", "drain_timeout: invalid duration"},
		{"SLUICE_LOG_FORMAT=xml", "log_format: must be text or json"},
		{"SLUICE_HTTP_LISTEN=9090", "http_listen: must be host:port"},
		{"SLUICE_HTTP_LISTEN=127.0.0.1:http", "http_listen: invalid port"},
		{"SLUICE_NATS_URL=http://127.0.0.1:4222", "nats.url: unsupported scheme"},
		{"SLUICE_NATS_URL=nats://127.0.0.1:0", "nats.url: invalid port"},
		{"SLUICE_NATS_LISTEN=4222", "nats.listen: must be host:port"},
		// No authentication: only loopback may reach the embedded server.
		{"SLUICE_NATS_LISTEN=:4222", "nats.listen: :4222 is reachable from other hosts but the embedded server has no authentication"},
		{"SLUICE_NATS_LISTEN=0.0.0.0:4222", "nats.listen: 0.0.0.0:4222 is reachable from other hosts"},
		{"SLUICE_NATS_LISTEN=[::]:4222", "nats.listen: [::]:4222 is reachable from other hosts"},
		{"SLUICE_NATS_LISTEN=192.0.2.7:4222", "nats.listen: 192.0.2.7:4222 is reachable from other hosts"},
		{"SLUICE_NATS_LISTEN=nats.example.org:4222", "nats.listen: nats.example.org:4222 is reachable from other hosts"},
		{"SLUICE_NATS_STREAM=a.b", "nats.stream: invalid name"},
		{"SLUICE_NATS_PUBLISH_TIMEOUT=5m", "nats.publish_timeout: must be less than job_timeout (2m0s)"},
		{"SLUICE_NATS_DOMAIN=core.a", "nats.domain: invalid name"},
		{"SLUICE_NATS_CONSUMER=a b", "nats.consumer: invalid name"},
		{"SLUICE_NATS_SUBJECT=sluice.*", "nats.subject: invalid subject"},
		{"SLUICE_NATS_SUBJECT=sluice..jobs", "nats.subject: invalid subject"},
		{"SLUICE_NATS_VERDICT_PREFIX=sluice.jobs.v", "nats.verdict_prefix: must not overlap nats.subject"},
		{"SLUICE_NATS_REPLICAS=6", "nats.replicas: must be between 1 and 5"},
		{"SLUICE_NATS_REPLICAS=two", "nats.replicas: must be an integer"},
		{"SLUICE_NATS_MAX_AGE=0", "nats.max_age: must be positive"},
		{"SLUICE_NATS_MAX_AGE=2m", "nats.max_age: must be greater than job_timeout (2m0s)"},
		{"SLUICE_NATS_ACK_WAIT=500ms", "nats.ack_wait: must be at least 1s (heartbeats go every third of it)"},
		{"SLUICE_NATS_MAX_DELIVER=0", "nats.max_deliver: must be at least 1"},
		{"SLUICE_NATS_PASSWORD=x", "nats.password: set without nats.user"},
		{"SLUICE_NATS_CREDS_FILE=/nonexistent/nats.creds", "nats.creds_file: /nonexistent/nats.creds: no such file or directory"},
		{"SLUICE_NATS_NKEY_FILE=" + dir, "nats.nkey_file: " + dir + " is a directory"},
		{"SLUICE_NATS_TLS_CERT=" + certFile, "nats.tls_cert: nats.tls_cert and nats.tls_key go together"},
		{"SLUICE_JOB_TIMEOUT=10m", "job_timeout: must be less than 10m, the time a sender waits after the final dot"},
		{"SLUICE_JOB_TIMEOUT=30s", "job_timeout: must be greater than FilterTimeout (30s)"},
		{"SLUICE_STORE_TYPE=gcs", "store.type: must be fs or s3"},
		{"SLUICE_STORE_TYPE=s3", "store.s3.endpoint: required when store.type is s3"},
		{"SLUICE_STORE_S3_ENDPOINT=http://127.0.0.1:9000", "store.s3.endpoint: must be host or host:port without scheme"},
		{"SLUICE_STORE_S3_ENDPOINT=127.0.0.1:0", "store.s3.endpoint: invalid port"},
		{"SLUICE_STORE_S3_BUCKET=My_Bucket", "store.s3.bucket: invalid bucket name"},
		{"SLUICE_STORE_S3_BUCKET=ab", "store.s3.bucket: invalid bucket name"},
		{"SLUICE_STORE_S3_TLS=maybe", "store.s3.tls: must be a boolean"},
		{"SLUICE_STORE_S3_PART_SIZE=1MiB", "store.s3.part_size: must be between 5MiB and 5GiB"},
		{"SLUICE_RECIPIENT_LIMIT=0", "recipient_limit: must be at least 1"},
		{"SLUICE_HARD_ERROR_LIMIT=x", "hard_error_limit: must be an integer"},
		{"SLUICE_REJECT_EARLY_TALKERS=maybe", "reject_early_talkers: must be a boolean"},
		{"SLUICE_NUL_BYTES=strip", "nul_bytes: must be reject or keep"},
		{"SLUICE_COMMAND_DEADLINE=0", "command_deadline: must be positive"},
		{"SLUICE_DATA_DEADLINE=0s", "data_deadline: must be positive"},
		{"SLUICE_DATA_MIN_RATE=fast", "data_min_rate: invalid size"},
		{"SLUICE_MAX_CONNECTIONS_PER_CLIENT=-1", "max_connections_per_client: must be between 0 and 10239"},
		{"SLUICE_CLIENT_LIMIT_EXCEPTIONS=10.0.0.0/33", `client_limit_exceptions: invalid network "10.0.0.0/33"`},
		{"SLUICE_XFORWARD_TRUSTED=localhost", `xforward.trusted: invalid network "localhost"`},
		{"SLUICE_FILTER_ENV_ALLOW=PATH,A-B", `filter.env_allow: invalid variable name "A-B"`},
		{"SLUICE_FILTER_MAX_OUTPUT_SIZE=big", "filter.max_output_size: invalid size"},
		{"SLUICE_WORKER_SLOTS=-1", "worker.slots: must be at least 0"},
		{"SLUICE_WORKER_SLOTS=100000", "worker.slots: must be at most 65536"},
		{"SLUICE_WORKER_SLOTS=0", "worker.slots: must be at least 1 when the embedded NATS server opens no port"},
	}
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	for _, tt := range tests {
		e := loadErr(t, Edge, []string{"-f", p}, []string{tt.env})
		name, _, _ := strings.Cut(tt.env, "=")
		if want := name + ": " + tt.want; !strings.HasPrefix(e.Error(), want) {
			t.Errorf("%s:\n got %q\nwant %q...", tt.env, e.Error(), want)
		}
		if ExitCode(e) != 2 {
			t.Errorf("%s: exit %d", tt.env, ExitCode(e))
		}
	}

	// A user without a password is no authentication: the name is no secret.
	e := loadErr(t, Edge, []string{"-f", p}, []string{"SLUICE_NATS_LISTEN=0.0.0.0:4222", "SLUICE_NATS_USER=sluice"})
	if want := "SLUICE_NATS_LISTEN: nats.listen: 0.0.0.0:4222 is reachable from other hosts"; !strings.HasPrefix(e.Error(), want) {
		t.Errorf("nats.listen with nats.user alone:\n got %q\nwant %q...", e.Error(), want)
	}

	// A FilterTimeout the default job_timeout cannot exceed.
	p = writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nFilterTimeout: 540\n")
	e = loadErr(t, Edge, []string{"-f", p}, nil)
	if want := p + ": invalid setting: FilterTimeout (must be less than job_timeout, 9m0s"; !strings.HasPrefix(e.Error(), want) {
		t.Errorf("got %q", e.Error())
	}
}

func TestSluiceValues(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	tests := []struct {
		env   []string
		check func(*Config) bool
	}{
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=0"}, func(c *Config) bool { return c.MaxMessageSize == 0 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=1048576"}, func(c *Config) bool { return c.MaxMessageSize == 1<<20 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=512k"}, func(c *Config) bool { return c.MaxMessageSize == 512<<10 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=10 MiB"}, func(c *Config) bool { return c.MaxMessageSize == 10<<20 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=1G"}, func(c *Config) bool { return c.MaxMessageSize == 1<<30 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=2GiB"}, func(c *Config) bool { return c.MaxMessageSize == 2<<30 }},
		{[]string{"SLUICE_BARE_LINE_ENDINGS=normalize"}, func(c *Config) bool { return c.BareLineEndings == LineEndingsNormalise }},
		{[]string{"SLUICE_BARE_LINE_ENDINGS=Reject"}, func(c *Config) bool { return c.BareLineEndings == LineEndingsReject }},
		{[]string{"SLUICE_RETENTION=0"}, func(c *Config) bool { return c.Retention == 0 }},
		{[]string{"SLUICE_RETENTION=720h"}, func(c *Config) bool { return c.Retention == 720*time.Hour }},
		{[]string{"SLUICE_DRAIN_TIMEOUT=90"}, func(c *Config) bool { return c.DrainTimeout == 90*time.Second }},
		{[]string{"SLUICE_LOG_FORMAT=JSON"}, func(c *Config) bool { return c.LogFormat == LogJSON }},
		{[]string{"SLUICE_HTTP_LISTEN=127.0.0.1:0"}, func(c *Config) bool { return c.HTTPListen == "127.0.0.1:0" }},
		{[]string{"SLUICE_HOSTNAME=mx1.example.org"}, func(c *Config) bool { return c.Hostname == "mx1.example.org" }},
		{[]string{"SLUICE_DATA_DIR=/srv/sluice"}, func(c *Config) bool {
			return c.DataDir == "/srv/sluice" && c.Store.Dir == "/srv/sluice/messages"
		}},
		{[]string{"SLUICE_STORE_DIR=rel/msgs"}, func(c *Config) bool {
			return filepath.IsAbs(c.Store.Dir) && strings.HasSuffix(c.Store.Dir, "/rel/msgs")
		}},
		{[]string{"SLUICE_NATS_LISTEN=127.0.0.1:4222", "SLUICE_WORKER_SLOTS=0"}, func(c *Config) bool {
			return c.NATS.Listen == "127.0.0.1:4222" && c.Worker.Slots == 0 && c.NATS.Embedded()
		}},
		{[]string{"SLUICE_NATS_LISTEN=[::1]:4222"}, func(c *Config) bool { return c.NATS.Listen == "[::1]:4222" }},
		{[]string{"SLUICE_NATS_LISTEN=localhost:4222"}, func(c *Config) bool { return c.NATS.Listen == "localhost:4222" }},
		{[]string{"SLUICE_NATS_LISTEN=0.0.0.0:4222", "SLUICE_NATS_USER=u", "SLUICE_NATS_PASSWORD=p"}, func(c *Config) bool {
			return c.NATS.Listen == "0.0.0.0:4222" && c.NATS.User == "u"
		}},
		{[]string{"SLUICE_NATS_LISTEN=:4222", "SLUICE_NATS_TOKEN=t"}, func(c *Config) bool { return c.NATS.Token == "t" }},
		{[]string{"SLUICE_NATS_URL=nats://127.0.0.1:4222,127.0.0.1:4223 , tls://h:4443"}, func(c *Config) bool {
			return slices.Equal(c.NATS.URLs, []string{"nats://127.0.0.1:4222", "127.0.0.1:4223", "tls://h:4443"}) && c.Worker.Slots == 0
		}},
		{[]string{"SLUICE_NATS_ACK_WAIT=45s"}, func(c *Config) bool {
			return c.NATS.AckWait == 45*time.Second && c.JobTimeout == 2*time.Minute
		}},
		{[]string{"SLUICE_NATS_ACK_WAIT=2m"}, func(c *Config) bool {
			return c.NATS.AckWait == 2*time.Minute && c.JobTimeout == 3*time.Minute
		}},
		// Below FilterTimeout is fine: heartbeats keep a running job.
		{[]string{"SLUICE_NATS_ACK_WAIT=5s"}, func(c *Config) bool {
			return c.NATS.AckWait == 5*time.Second && len(c.Warnings) == 0
		}},
		{[]string{"SLUICE_JOB_TIMEOUT=5m"}, func(c *Config) bool { return c.JobTimeout == 5*time.Minute }},
		{[]string{"SLUICE_NATS_ACK_WAIT=3m", "SLUICE_JOB_TIMEOUT=2m"}, func(c *Config) bool {
			return len(c.Warnings) == 1 && strings.HasPrefix(c.Warnings[0], "nats.ack_wait (3m0s) is not less than job_timeout (2m0s)")
		}},
		{[]string{"SLUICE_NATS_USER=u", "SLUICE_NATS_PASSWORD=p", "SLUICE_NATS_TOKEN=t"}, func(c *Config) bool {
			return c.NATS.User == "u" && c.NATS.Password == "p" && c.NATS.Token == "t"
		}},
		{[]string{"SLUICE_NATS_REPLICAS=3", "SLUICE_NATS_MAX_DELIVER=1", "SLUICE_NATS_MAX_AGE=24h"}, func(c *Config) bool {
			return c.NATS.Replicas == 3 && c.NATS.MaxDeliver == 1 && c.NATS.MaxAge == 24*time.Hour
		}},
		{[]string{"SLUICE_STORE_TYPE=FS", "SLUICE_STORE_S3_ENDPOINT=s3.example.org"}, func(c *Config) bool { return c.Store.Type == StoreFS }},
		{[]string{"SLUICE_STORE_S3_ENDPOINT=s3.example.org", "SLUICE_STORE_S3_TLS=off", "SLUICE_STORE_S3_PATH_STYLE=no",
			"SLUICE_STORE_S3_CREATE_BUCKET=yes", "SLUICE_STORE_S3_PART_SIZE=5MiB", "SLUICE_STORE_S3_BUCKET=mail.archive-1"}, func(c *Config) bool {
			s := c.Store.S3
			return c.Store.Type == StoreS3 && s.Endpoint == "s3.example.org" && !s.TLS && !s.PathStyle && s.CreateBucket &&
				s.PartSize == 5<<20 && s.Bucket == "mail.archive-1"
		}},
		{[]string{"SLUICE_UNKNOWN_THING=1"}, func(c *Config) bool {
			return slices.Equal(c.Warnings, []string{"ignoring unknown environment variable SLUICE_UNKNOWN_THING"})
		}},
		{[]string{"SLUICE_FILTERCOMMAND=tr a-z A-Z | sed \"s/${X}/\\\\1/\""}, func(c *Config) bool {
			return c.FilterCommand == `tr a-z A-Z | sed "s/${X}/\\1/"`
		}},
		{[]string{"SLUICE_XFORWARD_TRUSTED=none", "SLUICE_CLIENT_LIMIT_EXCEPTIONS=192.0.2.1, 2001:db8::/32,::ffff:10.1.2.3"}, func(c *Config) bool {
			return len(c.XForward.Trusted) == 0 && !c.XForward.TrustedXForward(netip.MustParseAddr("127.0.0.1")) &&
				fmt.Sprint(c.Limits.PerClientExempt) == "[192.0.2.1/32 2001:db8::/32 10.1.2.3/32]" &&
				c.Limits.Exempt(netip.MustParseAddr("::ffff:192.0.2.1")) && !c.Limits.Exempt(netip.MustParseAddr("192.0.2.2"))
		}},
		{[]string{"SLUICE_MAXCONNECTIONS=9"}, func(c *Config) bool { return c.Limits.PerClient == 5 }},
		{[]string{"SLUICE_MAX_CONNECTIONS_PER_CLIENT=0"}, func(c *Config) bool { return c.Limits.PerClient == 0 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=1M"}, func(c *Config) bool { return c.Filter.MaxOutputSize == 1<<20 }},
		{[]string{"SLUICE_MAX_MESSAGE_SIZE=1M", "SLUICE_FILTER_MAX_OUTPUT_SIZE=0"}, func(c *Config) bool { return c.Filter.MaxOutputSize == 0 }},
		{[]string{"SLUICE_FILTER_ENV_ALLOW=PATH, LC_*,SPAMD_HOST"}, func(c *Config) bool {
			return slices.Equal(c.Filter.EnvAllow, []string{"PATH", "LC_*", "SPAMD_HOST"})
		}},
		{[]string{"SLUICE_NUL_BYTES=Keep", "SLUICE_REJECT_EARLY_TALKERS=off", "SLUICE_DATA_MIN_RATE=0", "SLUICE_DATA_DEADLINE=1h"}, func(c *Config) bool {
			return c.Limits.NULBytes == NULKeep && !c.Limits.RejectEarlyTalkers && c.Limits.DataMinRate == 0 && c.Limits.DataDeadline == time.Hour
		}},
		{[]string{"SLUICE_XCLIENT=on", "SLUICE_MAXCONNECTIONS=100", "SLUICE_SKIP=authenticated", "SLUICE_HEADER=X-A: %i"}, func(c *Config) bool {
			return c.XClient && c.MaxConnections == 100 && c.SkipAuthenticated && c.Header == "X-A: %i"
		}},
	}
	for _, tt := range tests {
		c, err := Load(Edge, []string{"-f", p}, tt.env)
		if err != nil {
			t.Errorf("%q: %v", tt.env, err)
			continue
		}
		if !tt.check(c) {
			t.Errorf("%q: wrong value in %+v", tt.env, c)
		}
	}
}

func TestFlagsForSluiceSettings(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	c := mustLoad(t, Edge, []string{"-f", p, "--store-s3-endpoint", "127.0.0.1:9000", "--store-s3-create-bucket",
		"--store-s3-tls=false", "--nats-url=nats://127.0.0.1:4222,nats://127.0.0.1:4223", "--worker-slots", "7",
		"--max-message-size", "1M", "--data-dir", "/srv/s", "--nats-verdict-prefix", "v.x", "--store-s3-access-key", "AK",
		"--store-s3-secret-key", "SK"}, nil)
	if !c.Store.S3.CreateBucket || c.Store.S3.TLS || c.Store.Type != StoreS3 || len(c.NATS.URLs) != 2 ||
		c.Worker.Slots != 7 || c.MaxMessageSize != 1<<20 || c.DataDir != "/srv/s" || c.NATS.VerdictPrefix != "v.x" ||
		c.Store.S3.AccessKey != "AK" || c.Store.S3.SecretKey != "SK" {
		t.Errorf("%+v", c)
	}
	e := loadErr(t, Edge, []string{"-f", p, "--store-s3-tls=maybe"}, nil)
	if e.Error() != `--store-s3-tls: store.s3.tls: must be a boolean (on/off, yes/no, true/false, 1/0), not "maybe"` {
		t.Errorf("got %q", e.Error())
	}
	// Every sluice setting has its flag, every setting its variable.
	fs, _ := newFlagSet(Edge)
	for _, s := range settings {
		if f := fs.Lookup(FlagName(s.key)); (f != nil) == s.proxsmtpd {
			t.Errorf("%s: flag %v", s.key, f)
		}
	}
	seen := map[string]string{}
	for _, s := range settings {
		if other, dup := seen[EnvName(s.key)]; dup {
			t.Errorf("%s and %s share %s", s.key, other, EnvName(s.key))
		}
		seen[EnvName(s.key)] = s.key
	}
}

// Issue 6: a password in nats.url never reaches a log line.
func TestRedactedURLs(t *testing.T) {
	n := NATS{URLs: []string{"nats://u:s3cret@h1:4222", "tls://t0ken@h2:4443", "nats://h3:4222", "u:s3cret@h4:4222", "h5:4222"}}
	want := []string{"nats://u:xxxxx@h1:4222", "tls://xxxxx@h2:4443", "nats://h3:4222", "xxxxx@h4:4222", "h5:4222"}
	if got := n.RedactedURLs(); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestAWSFallback(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nstore.s3.endpoint: 127.0.0.1:9000\n")
	aws := []string{"AWS_ACCESS_KEY_ID=AKIA", "AWS_SECRET_ACCESS_KEY=SECRET", "AWS_SESSION_TOKEN=TOKEN", "AWS_DEFAULT_REGION=eu-west-1"}
	c := mustLoad(t, Edge, []string{"-f", p}, aws)
	if s := c.Store.S3; s.AccessKey != "AKIA" || s.SecretKey != "SECRET" || s.SessionToken != "TOKEN" || s.Region != "eu-west-1" {
		t.Errorf("AWS fallback: %+v", s)
	}
	c = mustLoad(t, Edge, []string{"-f", p}, append(aws, "AWS_REGION=eu-central-1"))
	if c.Store.S3.Region != "eu-central-1" {
		t.Errorf("AWS_REGION: %q", c.Store.S3.Region)
	}
	c = mustLoad(t, Edge, []string{"-f", p}, append(aws, "SLUICE_STORE_S3_ACCESS_KEY=mine", "SLUICE_STORE_S3_SECRET_KEY=s", "SLUICE_STORE_S3_REGION=ap-south-1"))
	if s := c.Store.S3; s.AccessKey != "mine" || s.SecretKey != "s" || s.Region != "ap-south-1" || s.SessionToken != "TOKEN" {
		t.Errorf("SLUICE_ over AWS_: %+v", s)
	}
	p2 := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nstore.s3.endpoint: 127.0.0.1:9000\nstore.s3.region: file-region\n")
	if c = mustLoad(t, Edge, []string{"-f", p2}, aws); c.Store.S3.Region != "file-region" {
		t.Errorf("file over AWS_: %q", c.Store.S3.Region)
	}
	e := loadErr(t, Edge, []string{"-f", p}, []string{"AWS_ACCESS_KEY_ID=AKIA"})
	if !strings.Contains(e.Error(), "store.s3.access_key and store.s3.secret_key go together") {
		t.Errorf("got %q", e.Error())
	}
}

func TestRoles(t *testing.T) {
	// The worker reads the edge's file and ignores Listen and OutAddress.
	edgeConf := writeConf(t, "proxsmtpd.conf", "Listen: bogus host\nOutAddress: bogus host\nFilterCommand: cat\nFilterType: reject\n")
	natsEnv := []string{"SLUICE_NATS_URL=nats://127.0.0.1:4222"}
	c := mustLoad(t, Worker, []string{"-f", edgeConf}, natsEnv)
	if c.Role != Worker || c.Listen != (Address{}) || c.OutAddress != (Address{}) || c.FilterType != FilterTypeReject {
		t.Errorf("worker: %+v", c)
	}
	if c.Worker.Slots != workerSlots {
		t.Errorf("worker slots %d, want %d", c.Worker.Slots, workerSlots)
	}
	if e := loadErr(t, Edge, []string{"-f", edgeConf}, natsEnv); !strings.HasSuffix(e.Error(), "invalid Listen socket name or ip: bogus host") {
		t.Errorf("edge: %q", e.Error())
	}

	// No file at all for the worker by default; the environment is enough.
	c = mustLoad(t, Worker, nil, natsEnv)
	if c.ConfigFile != "" || len(c.Warnings) != 0 || c.FilterType != FilterTypePipe {
		t.Errorf("worker without file: %+v", c)
	}
	if e := loadErr(t, Worker, nil, nil); e.Error() != "nats.url: required for the worker (the embedded NATS server lives in the edge)" {
		t.Errorf("worker without NATS: %q", e.Error())
	}
	if e := loadErr(t, Worker, nil, append(natsEnv, "SLUICE_WORKER_SLOTS=0")); e.Error() != "SLUICE_WORKER_SLOTS: worker.slots: must be at least 1" {
		t.Errorf("worker slots 0: %q", e.Error())
	}
	if c = mustLoad(t, Worker, []string{"--worker-slots=9"}, natsEnv); c.Worker.Slots != 9 {
		t.Errorf("worker slots: %d", c.Worker.Slots)
	}
	// TransparentProxy concerns the edge only; User concerns both.
	tp := writeConf(t, "proxsmtpd.conf", "TransparentProxy: client\n")
	if c = mustLoad(t, Worker, []string{"-f", tp}, natsEnv); c.TransparentProxy != TransparentClient {
		t.Errorf("worker TransparentProxy: %v", c.TransparentProxy)
	}
	userConf := writeConf(t, "proxsmtpd.conf", "User: nobody\n")
	if c = mustLoad(t, Worker, []string{"-f", userConf}, natsEnv); c.User != "nobody" {
		t.Errorf("worker User: %q", c.User)
	}
	userConf = writeConf(t, "proxsmtpd.conf", "User: no-such-user-sluice\n")
	if e := loadErr(t, Worker, []string{"-f", userConf}, natsEnv); e.Error() != userConf+": couldn't look up user: no-such-user-sluice" {
		t.Errorf("worker User: %q", e.Error())
	}

	// Edge: in-process workers with the embedded server, none with an external one.
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	if c = mustLoad(t, Edge, []string{"-f", p}, nil); c.Worker.Slots != workerSlots {
		t.Errorf("edge embedded slots %d", c.Worker.Slots)
	}
	// The embedded edge's slots follow MaxConnections.
	p10 := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nMaxConnections: 10\n")
	if c = mustLoad(t, Edge, []string{"-f", p10}, nil); c.Worker.Slots != 10 {
		t.Errorf("edge embedded slots with MaxConnections 10: %d", c.Worker.Slots)
	}
	c = mustLoad(t, Edge, []string{"-f", p}, natsEnv)
	if c.Worker.Slots != 0 || !slices.Contains(c.Warnings, "store.type is fs with an external NATS server: workers elsewhere must see the same store.dir") {
		t.Errorf("edge external: slots %d warnings %q", c.Worker.Slots, c.Warnings)
	}
	if c = mustLoad(t, Edge, []string{"-f", p, "--worker-slots", "2"}, natsEnv); c.Worker.Slots != 2 {
		t.Errorf("edge external explicit slots %d", c.Worker.Slots)
	}
}

// An edge started like proxsmtpd, with an empty environment (no HOME).
func TestEdgeEmptyEnvironment(t *testing.T) {
	for _, file := range []string{"../../deploy/examples/proxsmtpd.conf", "testdata/proxsmtpd-all-options.conf"} {
		c := mustLoad(t, Edge, []string{"-f", file}, nil)
		if !filepath.IsAbs(c.DataDir) || c.Hostname == "" || c.Store.Dir == "" {
			t.Errorf("%s: %+v", file, c)
		}
	}
}

func TestExamples(t *testing.T) {
	t.Chdir("../..") // where make run starts the edge: the demo filter's path is relative to it
	for _, file := range []string{"deploy/examples/proxsmtpd.conf", "deploy/examples/sluice.yaml"} {
		c := mustLoad(t, Edge, []string{"-f", file}, nil)
		if c.Listen.String() != "127.0.0.1:10025" || c.OutAddress.String() != "127.0.0.1:2525" {
			t.Errorf("%s: Listen %v OutAddress %v", file, c.Listen, c.OutAddress)
		}
		if c.FilterCommand != "deploy/examples/filters/demo.sh" || c.Header != "X-Filtered: by sluice for %i at %d" {
			t.Errorf("%s: FilterCommand %q Header %q", file, c.FilterCommand, c.Header)
		}
		if !c.NATS.Embedded() || c.Store.Type != StoreFS || c.Worker.Slots < 2 || len(c.Warnings) != 0 {
			t.Errorf("%s: %+v", file, c)
		}
	}
	c := mustLoad(t, Edge, []string{"-f", "deploy/examples/sluice.yaml"}, nil)
	if wd, _ := os.Getwd(); c.DataDir != filepath.Join(wd, "sluice-data") {
		t.Errorf("data_dir %q", c.DataDir)
	}
}

func TestYAML(t *testing.T) {
	y := writeConf(t, "sluice.yml", `
OutAddress: "[::1]:2525"
filtercommand: "cat -v"
FilterTimeout: 20
XClient: on
MaxConnections: 100
Header:
nats:
  url: [nats://127.0.0.1:4222, nats://127.0.0.1:4223]
  replicas: 3
  ack_wait: 45s
store:
  s3:
    endpoint: 127.0.0.1:9000
    tls: false
    part_size: 8MiB
worker:
  slots: 4
job_timeout: 3m
`)
	c := mustLoad(t, Edge, []string{"-f", y}, nil)
	if c.OutAddress != (Address{Network: "tcp", Host: "::1", Port: 2525}) || c.FilterCommand != "cat -v" ||
		c.FilterTimeout != 20*time.Second || !c.XClient || c.MaxConnections != 100 || c.Header != "" {
		t.Errorf("proxsmtpd part: %+v", c)
	}
	if !slices.Equal(c.NATS.URLs, []string{"nats://127.0.0.1:4222", "nats://127.0.0.1:4223"}) || c.NATS.Replicas != 3 ||
		c.NATS.AckWait != 45*time.Second || c.JobTimeout != 3*time.Minute {
		t.Errorf("nats: %+v %v", c.NATS, c.JobTimeout)
	}
	if c.Store.Type != StoreS3 || c.Store.S3.TLS || c.Store.S3.PartSize != 8<<20 || c.Worker.Slots != 4 {
		t.Errorf("store: %+v %+v", c.Store, c.Worker)
	}
	// Environment over YAML.
	c = mustLoad(t, Edge, []string{"-f", y}, []string{"SLUICE_NATS_REPLICAS=5", "SLUICE_NATS_URL=nats://10.0.0.1:4222"})
	if c.NATS.Replicas != 5 || !slices.Equal(c.NATS.URLs, []string{"nats://10.0.0.1:4222"}) {
		t.Errorf("env over YAML: %+v", c.NATS)
	}

	for _, tt := range []struct{ body, want string }{
		{"OutAddress: 25\nnats:\n  urls: x\n", "unknown setting: nats.urls"},
		{"OutAddress: 25\nDebugFiles: 1\n", "unknown setting: debugfiles"},
		{"OutAddress: 25\nnats: 5\n", "unknown setting: nats"},
		{"OutAddress: 25\nTimeOut: [1, 2]\n", "TimeOut: must be a single value"},
		{"OutAddress: 25\nTimeOut: 1.5\n", "invalid setting: TimeOut"},
		{"OutAddress: 25\nXClient: maybe\n", "invalid value for XClient"},
		{"OutAddress:\n", "no OutAddress specified."},
		{"OutAddress: 25\n  bad: [indent\n", "invalid YAML: "},
	} {
		p := writeConf(t, "c.yaml", tt.body)
		e := loadErr(t, Edge, []string{"-f", p}, nil)
		if want := p + ": " + tt.want; !strings.HasPrefix(e.Error(), want) {
			t.Errorf("%q:\n got %q\nwant %q", tt.body, e.Error(), want)
		}
	}
}

func TestJSON(t *testing.T) {
	p := writeConf(t, "sluice.json", `{"OutAddress": "127.0.0.1:2525", "MaxConnections": 10, "nats": {"replicas": 2}, "store": {"s3": {"create_bucket": true}}}`)
	c := mustLoad(t, Edge, []string{"-f", p}, nil)
	if c.OutAddress.String() != "127.0.0.1:2525" || c.MaxConnections != 10 || c.NATS.Replicas != 2 || !c.Store.S3.CreateBucket {
		t.Errorf("%+v", c)
	}
}

func TestDefaultDataDir(t *testing.T) {
	tmp := t.TempDir()
	existing := filepath.Join(tmp, "lib", "sluice")
	if err := os.MkdirAll(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	creatable := filepath.Join(tmp, "lib", "new")
	impossible := filepath.Join(tmp, "missing", "sluice")
	aFile := filepath.Join(tmp, "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": home}
	tests := []struct {
		system, instance string
		env              map[string]string
		want             string
		warns            bool
	}{
		{existing, "", env, existing, false},
		{creatable, "", env, creatable, false},
		{impossible, "", env, "/x/state/sluice", false},
		{aFile, "", env, "/x/state/sluice", false},
		{impossible, "", map[string]string{"HOME": home}, home + "/.local/state/sluice", false},
		{impossible, "", map[string]string{"XDG_STATE_HOME": "relative", "HOME": home}, home + "/.local/state/sluice", false},
		{impossible, "", nil, "/var/tmp/sluice-1000", true},
		// Issue 9: a system user's home that does not exist is no place.
		{impossible, "", map[string]string{"HOME": "/nonexistent"}, "/var/tmp/sluice-1000", true},
		// A proxsmtp instance of its own; systemd's StateDirectory first.
		{existing, "mx1", env, existing + "/mx1", false},
		{impossible, "mx1", map[string]string{"HOME": "/nonexistent"}, "/var/tmp/sluice-1000-mx1", true},
		{impossible, "mx1", map[string]string{"STATE_DIRECTORY": "/var/lib/sluice/mx1:/other", "HOME": home}, "/var/lib/sluice/mx1", false},
	}
	for _, tt := range tests {
		got, warning := defaultDataDir(dataDirContext{system: tt.system, instance: tt.instance, env: tt.env, tmp: "/var/tmp", uid: 1000})
		if got != tt.want || (warning != "") != tt.warns {
			t.Errorf("defaultDataDir(%q, %q, %q) = %q, %q; want %q (warning: %v)", tt.system, tt.instance, tt.env, got, warning, tt.want, tt.warns)
		}
		if tt.warns && !strings.Contains(warning, "set data_dir") {
			t.Errorf("the warning does not name the setting: %q", warning)
		}
	}
	for file, want := range map[string]string{"/etc/proxsmtp/mx1.conf": "mx1", "/etc/proxsmtpd.conf": "", "/etc/proxsmtp/x.yaml": "", "/etc/sluice/edge.conf": ""} {
		if got := instanceOf(file); got != want {
			t.Errorf("instanceOf(%s) = %q, want %q", file, got, want)
		}
	}
	if _, err := os.Stat(creatable); err == nil {
		t.Errorf("defaultDataDir created %s", creatable)
	}
}

// docs/configuration.md documents every setting.
func TestDocsCoverEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, s := range settings {
		want := []string{"`" + EnvName(s.key) + "`"}
		if s.proxsmtpd {
			want = append(want, "`"+s.name+"`")
		} else {
			want = append(want, "`--"+FlagName(s.key)+"`", "`"+s.key+"`")
		}
		for _, w := range want {
			if !strings.Contains(doc, w) {
				t.Errorf("docs/configuration.md lacks %s", w)
			}
		}
	}
}

// Without OutAddress TransparentProxy needs no destination of its own,
// and nothing is said about it.
func TestTransparentWithoutOutAddress(t *testing.T) {
	p := writeConf(t, "proxsmtpd.conf", "TransparentProxy: on\n")
	c := mustLoad(t, Edge, []string{"-f", p}, nil)
	if c.TransparentProxy != TransparentClient || len(c.Warnings) != 0 {
		t.Errorf("TransparentProxy %q, warnings %q", c.TransparentProxy, c.Warnings)
	}
	p = writeConf(t, "proxsmtpd.conf", "TransparentProxy: off\n")
	if e := loadErr(t, Edge, []string{"-f", p}, nil); e.Error() != p+": no OutAddress specified." {
		t.Errorf("no OutAddress: %q", e.Error())
	}
}

// Issue 9: a FilterCommand whose program is missing is a start-up warning
// naming it (and still no error: it may be installed later); shell
// syntax and builtins are not looked for.
func TestFilterProgramWarning(t *testing.T) {
	for _, tc := range []struct{ cmd, warning string }{
		{"/nonexistent/bin/filter --scan", "FilterCommand: /nonexistent/bin/filter: no such file; every filter run will fail with 451 until it is there"},
		{"no-such-sluice-filter -x", "FilterCommand: no-such-sluice-filter: not found on PATH; every filter run will fail with 451 until it is there"},
		{"/etc/passwd", "FilterCommand: /etc/passwd: not an executable file; every filter run will fail with 451 until it is there"},
		{"cat", ""},
		{"LANG=C cat", ""},
		{"if true; then cat; fi", ""},
		{`printf 'X: %s\n' "$CLIENT"; cat`, ""},
		{"$HOME/bin/filter", ""},
	} {
		p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\nFilterCommand: "+tc.cmd+"\n")
		c := mustLoad(t, Edge, []string{"-f", p}, nil)
		var got string
		for _, w := range c.Warnings {
			if strings.HasPrefix(w, "FilterCommand:") {
				got = w
			}
		}
		if got != tc.warning {
			t.Errorf("%q: warning %q, want %q", tc.cmd, got, tc.warning)
		}
	}
	// The worker warns too; FilterType reject runs no filter.
	p := writeConf(t, "proxsmtpd.conf", "FilterCommand: /nonexistent/f\nFilterType: reject\nOutAddress: 2525\n")
	if c := mustLoad(t, Edge, []string{"-f", p}, nil); len(c.Warnings) != 0 {
		t.Errorf("FilterType reject: %q", c.Warnings)
	}
}
