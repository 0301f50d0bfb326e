// Package wiring builds, from the configuration, the pieces the edge, the
// worker and replay share: the logger, the blob store, the job queue's
// options, the filter, the monitoring endpoint, the pid file and the
// version. It holds no state; each command owns what it builds.
package wiring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/logging"
	"github.com/sluice-mail/sluice/internal/milter"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/privs"
	"github.com/sluice-mail/sluice/internal/queue"
)

// Version is set at build time:
// -ldflags "-X github.com/sluice-mail/sluice/internal/wiring.Version=...".
var Version string

// VersionString is Version, else the module version the build recorded
// (`go install ...@vX`, or Go's pseudo-version naming the commit of a
// checkout), else the commit alone ("devel-0123456789ab", "-dirty" with
// local changes), else "dev".
func VersionString() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return "dev"
	}
	return "devel-" + rev + dirty
}

// Logger is the command's logger (log_format, -d), with the
// configuration's warnings already logged.
func Logger(w io.Writer, cfg *config.Config) *slog.Logger {
	return withWarnings(logging.New(w, cfg.LogLevel(), string(cfg.LogFormat)), cfg)
}

// SyslogLogger is the detached edge's logger: syslog, facility mail,
// program name tag (see logging.Syslog), with the configuration's
// warnings already logged. The error says no syslog daemon answers yet.
func SyslogLogger(tag string, cfg *config.Config) (*slog.Logger, error) {
	log, err := logging.Syslog(tag, cfg.LogLevel(), string(cfg.LogFormat))
	return withWarnings(log, cfg), err
}

func withWarnings(log *slog.Logger, cfg *config.Config) *slog.Logger {
	for _, warning := range cfg.Warnings {
		log.Warn(warning)
	}
	return log
}

