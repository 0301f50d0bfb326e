package edge

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/session"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// A store that stops answering (S3 stopped with SIGSTOP) is simulated by
// storeFuncs: Put and Get as the test says, the local store otherwise.
type storeFuncs struct {
	blob.Store
	put func(ctx context.Context, key string, r io.Reader) (int64, error)
	get func(ctx context.Context, key string) (io.ReadCloser, error)
}

func (s *storeFuncs) Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	if s.put != nil {
		return s.put(ctx, key, r)
	}
	return s.Store.Put(ctx, key, r, size)
}

func (s *storeFuncs) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if s.get != nil {
		return s.get(ctx, key)
	}
	return s.Store.Get(ctx, key)
}

// bed is an embedded queue with a submitter and a local store, for a
// pipeline under test; consume answers its jobs.
type bed struct {
	q     *queue.Queue
	sub   *queue.Submitter
	local blob.Store
}

func newBed(t *testing.T) *bed {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{StoreDir: t.TempDir(), Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	sub, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	local, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &bed{q: q, sub: sub, local: local}
}

func (b *bed) pipeline(t *testing.T, store blob.Store, jobTimeout time.Duration) *pipeline {
	return &pipeline{store: store, sub: b.sub, edgeID: "edge1", jobTimeout: jobTimeout, retention: time.Hour, log: testLog(t)}
}

// consume answers jobs with h until the test ends.
func (b *bed) consume(t *testing.T, h queue.Handler) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.q.Consume(ctx, 1, h) }()
	t.Cleanup(func() { stop(); <-done })
}

func envelope() *session.Envelope {
	sender := "alice@example.com"
	return &session.Envelope{Sender: &sender, Recipients: []string{"bob@example.com"}, ClientAddr: "127.0.0.1", ClientHelo: "client.example"}
}

// accept is a worker that delivers the message as received.
func accept(_ context.Context, job *sluicev1.FilterJob, _ uint32) *sluicev1.Verdict {
	return &sluicev1.Verdict{MessageId: job.MessageId, Action: sluicev1.Verdict_ACTION_ACCEPT, DeliverKey: job.MessageKey}
}

// filterAsync runs p.Filter on body in the background; the session's own
// context has no deadline, as in the edge.
func filterAsync(t *testing.T, p *pipeline, body io.Reader) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // releases a Filter that never returned
	done := make(chan error, 1)
	go func() {
		_, err := p.Filter(ctx, envelope(), body)
		done <- err
	}()
	return done
}
