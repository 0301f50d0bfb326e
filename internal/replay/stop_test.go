package replay

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// workerStore is an FS store with n messages of today, each filtered by
// the real worker with `cat`.
func workerStore(t *testing.T, n int) blob.Store {
	t.Helper()
	store, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &worker.Worker{ID: "test", Store: store, Filter: filter.Command{Command: "cat", Timeout: 30 * time.Second, TempDir: t.TempDir()}}
	ctx := context.Background()
	now := time.Now()
	for i := range n {
		id := fmt.Sprintf("m%03d", i)
		body := fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)
		key := func(name string) string { return blob.Key(id, now, name) }
		if _, err := store.Put(ctx, key(blob.MessageName), strings.NewReader(body), -1); err != nil {
			t.Fatal(err)
		}
		job := &sluicev1.FilterJob{MessageId: id, MessageKey: key(blob.MessageName), FilteredKey: key(blob.FilteredName),
			RecordKey: key(blob.RecordName), Recipients: []string{"bob@example.com"}, ClientAddr: "127.0.0.1"}
		if v := w.Handle(ctx, job, 1); v.GetAction() != sluicev1.Verdict_ACTION_ACCEPT {
			t.Fatalf("worker: %v", v)
		}
	}
	return store
}

// A canceled run stops its filters and reports nothing it cut short.
func TestRunCanceled(t *testing.T) {
	store := workerStore(t, 6)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := filepath.Join(t.TempDir(), "started")
	slow := filter.Command{Command: "touch " + started + ".$$; exec sleep 60", Timeout: 2 * time.Minute, TempDir: t.TempDir(),
		KillGrace: 100 * time.Millisecond}
	go func() {
		// Cancel once a filter runs.
		for ctx.Err() == nil {
			if m, _ := globCount(started + ".*"); m > 0 {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	done := make(chan struct{})
	var (
		sum    Summary
		err    error
		report int
	)
	now := time.Now()
	go func() {
		defer close(done)
		sum, err = Run(ctx, Options{Store: store, Filter: slow, Since: now, Until: now, Concurrency: 2},
			func(Result) error { report++; return nil })
	}()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("Run did not stop after its context was canceled")
	}
	if !errors.Is(err, context.Canceled) || report != 0 || sum.Messages != 0 {
		t.Errorf("canceled run: err %v, %d reported, summary %+v", err, report, sum)
	}
}

// A report that fails stops the run with that error.
func TestRunReportError(t *testing.T) {
	store := workerStore(t, 5)
	now := time.Now()
	boom := errors.New("stdout closed")
	n := 0
	sum, err := Run(context.Background(), Options{Store: store, Filter: filter.Command{Command: "cat", Timeout: 30 * time.Second, TempDir: t.TempDir()},
		Since: now, Until: now, Concurrency: 2}, func(Result) error {
		n++
		if n == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n != 2 || sum.Messages != 2 {
		t.Errorf("err %v, %d reports, summary %+v", err, n, sum)
	}
}

func globCount(pattern string) (int, error) {
	m, err := filepath.Glob(pattern)
	return len(m), err
}
