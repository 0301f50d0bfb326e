package queue

import (
	"context"
	"testing"
	"time"

	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// With AbandonWith, the jobs in flight end when that context does, so
// that a worker whose jobs nobody waits for stops at once; without it
// they finish (TestConsumeShutdownFinishesInFlight).
func TestAbandonWith(t *testing.T) {
	q := open(t, Options{})
	abandon, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	started := make(chan struct{})
	ended := make(chan error, 1)
	stop := consume(t, q, 1, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		close(started)
		<-ctx.Done() // a filter that would run until the job's deadline
		ended <- ctx.Err()
		return accept("w")(ctx, job, attempt)
	}, AbandonWith(abandon))
	s := submitter(t, q, "edge1")
	go submit(t, s, newJob("m1", time.Now().Add(time.Minute)), time.Minute)
	<-started
	giveUp()
	select {
	case err := <-ended:
		if err != context.Canceled {
			t.Errorf("job context ended with %v, want canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the job was not abandoned")
	}
	stop()
}
