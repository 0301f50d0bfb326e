// Command replay runs the messages sluice stored through a filter and
// reports the verdicts that would change, so that a new FilterCommand can
// be tried on real mail before it is switched on. It only reads the
// message store: it writes nothing there and needs no NATS server, and it
// delivers nothing unless --deliver-to names a server for the messages
// the new filter would release.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/queue"
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
	// On a terminal, progress is a bar and the log lines go above it.
	var progress *bar
	if f, ok := stderr.(*os.File); ok && isTerminal(f) {
		progress = &bar{w: stderr}
		stderr = progress
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
	if flags.Pool == "" {
		if err := filter.EnableSubreaper(); err != nil {
			log.Warn("processes a filter leaves behind may outlive its run", "err", err)
		}
	}

	var done map[string]replay.Result
	if flags.Resume != "" {
		if done, err = readResume(flags.Resume); err != nil {
			fmt.Fprintf(stderr, "replay: --resume: %v\n", err)
			return 2
		}
		log.Info("resuming: results taken over from the earlier run", "file", flags.Resume, "messages", len(done))
	}
	if flags.Pool != "" && len(cfg.NATS.URLs) == 0 {
		fmt.Fprintf(stderr, "replay: --pool: needs nats.url, the NATS servers of the worker pool (-f the workers' configuration, or --nats-url)\n")
		return 2
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ctx, cancel := context.WithCancelCause(sigCtx)
	defer cancel(nil)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		log.Error("cannot open the message store", "err", err)
		return 1
	}
	var pool *replay.Pool
	if flags.Pool != "" {
		var closeConn func()
		if pool, closeConn, err = openPool(ctx, cfg, flags, spec, log); err != nil {
			log.Error("cannot replay on the pool", "pool", flags.Pool, "err", err)
			return 1
		}
		defer closeConn()
		defer pool.Close()
		go pool.Watch(ctx, cancel)
		log.Info("replaying on the worker pool", "pool", flags.Pool, "run", pool.Run(), "in_flight", flags.Concurrency)
	}
	p := &replay.Printer{W: stdout, JSON: flags.Format == "json", OnlyChanged: flags.OnlyChanged}
	o := replay.Options{
		Pool:        pool,
		Done:        done,
		Store:       store,
		Filter:      try,
		Timeout:     spec.Timeout,
		Since:       flags.Since,
		Until:       flags.Until,
		Select:      flags.Select,
		Concurrency: flags.Concurrency,
		Limit:       flags.Limit,
		Logger:      log,
		TempDir:     cfg.TempDirectory,
	}
	if flags.DeliverTo != "" {
		o.DeliverTo = &replay.Deliverer{Addr: flags.DeliverTo}
		log.Warn("messages the filter accepts that were rejected or dropped before will be delivered", "to", flags.DeliverTo)
	}
	if progress != nil {
		o.Progress = progress.Update
		o.ProgressEvery = -1 // the bar shows it
	}
	report := p.Result
	var page *replay.HTML
	if flags.HTML != "" {
		what := fmt.Sprint(try)
		if pool != nil {
			what += " (on replay pool " + flags.Pool + ")"
		}
		page = replay.NewHTML(replay.HTMLMeta{Title: "sluice replay", Filter: what, Selection: flags.Select.String(),
			Since: flags.Since, Until: flags.Until, Started: time.Now()})
		report = func(r replay.Result) error {
			page.Add(r)
			return p.Result(r)
		}
	}
	sum, err := replay.Run(ctx, o, report)
	if progress != nil {
		progress.Done()
	}
	if perr := p.Summary(sum); perr != nil && err == nil {
		err = perr
	}
	if page != nil {
		page.Finished(time.Now())
		if herr := writeHTML(flags.HTML, page, sum); herr != nil {
			log.Error("cannot write the HTML report", "file", flags.HTML, "err", herr)
			if err == nil {
				err = herr
			}
		}
	}
	switch {
	case err != nil:
		log.Error("replay failed", "err", err, "complete", sum.Complete, "replayed", sum.Messages, "listed", sum.Listed)
		return 1
	case sum.Messages == 0:
		log.Error("no stored message matches the selection", "since", flags.Since.Format(replay.DayLayout),
			"until", flags.Until.Format(replay.DayLayout), "listed", sum.Listed, "selection", flags.Select.String())
		return 1
	case !sum.Complete:
		log.Error("the replay did not complete", "stopped", sum.Stopped, "replayed", sum.Messages, "listed", sum.Listed)
		return 1
	case sum.Errors > 0 && sum.Errors == sum.Messages:
		log.Error("no message could be replayed: the report says why for each", "errors", sum.Errors)
		return 1
	case sum.Errors > 0:
		log.Error("some messages could not be replayed", "errors", sum.Errors)
		return 1
	case sum.DeliveryFailed > 0:
		log.Error("some released messages were not delivered", "failed", sum.DeliveryFailed, "delivered", sum.Delivered)
		return 1
	}
	return 0
}

// openPool connects to the pool's NATS and checks that a worker serves
// it. The pool's jobs name the filter as replay would run it here.
func openPool(ctx context.Context, cfg *config.Config, flags replay.Flags, spec filter.Spec, log *slog.Logger) (*replay.Pool, func(), error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	q, err := queue.Dial(dctx, wiring.QueueOptions(cfg, "sluice-replay", log))
	if err != nil {
		return nil, nil, err
	}
	mode := "pipe"
	if spec.Mode == filter.File {
		mode = "file"
	}
	f := replay.FilterSpec{Command: spec.Command, Type: mode, TimeoutMS: spec.Timeout.Milliseconds(), Milters: cfg.Filter.Milters}
	p, err := replay.OpenPool(dctx, q.Conn(), q.JetStream(), flags.Pool, f, log)
	if err != nil {
		q.Close()
		return nil, nil, err
	}
	return p, q.Close, nil
}

// readResume reads an interrupted run's JSON report.
func readResume(path string) (map[string]replay.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return replay.ReadResume(f)
}

// writeHTML writes the page to a temporary file beside path and renames
// it into place, so that a page that is there is whole.
func writeHTML(path string, page *replay.HTML, sum replay.Summary) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := page.Write(f, sum); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
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
