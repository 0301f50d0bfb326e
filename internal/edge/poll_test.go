package edge

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/queue"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Issue 8: a verdict that has arrived is acted on at once, even while a
// look for the stored verdict hangs in a stalled store.
func TestPipelineVerdictDoesNotWaitForAStalledPoll(t *testing.T) {
	b := newBed(t)
	polling := make(chan struct{})
	var once sync.Once
	store := &storeFuncs{Store: b.local, get: func(ctx context.Context, key string) (io.ReadCloser, error) {
		if !strings.HasSuffix(key, blob.RecordName) {
			return b.local.Get(ctx, key)
		}
		once.Do(func() { close(polling) })
		<-ctx.Done() // the store hangs
		return nil, ctx.Err()
	}}
	sentAt := make(chan time.Time, 1)
	b.consume(t, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		select { // answer while the edge's look hangs
		case <-polling:
		case <-ctx.Done():
		}
		sentAt <- time.Now()
		return accept(ctx, job, attempt)
	})
	const jobTimeout = 2 * time.Minute
	p := b.pipeline(t, store, jobTimeout)
	done := filterAsync(t, p, strings.NewReader("Subject: verdict\r\n\r\nbody\r\n"))
	sent := <-sentAt
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Filter: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("verdict sent %v ago and Filter still waits (job_timeout %v): it waits for the stalled store",
			time.Since(sent).Round(time.Second), jobTimeout)
	}
}

// Issue 8: the looks do not pile up in a store that hangs: at most one
// at a time, each ended after the poll interval.
func TestPipelinePollsOneAtATime(t *testing.T) {
	b := newBed(t)
	var mu sync.Mutex
	inFlight, most, looks := 0, 0, 0
	store := &storeFuncs{Store: b.local, get: func(ctx context.Context, key string) (io.ReadCloser, error) {
		if !strings.HasSuffix(key, blob.RecordName) {
			return b.local.Get(ctx, key)
		}
		mu.Lock()
		inFlight++
		looks++
		most = max(most, inFlight)
		mu.Unlock()
		<-ctx.Done()
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil, ctx.Err()
	}}
	// No worker: the edge waits out job_timeout, looking meanwhile.
	p := b.pipeline(t, store, 3*time.Second)
	p.recordPoll = 200 * time.Millisecond
	select {
	case err := <-filterAsync(t, p, strings.NewReader("Subject: nobody\r\n\r\nbody\r\n")):
		var se *queue.SubmitError
		if !errors.As(err, &se) || se.Step != queue.StepVerdict {
			t.Errorf("Filter: %v, want no verdict in time", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Filter still waiting 30s after the final dot, with job_timeout 3s")
	}
	// The last look ends with the wait.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		left := inFlight
		mu.Unlock()
		if left == 0 || time.Now().After(end) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 1 || looks < 2 || inFlight != 0 {
		t.Errorf("%d looks, at most %d at once, %d still running 10s after the wait: want several, one at a time, none left", looks, most, inFlight)
	}
}
