package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/xid"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
)

// The replay pool. `replay --pool NAME` publishes one job per message on
// PoolStream, a work-queue stream of its own (production jobs never queue
// behind a replay's), subject sluice.replay.NAME.jobs.RUN. The workers
// that serve NAME (worker.replay_pools) share the durable consumer
// replay-NAME, run the job's filter over the stored message exactly as a
// local replay does (runner.one), and send the Result as a request on the
// job's reply subject, sluice.replay.NAME.results.RUN, which the command
// subscribes to and answers: a result nobody takes runs again, and a run
// whose command is gone (no responders) has its other jobs dropped. A job carries its filter, so a worker needs no restart
// to try a new one. A job whose worker dies is delivered again after
// poolAckWait; the command keeps the first result per message.
const (
	// PoolStream is the replay jobs' stream.
	PoolStream = "SLUICE_REPLAY"
	poolPrefix = "sluice.replay"
	// poolAckWait is how long a job may go without a heartbeat from its
	// worker before another worker gets it.
	poolAckWait = 30 * time.Second
	// poolMaxDeliver bounds the runs of one job: a message that kills its
	// worker does not take the pool down with it.
	poolMaxDeliver = 3
	// poolMaxAge drops jobs nobody took: a replay that was stopped
	// without its clean-up, or a pool with no worker left.
	poolMaxAge = 24 * time.Hour
	// DefaultNoWorkerAfter is how long jobs may wait, none of them taken
	// and no result coming, before the command gives up on the pool.
	DefaultNoWorkerAfter = 30 * time.Second
)

func poolJobs(pool string) string     { return poolPrefix + "." + pool + ".jobs" }
func poolResults(pool string) string  { return poolPrefix + "." + pool + ".results" }
func poolConsumer(pool string) string { return "replay-" + pool }

// FilterSpec is the filter a replay job names. The worker builds it with
// its own settings for everything else: TempDirectory, filter.env_allow,
// the milters' timeouts and default action.
type FilterSpec struct {
	Command   string   `json:"command,omitempty"`
	Type      string   `json:"type,omitempty"` // pipe or file
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Milters   []string `json:"milters,omitempty"`
}

// Timeout is the filter's time limit.
func (f FilterSpec) Timeout() time.Duration { return time.Duration(f.TimeoutMS) * time.Millisecond }

// poolJob is one message to replay on the pool.
type poolJob struct {
	Run    string     `json:"run"`
	Reply  string     `json:"reply"`
	Day    string     `json:"day"`
	ID     string     `json:"id"`
	Filter FilterSpec `json:"filter"`
	// Select is checked by the worker on the message's record: the time,
	// outcome, sender and recipient criteria (ids and samples are the
	// command's).
	Select    Selection `json:"select"`
	DeliverTo string    `json:"deliver_to,omitempty"`
}

// Pool is the command's side of a replay on a worker pool.
type Pool struct {
	name, run string
	nc        *nats.Conn
	js        jetstream.JetStream
	stream    jetstream.Stream
	cons      jetstream.Consumer
	sub       *nats.Subscription
	filter    FilterSpec
	log       *slog.Logger

	// NoWorkerAfter is how long jobs may wait untaken, with no result
	// coming, before Watch gives up; 0 is DefaultNoWorkerAfter.
	NoWorkerAfter time.Duration
	// StuckAfter is how long jobs may be held by workers with nothing
	// handed out or finished before Watch gives up; 0 is the filter's
	// timeout (at least 10 minutes) and the store's slack and the ack
	// wait.
	StuckAfter time.Duration

	mu       sync.Mutex
	waiting  map[string]chan Result
	activity atomic.Int64 // unix nanoseconds of the last result or start
}

// ErrNoWorker is the cause of a run stopped because no worker serves its
// pool.
var ErrNoWorker = errors.New("no worker serves the replay pool")