// OpenStore opens the configured blob store.
func OpenStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (blob.Store, error) {
	if cfg.Store.Type == "s3" {
		s3 := cfg.Store.S3
		st, err := blob.NewS3(ctx, blob.S3Options{
			Endpoint: s3.Endpoint, Bucket: s3.Bucket, Region: s3.Region,
			AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, SessionToken: s3.SessionToken,
			TLS: s3.TLS, PathStyle: s3.PathStyle, CreateBucket: s3.CreateBucket,
			PartSize: uint64(s3.PartSize), Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		return st, nil
	}
	st, err := blob.NewFS(cfg.Store.Dir)
	if err != nil {
		return nil, fmt.Errorf("store.dir: %w", err)
	}
	return st, nil
}

// StoreDescription names the store for the start-up line, without
// credentials.
func StoreDescription(cfg *config.Config) string {
	if cfg.Store.Type == "s3" {
		return "s3://" + cfg.Store.S3.Endpoint + "/" + cfg.Store.S3.Bucket
	}
	return cfg.Store.Dir
}

// QueueOptions maps the configuration onto the queue's options; name is
// the connection's name in the NATS server's monitoring.
func QueueOptions(cfg *config.Config, name string, log *slog.Logger) queue.Options {
	n := cfg.NATS
	return queue.Options{
		Name: name,
		URLs: n.URLs, Stream: n.Stream, Subject: n.Subject, Consumer: n.Consumer,
		VerdictPrefix: n.VerdictPrefix, Replicas: n.Replicas, MaxAge: n.MaxAge,
		AckWait: n.AckWait, MaxDeliver: n.MaxDeliver,
		Domain: n.Domain, PublishTimeout: n.PublishTimeout,
		User: n.User, Password: n.Password, Token: n.Token, NKeyFile: n.NKeyFile,
		CredsFile: n.CredsFile, TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey,
		Logger: log,
	}
}

// FilterSpec is the FilterCommand as configured. The environment the
// filter inherits is worked out here, once per process, from the
// process's own: never sluice's settings or credentials.
func FilterSpec(cfg *config.Config) filter.Spec {
	mode := filter.Pipe
	if cfg.FilterType == "file" {
		mode = filter.File
	}
	return filter.Spec{
		Command:   cfg.FilterCommand,
		Mode:      mode,
		Timeout:   cfg.FilterTimeout,
		TempDir:   cfg.TempDirectory,
		MaxOutput: cfg.Filter.MaxOutputSize,
		Environ:   filter.Inherited(os.Environ(), cfg.Filter.EnvAllow, cfg.Secrets()),
	}
}

// Filter is the filter workers run: the FilterCommand, then the milters
// (filter.milters), either alone, or nil for neither: the message is
// then delivered as received. The configuration checked the milters'
// settings; an error here is a bug.
func Filter(cfg *config.Config, log *slog.Logger) (filter.Filter, error) {
	return FilterOf(cfg, FilterSpec(cfg), log)
}

// FilterOf is Filter with the FilterCommand given as spec (replay's
// --filter-command): spec's command, if any, then cfg's milters.
func FilterOf(cfg *config.Config, spec filter.Spec, log *slog.Logger) (filter.Filter, error) {
	var cmd filter.Filter
	if spec.Command != "" {
		cmd = filter.Command(spec)
	}
	if len(cfg.Filter.Milters) == 0 {
		return cmd, nil
	}
	f := cfg.Filter
	chain, err := milter.New(milter.Config{
		Milters: f.Milters, DefaultAction: f.MilterDefaultAction,
		ConnectTimeout: f.MilterConnectTimeout, CommandTimeout: f.MilterCommandTimeout,
		ContentTimeout: f.MilterContentTimeout, Protocol: uint32(f.MilterProtocol),
		Hostname: cfg.Hostname, TempDir: cfg.TempDirectory, MaxIdle: cfg.Worker.Slots,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("filter.milters: %w", err)
	}
	if cmd == nil {
		return chain, nil
	}
	return filter.Sequence{First: cmd, Then: chain, TempDir: cfg.TempDirectory}, nil
}

// FilterReady is the readiness check of a filter that has one (milters
// that must be reachable), or nil.
func FilterReady(f filter.Filter) func(context.Context) error {
	if r, ok := f.(interface{ Ready(context.Context) error }); ok {
		return r.Ready
	}
	return nil
}

// Monitor starts the health, readiness and metrics endpoint on
// http_listen, or returns nil when it is off (a nil *monitor.Server
// ignores every call). Each of parts reads "starting" until the command
// sets its check. It starts before anything else so that a busy address
// fails start-up at once.
func Monitor(ctx context.Context, cfg *config.Config, reg *prometheus.Registry, log *slog.Logger, parts ...string) (*monitor.Server, error) {
	if cfg.HTTPListen == "" {
		return nil, nil
	}
	starting := func(context.Context) error { return errors.New("starting") }
	checks := make(map[string]func(context.Context) error, len(parts))
	for _, p := range parts {
		checks[p] = starting
	}
	return monitor.Start(ctx, cfg.HTTPListen, checks, reg, log)
}

// SwitchUser is proxsmtpd's User: with the listeners bound and as root,
// it gives the data directory (and a local store's) to the user, then
// switches the whole process to it. The messages are proxsmtpd's.
func SwitchUser(cfg *config.Config, log *slog.Logger) error {
	a, err := privs.Lookup(cfg.User)
	if err != nil {
		return fmt.Errorf("couldn't look up user: %s", cfg.User)
	}
	if os.Geteuid() == a.UID && os.Getuid() == a.UID {
		// Already that user (a service manager started it so, as
		// Debian's proxsmtp@.service does with User=_proxsmtp).
		log.Info(fmt.Sprintf("running as user %s (uid %d, gid %d)", a.Name, a.UID, os.Getgid()))
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must be started as root to switch to user: %s", cfg.User)
	}
	dirs := []string{cfg.DataDir}
	if cfg.Store.Type == config.StoreFS {
		dirs = append(dirs, cfg.Store.Dir)
	}
	for _, d := range dirs {
		if err := a.Own(d); err != nil {
			return fmt.Errorf("data_dir: giving %s to %s: %w", d, cfg.User, err)
		}
	}
	if err := a.Drop(); err != nil {
		return fmt.Errorf("unable to switch to user: %s (uid %d, gid %d): %w", cfg.User, a.UID, a.GID, err)
	}
	log.Info(fmt.Sprintf("switched to user %s (uid %d, gid %d)", a.Name, a.UID, a.GID))
	return nil
}

// WritePidFile writes the process id to path (PidFile), if set; remove
// deletes the file again. A pid file that cannot be written is logged,
// as proxsmtpd does, and not fatal.
func WritePidFile(path string, log *slog.Logger) (remove func()) {
	if path == "" {
		return func() {}
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		log.Error("couldn't write pid file", "file", path, "err", err)
		return func() {}
	}
	return func() { _ = os.Remove(path) }
}

// ProcessID names this process in verdicts and logs: host-pid, then
// suffix.
func ProcessID(suffix string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "sluice"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + suffix
}
