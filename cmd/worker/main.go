// Command worker runs proxsmtpd FilterCommands for sluice edges: it pulls
// filter jobs from NATS JetStream, reads each message from the blob store,
// runs the filter, stores the result and answers the edge.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/logging"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Environ()))
}

func run(args, environ []string) int {
	cfg, err := config.Load(config.Worker, args, environ)
	if err != nil {
		return config.Report(os.Stderr, "worker", config.Worker, err)
	}
	if cfg.ShowVersion {
		fmt.Printf("sluice worker (version %s)\n          (config: %s)\n", version, cfg.ConfigFile)
		return 0
	}
	log := logging.New(os.Stderr, cfg.LogLevel(), string(cfg.LogFormat))
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	// Its only children are filter shells: it may adopt and end what
	// they leave behind.
	if err := filter.EnableSubreaper(); err != nil {
		log.Warn("processes a filter leaves behind may outlive its run", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	// The monitoring endpoint comes first: a busy http_listen fails at
	// once, and while NATS is still being reached /healthz answers and
	// /readyz says what is missing.
	var mon *monitor.Server
	var metrics *monitor.WorkerMetrics
	if cfg.HTTPListen != "" {
		reg := monitor.NewRegistry()
		metrics = monitor.NewWorkerMetrics(reg)
		starting := func(context.Context) error { return errors.New("starting") }
		mon, err = monitor.Start(ctx, cfg.HTTPListen, map[string]func(context.Context) error{
			"queue": starting, "store": starting,
		}, reg, log)
		if err != nil {
			log.Error("start-up failed", "err", err)
			return 1
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := mon.Shutdown(sctx); err != nil {
				log.Warn("monitoring endpoint", "err", err)
			}
		}()
	}

	store, err := edge.OpenStore(ctx, cfg, log)
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	mon.SetCheck("store", monitor.StoreCheck(store))
	qo := edge.QueueOptions(cfg, log)
	qo.Name = "sluice-worker"
	q, err := queue.Open(ctx, qo)
	if err != nil {
		log.Error("start-up failed", "err", fmt.Errorf("job queue: %w", err))
		return 1
	}
	defer q.Close()
	mon.SetCheck("queue", q.Ready)
	host, _ := os.Hostname()
	w := &worker.Worker{
		ID:      host + "-" + strconv.Itoa(os.Getpid()),
		Store:   store,
		Filter:  edge.FilterSpec(cfg),
		Logger:  log,
		Metrics: metrics,
	}
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Error("couldn't write pid file", "file", cfg.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.PidFile)
		}
	}
	// On SIGTERM readiness fails first, then the worker stops pulling
	// jobs and finishes those it holds.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go func() {
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
			return
		}
		mon.SetDraining() // readiness fails before the worker stops pulling
		stopRun()
	}()
	if err := worker.Run(runCtx, q, w, cfg.Worker.Slots); err != nil {
		log.Error("worker stopped", "err", err)
		return 1
	}
	log.Info("worker stopped")
	return 0
}
