// Command worker runs proxsmtpd FilterCommands for sluice edges: it pulls
// filter jobs from NATS JetStream, reads each message from the blob store,
// runs the filter, stores the result and answers the edge.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/logging"
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	store, err := edge.OpenStore(ctx, cfg, log)
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	qo := edge.QueueOptions(cfg, log)
	qo.Name = "sluice-worker"
	q, err := queue.Open(ctx, qo)
	if err != nil {
		log.Error("start-up failed", "err", fmt.Errorf("job queue: %w", err))
		return 1
	}
	defer q.Close()
	host, _ := os.Hostname()
	w := &worker.Worker{
		ID:     host + "-" + strconv.Itoa(os.Getpid()),
		Store:  store,
		Filter: edge.FilterSpec(cfg),
		Logger: log,
	}
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Error("couldn't write pid file", "file", cfg.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.PidFile)
		}
	}
	log.Info("worker started", "id", w.ID, "slots", cfg.Worker.Slots, "nats", cfg.NATS.URLs)
	if err := worker.Run(ctx, q, w, cfg.Worker.Slots); err != nil {
		log.Error("worker stopped", "err", err)
		return 1
	}
	log.Info("worker stopped")
	return 0
}