// OpenPool prepares a replay on pool name with filter f: the pool's
// consumer must exist (a worker serving it created it), and the results
// subject of this run is subscribed to.
func OpenPool(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, name string, f FilterSpec, log *slog.Logger) (*Pool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stream, err := js.Stream(ctx, PoolStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w %q: there is no stream %s; start a worker with worker.replay_pools: %s", ErrNoWorker, name, PoolStream, name)
	}
	if err != nil {
		return nil, fmt.Errorf("replay pool: stream %s: %w", PoolStream, err)
	}
	cons, err := stream.Consumer(ctx, poolConsumer(name))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("%w %q: no consumer %s on %s; start a worker with worker.replay_pools: %s", ErrNoWorker, name, poolConsumer(name), PoolStream, name)
	}
	if err != nil {
		return nil, fmt.Errorf("replay pool: consumer %s: %w", poolConsumer(name), err)
	}
	p := &Pool{name: name, run: xid.New().String(), nc: nc, js: js, stream: stream, cons: cons, filter: f, log: log,
		waiting: map[string]chan Result{}}
	p.activity.Store(time.Now().UnixNano())
	p.sub, err = nc.Subscribe(poolResults(name)+"."+p.run, p.onResult)
	if err != nil {
		return nil, fmt.Errorf("replay pool: subscribing to the results: %w", err)
	}
	return p, nil
}

// Run is the run's id: its jobs' and results' last subject token.
func (p *Pool) Run() string { return p.run }

func (p *Pool) String() string { return "pool " + p.name }

// onResult hands a result to the message waiting for it; a second result
// for a message (a job run again after its worker went silent) is dropped.
func (p *Pool) onResult(m *nats.Msg) {
	var r Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		p.log.Warn("replay pool: unreadable result", "pool", p.name, "err", err)
		return
	}
	p.activity.Store(time.Now().UnixNano())
	if m.Reply != "" {
		_ = m.Respond(nil) // taken: the worker may ack the job
	}
	p.mu.Lock()
	ch := p.waiting[r.ID]
	delete(p.waiting, r.ID)
	p.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// one replays m on the pool: it publishes the job and waits for its
// result, for at most wait.
func (p *Pool) one(ctx context.Context, m entry, o jobOptions) Result {
	ch := make(chan Result, 1)
	p.mu.Lock()
	p.waiting[m.id] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.waiting[m.id] == ch {
			delete(p.waiting, m.id)
		}
		p.mu.Unlock()
	}()
	job := poolJob{Run: p.run, Reply: poolResults(p.name) + "." + p.run, Day: dayString(m.day), ID: m.id,
		Filter: p.filter, Select: o.sel, DeliverTo: o.deliverTo}
	data, err := json.Marshal(job)
	if err != nil {
		return m.failed(err)
	}
	if err := p.publish(ctx, m.id, data); err != nil {
		return m.failed(err)
	}
	t := time.NewTimer(o.wait)
	defer t.Stop()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return m.failed(ctx.Err())
	case <-t.C:
		return m.failed(fmt.Errorf("no result from replay pool %s within %s", p.name, o.wait))
	}
}

// publish publishes a job, retrying through a JetStream leader election
// for up to 15 s; the message id makes a retry of a publish that did
// get through a duplicate the stream drops.
func (p *Pool) publish(ctx context.Context, id string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		_, err := p.js.Publish(ctx, poolJobs(p.name)+"."+p.run, data, jetstream.WithMsgID(p.run+"."+id))
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publishing the replay job: %w", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// Watch stops the run, through stop, when no worker takes its jobs. The
// pool shows life by results coming back, or by its consumer handing out
// or finishing jobs (another run's included). Without any for
// NoWorkerAfter while jobs wait and none is in progress, nobody pulls;
// without any for StuckAfter while jobs wait or are held, the workers
// holding them are gone (a worker that stopped may have taken a job it
// will never run, and NATS hands it out again only to a worker that
// asks). It returns when ctx ends.
func (p *Pool) Watch(ctx context.Context, stop context.CancelCauseFunc) {
	after := p.NoWorkerAfter
	if after <= 0 {
		after = DefaultNoWorkerAfter
	}
	stuck := p.StuckAfter
	if stuck <= 0 {
		stuck = max(p.filter.Timeout(), 10*time.Minute) + storeSlack + poolAckWait
	}
	tick := time.NewTicker(min(after/4, 2*time.Second))
	defer tick.Stop()
	var delivered, acked uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := p.cons.Info(ictx)
		cancel()
		if err != nil {
			continue // NATS itself is in trouble: the publishes say so
		}
		if info.Delivered.Consumer != delivered || info.AckFloor.Consumer != acked {
			delivered, acked = info.Delivered.Consumer, info.AckFloor.Consumer
			p.activity.Store(time.Now().UnixNano())
			continue
		}
		idle := time.Since(time.Unix(0, p.activity.Load()))
		p.log.Debug("replay pool: watching", "idle", idle, "pending", info.NumPending, "ack_pending", info.NumAckPending,
			"waiting", info.NumWaiting)
		switch {
		case idle >= after && info.NumAckPending == 0 && info.NumPending > 0:
			stop(fmt.Errorf("%w %q: %d jobs waiting, none taken for %s", ErrNoWorker, p.name, info.NumPending, idle.Round(time.Second)))
			return
		case idle >= stuck && info.NumPending+uint64(info.NumAckPending) > 0:
			stop(fmt.Errorf("%w %q: %d jobs waiting and %d held by workers, none handed out or finished for %s",
				ErrNoWorker, p.name, info.NumPending, info.NumAckPending, idle.Round(time.Second)))
			return
		}
	}
}

