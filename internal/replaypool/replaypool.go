// Package replaypool serves replay pools (worker.replay_pools) in a
// process that filters: a sluice-worker, or an edge with its embedded
// server and in-process workers. It builds each job's filter with the
// process's own settings for the rest.
package replaypool

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/milter"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/replay"
	"github.com/sluice-mail/sluice/internal/wiring"
)

// Serve serves the replay pools of worker.replay_pools, if any, until
// ctx ends, on q's NATS connection and store; wait returns once the jobs
// in progress are done. With an embedded server the pool stream is kept
// in memory, as the job stream is.
func Serve(ctx context.Context, cfg *config.Config, q *queue.Queue, store blob.Store, log *slog.Logger) (wait func()) {
	if len(cfg.Worker.ReplayPools) == 0 {
		return func() {}
	}
	filters := &replayFilters{cfg: cfg, log: log.With("component", "replay")}
	s := &replay.PoolServer{
		NC: q.Conn(), JS: q.JetStream(), Store: store,
		Pools: cfg.Worker.ReplayPools, Slots: cfg.Worker.ReplaySlots, Replicas: cfg.NATS.Replicas, Memory: q.Embedded(),
		TempDir: cfg.TempDirectory, Filter: filters.get, Logger: log.With("component", "replay"),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer filters.close()
		if err := s.Serve(ctx); err != nil && ctx.Err() == nil {
			log.Error("replay pools stopped", "err", err)
		}
	}()
	return func() { <-done }
}

// maxReplayFilters is how many filters replayFilters keeps: a replay's
// jobs all name one filter, and a milter chain keeps its connections.
const maxReplayFilters = 4

// replayFilters builds the filters replay jobs name, with this worker's
// settings for the rest (TempDirectory, filter.env_allow, the milters'
// timeouts and default action), and keeps the last few.
type replayFilters struct {
	cfg *config.Config
	log *slog.Logger

	mu    sync.Mutex
	built map[string]filter.Filter
	order []string // oldest first
}

func (r *replayFilters) get(spec replay.FilterSpec) (filter.Filter, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	key := string(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.built[key]; ok {
		return f, nil
	}
	c := *r.cfg
	c.FilterCommand = spec.Command
	switch spec.Type {
	case "", "pipe":
		c.FilterType = config.FilterTypePipe
	case "file":
		c.FilterType = config.FilterTypeFile
	default:
		return nil, fmt.Errorf("filter type %q: must be pipe or file", spec.Type)
	}
	if spec.TimeoutMS > 0 {
		c.FilterTimeout = spec.Timeout()
	}
	for _, m := range spec.Milters {
		if _, _, err := milter.ParseAddress(m); err != nil {
			return nil, fmt.Errorf("milter %q: %w", m, err)
		}
	}
	c.Filter.Milters = spec.Milters
	c.Worker.Slots = r.cfg.Worker.ReplaySlots // connections kept per milter
	fs := wiring.FilterSpec(&c)
	f, err := wiring.FilterOf(&c, fs, r.log)
	if err != nil {
		return nil, err
	}
	if f == nil {
		f = filter.Command(fs) // neither: the message as stored
	}
	if r.built == nil {
		r.built = map[string]filter.Filter{}
	}
	if len(r.order) == maxReplayFilters {
		// Jobs of the replay that used it may still be running: close
		// it once they must be done.
		old := r.built[r.order[0]]
		time.AfterFunc(r.cfg.FilterTimeout+time.Minute, func() { closeFilter(old) })
		delete(r.built, r.order[0])
		r.order = r.order[1:]
	}
	r.built[key] = f
	r.order = append(r.order, key)
	r.log.Info("replay filter ready", "filter", fmt.Sprint(f))
	return f, nil
}

func (r *replayFilters) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.built {
		closeFilter(f)
	}
	r.built, r.order = nil, nil
}

// closeFilter closes what a filter keeps open: a milter chain's
// connections and retries, alone or after a command.
func closeFilter(f filter.Filter) {
	if s, ok := f.(filter.Sequence); ok {
		f = s.Then
	}
	if c, ok := f.(interface{ Close() }); ok {
		c.Close()
	}
}
