// Command worker runs proxsmtpd FilterCommands for sluice edges: it pulls
// filter jobs from NATS JetStream, reads each message from the blob store,
// runs the filter, stores the result and answers the edge.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/replaypool"
	"github.com/sluice-mail/sluice/internal/sdnotify"
	"github.com/sluice-mail/sluice/internal/wiring"
	"github.com/sluice-mail/sluice/internal/worker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ()))
}

func run(args, environ []string) int {
	cfg, err := config.Load(config.Worker, args, environ)
	if err != nil {
		return config.Report(os.Stderr, "worker", config.Worker, err)
	}
	if cfg.ShowVersion {
		fmt.Printf("sluice worker (version %s)\n          (config: %s)\n", wiring.VersionString(), cfg.ConfigFile)
		return 0
	}
	log := wiring.Logger(os.Stderr, cfg)
	log.Info("sluice worker starting", "version", wiring.VersionString(), "config", cfg.ConfigFile)
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
	var reg *prometheus.Registry
	var metrics *monitor.WorkerMetrics // nil without http_listen: nothing counted
	if cfg.HTTPListen != "" {
		reg = monitor.NewRegistry(wiring.VersionString())
		metrics = monitor.NewWorkerMetrics(reg)
	}
	mon, err := wiring.Monitor(ctx, cfg, reg, log, "queue", "store")
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	defer shutdownMonitor(mon, log)
	removePid := func() {}
	if cfg.User != "" {
		// proxsmtpd's User: switch once http_listen is bound, before the
		// store, NATS and any filter.
		removePid = wiring.WritePidFile(cfg.PidFile, log)
		if err := wiring.SwitchUser(cfg, log); err != nil {
			log.Error("start-up failed", "err", err)
			return 1
		}
	}

	w, q, err := open(ctx, cfg, mon, metrics, log)
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	defer q.Close()
	if cfg.User == "" {
		removePid = wiring.WritePidFile(cfg.PidFile, log)
	}
	defer removePid()
	if err := sdnotify.Notify("READY=1\nSTATUS=taking jobs"); err != nil {
		log.Warn("could not tell systemd the worker is ready", "err", err)
	}
	replayDone := replaypool.Serve(ctx, cfg, q, w.Store, log)
	defer replayDone()
	if err := serve(ctx, q, w, cfg.Worker.Slots, mon); err != nil {
		log.Error("worker stopped", "err", err)
		return 1
	}
	log.Info("worker stopped")
	return 0
}

// open opens the store and the job queue and makes the worker.
func open(ctx context.Context, cfg *config.Config, mon *monitor.Server, metrics *monitor.WorkerMetrics,
	log *slog.Logger) (*worker.Worker, *queue.Queue, error) {
	store, err := wiring.OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	mon.SetCheck("store", blob.ReadyCheck(store))
	q, err := queue.Open(ctx, wiring.QueueOptions(cfg, "sluice-worker", log))
	if err != nil {
		return nil, nil, fmt.Errorf("job queue: %w", err)
	}
	mon.SetCheck("queue", q.Ready)
	f, err := wiring.Filter(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if ready := wiring.FilterReady(f); ready != nil {
		mon.SetCheck("milters", ready)
	}
	w := &worker.Worker{
		ID:      wiring.ProcessID(""),
		Store:   store,
		Filter:  f,
		Logger:  log,
		Metrics: metrics,
	}
	return w, q, nil
}

// serve runs the worker until ctx ends. Readiness fails first, then the
// worker stops pulling jobs and finishes those it holds.
func serve(ctx context.Context, q *queue.Queue, w *worker.Worker, slots int, mon *monitor.Server) error {
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go func() {
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
			return
		}
		mon.SetDraining() // readiness fails before the worker stops pulling
		_ = sdnotify.Notify("STOPPING=1\nSTATUS=draining")
		stopRun()
	}()
	return worker.Run(runCtx, q, w, slots)
}

func shutdownMonitor(mon *monitor.Server, log *slog.Logger) {
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mon.Shutdown(sctx); err != nil {
		log.Warn("monitoring endpoint", "err", err)
	}
}
