// Command replay runs the messages sluice stored through a filter and
// reports the verdicts that would change, so that a new FilterCommand can
// be tried on real mail before it is switched on. It only reads the
// message store: it writes nothing there, delivers nothing and needs no
// NATS server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/replay"
	"github.com/sluice-mail/sluice/internal/wiring"
)

func main() {
	out := reportOutput()
	os.Exit(run(os.Args[1:], os.Environ(), out, os.Stderr))
}

// run is the whole command; stdout gets the report, stderr the logs.
func run(args, environ []string, stdout, stderr io.Writer) int {
	flags, rest, err := replay.ParseArgs(args, time.Now())
	if errors.Is(err, replay.ErrHelp) {
		fmt.Fprint(stdout, usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "replay: %v\n(replay --help for the usage)\n", err)
		return 2
	}
	cfg, err := config.Load(config.Replay, rest, environ)
	if err != nil {
		var e *config.Error
		if errors.As(err, &e) && e.Usage {
			fmt.Fprintf(stderr, "replay: %v\n(replay --help for the usage)\n", err)
			return 2
		}
		return config.Report(stderr, "replay", config.Replay, err)
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stdout, "sluice replay (version %s)\n          (config: %s)\n", wiring.VersionString(), cfg.ConfigFile)
		return 0
	}
	log := wiring.Logger(stderr, cfg)
	spec, err := filterSpec(cfg, flags)
	if err != nil {
		fmt.Fprintf(stderr, "replay: %v\n", err)
		return 2
	}
	if flags.Milters != nil {
		cfg.Filter.Milters = flags.Milters
	}
	cfg.Worker.Slots = flags.Concurrency // connections kept per milter
	try, err := wiring.FilterOf(cfg, spec, log)
	if err != nil {
		fmt.Fprintf(stderr, "replay: %v\n", err)
		return 2
	}
	if try == nil {
		// Neither a command nor a milter: the message as stored.
		try = filter.Command(spec)
	}
	// Its only children are filter shells: it may adopt and end what
	// they leave behind.
	if err := filter.EnableSubreaper(); err != nil {
		log.Warn("processes a filter leaves behind may outlive its run", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		log.Error("cannot open the message store", "err", err)
		return 1
	}
	p := &replay.Printer{W: stdout, JSON: flags.Format == "json", OnlyChanged: flags.OnlyChanged}
	sum, err := replay.Run(ctx, replay.Options{
		Store:       store,
		Filter:      try,
		Timeout:     spec.Timeout,
		Since:       flags.Since,
		Until:       flags.Until,
		Concurrency: flags.Concurrency,
		Limit:       flags.Limit,
		Logger:      log,
	}, p.Result)
	if perr := p.Summary(sum); perr != nil && err == nil {
		err = perr
	}
	switch {
	case err != nil:
		log.Error("replay failed", "err", err)
		return 1
	case sum.Errors > 0:
		log.Error("some messages could not be replayed", "errors", sum.Errors)
		return 1
	}
	return 0
}

// usage is replay's own usage text followed by the configuration flags it
// shares with edge and worker.
func usage() string {
	cu := config.Usage(config.Replay)
	// config.Usage starts with its own synopsis; replay's is above.
	if _, flags, ok := strings.Cut(cu, "\n\n"); ok {
		cu = flags
	}
	return replay.Usage + "\nConfiguration (as for edge and worker; only the filter and store.* settings\nmatter here):\n\n" + cu
}

// filterSpec is the configured filter with the command line's overrides.
func filterSpec(cfg *config.Config, f replay.Flags) (filter.Spec, error) {
	if f.FilterType == "" && cfg.FilterType == config.FilterTypeReject {
		return filter.Spec{}, errors.New("FilterType is reject (every message refused with FilterReject, no filter runs): " +
			"give --filter-type pipe or file, and --filter-command, to try a filter")
	}
	spec := wiring.FilterSpec(cfg)
	if f.FilterCommand != nil {
		spec.Command = *f.FilterCommand
	}
	switch f.FilterType {
	case "pipe":
		spec.Mode = filter.Pipe
	case "file":
		spec.Mode = filter.File
	}
	return spec, nil
}

// openStore opens the configured store without creating anything: no
// store directory, no bucket.
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (blob.Store, error) {
	c := *cfg
	c.Store.S3.CreateBucket = false
	if c.Store.Type == config.StoreFS {
		fi, err := os.Stat(c.Store.Dir)
		if err != nil {
			return nil, fmt.Errorf("store.dir: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("store.dir: %s is not a directory", c.Store.Dir)
		}
	}
	return wiring.OpenStore(ctx, &c, log)
}
