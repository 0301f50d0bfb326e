package edge

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/session"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A verdict message sent while the edge is away from NATS is lost; the
// edge must still find the verdict the worker stored next to the message.
// The worker here is the real one, on the real embedded server; only the
// reply subject is pointed where no edge listens.
func TestPipelineReadsStoredVerdictWhenTheMessageIsLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := testLog(t)
	q, err := queue.Open(ctx, queue.Options{StoreDir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	store, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sub, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	w := &worker.Worker{ID: "w1", Store: store, Filter: filter.Command{Command: "cat", Timeout: 10 * time.Second, TempDir: t.TempDir()}, Logger: log}
	wctx, stopWorker := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- q.Consume(wctx, 1, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
			v := w.Handle(ctx, job, attempt)
			job.ReplySubject = "sluice.verdicts.nobody" // the verdict message goes astray
			return v
		})
	}()
	defer func() { stopWorker(); <-consumed }()

	p := &pipeline{store: store, sub: sub, edgeID: "edge1", jobTimeout: 30 * time.Second, retention: time.Hour, log: log}
	sender := "alice@example.com"
	start := time.Now()
	m, err := p.Filter(ctx, &session.Envelope{Sender: &sender, Recipients: []string{"bob@example.com"}, ClientAddr: "127.0.0.1"},
		strings.NewReader("Subject: lost\r\n\r\nbody\r\n"))
	if err != nil {
		// Without the stored verdict the edge waits out job_timeout.
		t.Fatalf("Filter: %v after %v", err, time.Since(start))
	}
	if m.Verdict.Action != session.ActionAccept {
		t.Fatalf("verdict %v for message %s", m.Verdict, m.ID)
	}
	rc, err := p.Open(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if string(got) != "Subject: lost\r\n\r\nbody\r\n" {
		t.Errorf("message to deliver %q", got)
	}
}
