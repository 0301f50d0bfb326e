package queue_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/queue"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// One process, zero setup: an embedded server, a worker and an edge.
func Example() {
	dir, err := os.MkdirTemp("", "sluice-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{StoreDir: dir}) // no URLs: embedded, no TCP port
	if err != nil {
		panic(err)
	}
	defer q.Close()

	// The worker side.
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- q.Consume(wctx, 4, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
			return &sluicev1.Verdict{Action: sluicev1.Verdict_ACTION_ACCEPT, DeliverKey: job.MessageKey}
		})
	}()

	// The edge side.
	s, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		panic(err)
	}
	defer s.Close()
	v, err := s.Submit(ctx, &sluicev1.FilterJob{
		MessageId:  "0001",
		MessageKey: "2024/01/02/0001/message.eml",
		Deadline:   timestamppb.New(time.Now().Add(10 * time.Second)),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Action, v.DeliverKey, v.Attempt)

	stop()
	<-done
	// Output: ACTION_ACCEPT 2024/01/02/0001/message.eml 1
}
