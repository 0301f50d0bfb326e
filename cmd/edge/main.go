// Command edge is sluice's SMTP side: a drop-in replacement for proxsmtpd
// that holds the SMTP sessions and has every message filtered through the
// job queue. With no NATS URL configured it runs the whole system in one
// process.
//
// Without -d it detaches as proxsmtpd does, once it serves, and logs to
// syslog (facility mail); with -d N, or under a Type=notify unit
// ($NOTIFY_SOCKET), it stays in the foreground and logs to stderr.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/daemon"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/replaypool"
	"github.com/sluice-mail/sluice/internal/sdnotify"
	"github.com/sluice-mail/sluice/internal/wiring"
)

func main() {
	// First: the detached daemon's variable leaves the environment
	// before anything reads it.
	child := daemon.Resume()
	os.Exit(run(os.Args[1:], os.Environ(), child))
}

// run is the edge; child is non-nil in the process daemon.Spawn started.
func run(args, environ []string, child *daemon.Child) int {
	cfg, err := config.Load(config.Edge, args, environ)
	if err != nil {
		return config.Report(os.Stderr, "edge", config.Edge, err)
	}
	if cfg.ShowVersion {
		fmt.Printf("sluice edge (version %s)\n          (config: %s)\n", wiring.VersionString(), cfg.ConfigFile)
		return 0
	}
	foreground := cfg.Debug >= 0 || os.Getenv("NOTIFY_SOCKET") != ""
	if child == nil && !foreground {
		// The configuration is sound; the daemon reads it again.
		return daemon.Spawn(os.Stderr)
	}
	name := filepath.Base(os.Args[0])
	var log *slog.Logger
	if child != nil {
		if log, err = wiring.SyslogLogger(name, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "%s: no syslog daemon listens on /dev/log: log lines are lost until one does (-d N logs to stderr in the foreground)\n", name)
		}
	} else {
		log = wiring.Logger(os.Stderr, cfg)
	}
	if os.Geteuid() == 0 && cfg.User == "" {
		log.Warn("running as root is NOT recommended")
	}
	if cfg.Worker.Slots > 0 {
		// Its workers' filter shells are its only children: it may adopt
		// and end what they leave behind.
		if err := filter.EnableSubreaper(); err != nil {
			log.Warn("processes a filter leaves behind may outlive its run", "err", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	e, err := edge.Start(ctx, cfg, log, edge.WithReplayPools(replaypool.Serve))
	if err != nil {
		log.Error("start-up failed", "err", err)
		if child != nil {
			// Still the starting command's stderr.
			fmt.Fprintf(os.Stderr, "%s: start-up failed: %v\n", name, err)
		}
		return 1
	}
	// Type=notify: listening now.
	if err := sdnotify.Notify("READY=1\nSTATUS=accepting SMTP connections"); err != nil {
		log.Warn("could not tell systemd the edge is ready", "err", err)
	}
	// Detached: the starting command may exit now.
	if err := child.Ready(); err != nil {
		log.Warn("could not detach from the starting command's streams", "err", err)
	}
	go func() {
		// SIGHUP reads the TLS certificate again (a renewal); nothing else
		// is reloaded.
		for range hup {
			e.ReloadTLS()
		}
	}()
	code := 0
	select {
	case <-ctx.Done():
	case <-e.Failed():
		// Nothing reaches the edge any more: exit, so that the service
		// manager restarts it, after the sessions still open are done.
		log.Error("the listener failed", "err", e.Err())
		code = 1
	}
	log.Info("shutting down", "drain_timeout", cfg.DrainTimeout)
	_ = sdnotify.Notify("STOPPING=1\nSTATUS=draining")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	e.Shutdown(sctx)
	log.Info("stopped")
	return code
}
