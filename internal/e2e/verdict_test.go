package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/smtptest"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// rogue is a NATS client that reaches the embedded server's port and
// plays worker: it pulls the next job and answers it as it likes.
type rogue struct {
	nc   *nats.Conn
	cons jetstream.Consumer
}

func newRogue(t *testing.T, url string) *rogue {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("rogue: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, "SLUICE_JOBS", "sluice-workers")
	if err != nil {
		t.Fatalf("rogue: the workers' consumer: %v", err)
	}
	return &rogue{nc: nc, cons: cons}
}

// answer pulls one job and sends the verdicts verdicts(job) makes, in
// order, then acks the job. It reports its failure on errc.
func (r *rogue) answer(verdicts func(*sluicev1.FilterJob) []*sluicev1.Verdict) <-chan error {
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			batch, err := r.cons.Fetch(1, jetstream.FetchMaxWait(20*time.Second))
			if err != nil {
				return err
			}
			msg, ok := <-batch.Messages()
			if !ok {
				return fmt.Errorf("no job within 20s: %v", batch.Error())
			}
			job := new(sluicev1.FilterJob)
			if err := proto.Unmarshal(msg.Data(), job); err != nil {
				return err
			}
			for _, v := range verdicts(job) {
				data, err := proto.Marshal(v)
				if err != nil {
					return err
				}
				if err := r.nc.Publish(job.ReplySubject, data); err != nil {
					return err
				}
			}
			return msg.Ack()
		}()
	}()
	return errc
}

// Issue 6 item 2: whoever reaches an open embedded NATS server can pull
// a job and answer it. A verdict that names another stored message to
// deliver is refused (4xx, nothing delivered, the log says why), and a
// verdict for another message id is ignored.
func TestForgedVerdict(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	h := start(t, smtptest.Config{},
		fmt.Sprintf("nats.listen: 127.0.0.1:%d", port), "worker.slots: 0",
		"FilterTimeout: 5", "nats.ack_wait: 10s", "job_timeout: 20s")
	// Another sender's message, stored earlier.
	store, err := blob.NewFS(h.cfg.Store.Dir)
	if err != nil {
		t.Fatal(err)
	}
	victim := blob.Key("victim0000000000000", time.Now(), blob.MessageName)
	const secret = "Subject: for Carol only\r\n\r\nthe secret\r\n"
	if _, err := store.Put(t.Context(), victim, strings.NewReader(secret), int64(len(secret))); err != nil {
		t.Fatal(err)
	}
	r := newRogue(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	c := h.hello(t)

	// An accept naming the victim's message, first under another message
	// id, then under the job's own.
	done := r.answer(func(job *sluicev1.FilterJob) []*sluicev1.Verdict {
		return []*sluicev1.Verdict{
			{MessageId: "someone-else", Action: sluicev1.Verdict_ACTION_ACCEPT, DeliverKey: victim, WorkerId: "rogue"},
			{MessageId: job.MessageId, Action: sluicev1.Verdict_ACTION_ACCEPT, DeliverKey: victim, WorkerId: "rogue"},
		}
	})
	own(t, sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1), 451)
	if err := <-done; err != nil {
		t.Fatalf("rogue: %v", err)
	}

	// A verdict for another message id changes nothing: the job's own
	// verdict after it decides.
	const no = "550 5.7.1 rogue says no"
	done = r.answer(func(job *sluicev1.FilterJob) []*sluicev1.Verdict {
		return []*sluicev1.Verdict{
			{MessageId: job.MessageId + "x", Action: sluicev1.Verdict_ACTION_ACCEPT, DeliverKey: job.MessageKey, WorkerId: "rogue"},
			{MessageId: job.MessageId, Action: sluicev1.Verdict_ACTION_REJECT, Reply: no, Status: no, WorkerId: "rogue"},
		}
	})
	if rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1); rep.Line() != no {
		t.Errorf("after a verdict for another message id and the job's reject: %q, want %q", rep.String(), no)
	}
	if err := <-done; err != nil {
		t.Fatalf("rogue: %v", err)
	}
	c.CmdLine("QUIT", smtptest.ReplyBye)

	h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cMAIL, cRCPT, cRSET, cQUIT)
	lines := h.logs.messageLines()
	if len(lines) != 2 || !strings.Contains(lines[0], "status=FILTER-ERROR") ||
		!strings.Contains(lines[0], "neither this message nor its filtered copy") || !strings.Contains(lines[0], victim) {
		t.Errorf("message log lines %q: want the first to say the verdict named %s", lines, victim)
	}
	if !h.logs.contains("verdict refused") {
		t.Error("no warning about the refused verdict")
	}
}