// Close drops the run's jobs no worker took yet and stops listening for
// results.
func (p *Pool) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.stream.Purge(ctx, jetstream.WithPurgeSubject(poolJobs(p.name)+"."+p.run)); err != nil {
		p.log.Warn("replay pool: could not drop the run's waiting jobs; they expire within a day", "pool", p.name, "run", p.run, "err", err)
	}
	_ = p.sub.Unsubscribe()
}

// jobOptions are what a pool job carries besides the message and filter.
type jobOptions struct {
	sel       Selection
	deliverTo string
	wait      time.Duration
}

// PoolServer is a worker's side of the replay pools: it takes jobs of the
// pools it serves and runs them.
type PoolServer struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Store    blob.Store
	Pools    []string
	Slots    int // filter runs at once per pool
	Replicas int // of PoolStream, when this worker creates it
	// Memory keeps PoolStream in memory (an embedded server's); else on
	// file.
	Memory  bool
	TempDir string // for the output of messages to release (--deliver-to)
	// Filter builds the job's filter; it may keep and reuse what it built.
	Filter func(FilterSpec) (filter.Filter, error)
	Logger *slog.Logger

	mu       sync.Mutex
	goneRuns []string // runs whose command no longer listens, newest last
}

// Serve creates the pool stream if missing and each pool's consumer, then
// runs jobs until ctx ends; jobs in progress then finish first.
func (s *PoolServer) Serve(ctx context.Context) error {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	log := s.Logger
	cons, err := s.setup(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it was set up
		}
		return err
	}
	var wg sync.WaitGroup
	for i, c := range cons {
		pool := s.Pools[i]
		for range max(s.Slots, 1) {
			wg.Go(func() { s.take(ctx, pool, c, log) })
		}
	}
	log.Info("serving replay pools", "pools", s.Pools, "slots", max(s.Slots, 1))
	wg.Wait()
	return nil
}

// setup makes sure of the stream and the consumers, retrying until ctx
// ends: a cluster may still be electing its leaders.
func (s *PoolServer) setup(ctx context.Context) ([]jetstream.Consumer, error) {
	wait := 100 * time.Millisecond
	for {
		cons, err := s.ensure(ctx)
		if err == nil {
			return cons, nil
		}
		s.Logger.Warn("replay pools: set-up failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("replay pools: %w", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (s *PoolServer) ensure(ctx context.Context) ([]jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := s.JS.Stream(ctx, PoolStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		storage := jetstream.FileStorage
		if s.Memory {
			storage = jetstream.MemoryStorage
		}
		stream, err = s.JS.CreateStream(ctx, jetstream.StreamConfig{
			Name:        PoolStream,
			Description: "sluice replay jobs (replay --pool)",
			Subjects:    []string{poolPrefix + ".*.jobs.>"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     storage,
			Replicas:    max(s.Replicas, 1),
			MaxAge:      poolMaxAge,
			Duplicates:  2 * time.Minute,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = s.JS.Stream(ctx, PoolStream) // another worker was first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", PoolStream, err)
	}
	var out []jetstream.Consumer
	for _, pool := range s.Pools {
		c, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       poolConsumer(pool),
			Description:   "sluice workers serving replay pool " + pool,
			FilterSubject: poolJobs(pool) + ".>",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       poolAckWait,
			MaxDeliver:    poolMaxDeliver,
			MaxAckPending: 10000,
		})
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", poolConsumer(pool), err)
		}
		out = append(out, c)
	}
	return out, nil
}

// take runs one job at a time of pool until ctx ends.
func (s *PoolServer) take(ctx context.Context, pool string, c jetstream.Consumer, log *slog.Logger) {
	for ctx.Err() == nil {
		// A short pull: one a stopped worker leaves at the server
		// expires soon, instead of holding a job for the ack wait.
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := c.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) &&
				!errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				log.Debug("replay pool: fetch", "pool", pool, "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		s.handle(context.WithoutCancel(ctx), pool, msg, log)
	}
}

// handle runs one job and answers it. The job runs to its end even when
// the worker is stopping: its result is what the command waits for.
func (s *PoolServer) handle(ctx context.Context, pool string, msg jetstream.Msg, log *slog.Logger) {
	var job poolJob
	if err := json.Unmarshal(msg.Data(), &job); err != nil || job.ID == "" || job.Reply == "" {
		log.Warn("replay pool: unreadable job dropped", "pool", pool, "err", err)
		_ = msg.Term()
		return
	}
	day, err := time.Parse(DayLayout, job.Day)
	if err != nil {
		_ = msg.Term()
		return
	}
	if s.gone(job.Run) {
		_ = msg.Term() // its command is gone: nobody waits for the result
		return
	}
	m := entry{day: day, id: job.ID, dir: blob.Dir(job.ID, day), message: true, record: true}
	res := s.run(ctx, job, m, msg)
	log.Debug("replay job done", "pool", pool, "id", job.ID, "status", res.Status)
	data, err := json.Marshal(res)
	if err == nil {
		err = s.answer(job.Reply, data)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		// The command stopped without dropping its jobs (killed): the
		// rest of its run is dropped unrun.
		if s.markGone(job.Run) {
			log.Info("replay run gone: dropping its jobs", "pool", pool, "run", job.Run)
		}
		_ = msg.Term()
	case err != nil:
		log.Warn("replay pool: result not taken; the job runs again", "pool", pool, "id", job.ID, "err", err)
		_ = msg.Nak()
	default:
		_ = msg.Ack()
	}
}

// answer sends a result and waits for the command to take it, trying
// three times; nats.ErrNoResponders when nobody listens any more.
func (s *PoolServer) answer(subject string, data []byte) error {
	var err error
	for range 3 {
		if _, err = s.NC.Request(subject, data, 10*time.Second); err == nil || errors.Is(err, nats.ErrNoResponders) {
			return err
		}
	}
	return err
}

// maxGone bounds the runs remembered as gone.
const maxGone = 64

// gone is whether run's command was found gone.
func (s *PoolServer) gone(run string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.goneRuns, run)
}

// markGone remembers run as gone; false when it already was.
func (s *PoolServer) markGone(run string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.goneRuns, run) {
		return false
	}
	if len(s.goneRuns) == maxGone {
		s.goneRuns = s.goneRuns[1:]
	}
	s.goneRuns = append(s.goneRuns, run)
	return true
}

// run replays one job's message with the job's filter, selection and
// release, keeping the job with heartbeats while it runs.
func (s *PoolServer) run(ctx context.Context, job poolJob, m entry, msg jetstream.Msg) Result {
	f, err := s.Filter(job.Filter)
	if err != nil {
		return m.failed(fmt.Errorf("the worker cannot use the filter: %w", err))
	}
	sel := job.Select
	sel.IDs, sel.Sample = nil, 0
	c, err := sel.compile()
	if err != nil {
		return m.failed(err)
	}
	r := &runner{store: readOnly{s.Store}, filter: f, timeout: job.Filter.Timeout(), sel: c, tempDir: s.TempDir}
	if job.DeliverTo != "" {
		r.deliver = &Deliverer{Addr: job.DeliverTo}
	}
	beat, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(poolAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-beat.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return r.one(ctx, m)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
