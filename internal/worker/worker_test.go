package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/milter"
	"github.com/sluice-mail/sluice/internal/miltertest"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

const body = "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"

func newWorker(t *testing.T, command string) (*Worker, *blob.FS) {
	t.Helper()
	store, err := blob.NewFS(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{
		ID:     "test-worker",
		Store:  store,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if command != "" {
		w.Filter = filter.Command{Command: command, Timeout: 30 * time.Second, TempDir: t.TempDir()}
	}
	return w, store
}

// tune changes the settings of the worker's filter command.
func tune(w *Worker, f func(*filter.Command)) {
	c := w.Filter.(filter.Command)
	f(&c)
	w.Filter = c
}

// newJob stores body as a received message and returns its job.
func newJob(t *testing.T, store blob.Store, id, body string) *sluicev1.FilterJob {
	t.Helper()
	received := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	sender := "<a@example.org>"
	job := &sluicev1.FilterJob{
		MessageId:   id,
		EdgeId:      "edge1",
		MessageKey:  blob.Key(id, received, blob.MessageName),
		FilteredKey: blob.Key(id, received, blob.FilteredName),
		RecordKey:   blob.Key(id, received, blob.RecordName),
		MessageSize: int64(len(body)),
		Received:    timestamppb.New(received),
		Deadline:    timestamppb.New(time.Now().Add(time.Minute)),
		Sender:      &sender,
		Recipients:  []string{"<b@example.org>", "<c@example.org>"},
		ClientAddr:  "192.0.2.1",
		ServerAddr:  "192.0.2.2",
	}
	if body != "" {
		if _, err := store.Put(context.Background(), job.MessageKey, strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	return job
}

func handle(t *testing.T, w *Worker, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), job.Deadline.AsTime())
	defer cancel()
	v := w.Handle(ctx, job, attempt)
	if v == nil {
		t.Fatal("nil verdict")
	}
	if v.MessageId != job.MessageId || v.WorkerId != "test-worker" || v.Attempt != attempt {
		t.Errorf("verdict id %q worker %q attempt %d", v.MessageId, v.WorkerId, v.Attempt)
	}
	if v.Started == nil || v.Finished == nil || v.Finished.AsTime().Before(v.Started.AsTime()) {
		t.Errorf("verdict times %v .. %v", v.Started, v.Finished)
	}
	return v
}

func read(t *testing.T, store blob.Store, key string) (string, error) {
	t.Helper()
	rc, err := store.Get(context.Background(), key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// checkRecord reads the stored verdict record and checks that it is readable,
// multi-line protojson holding the job and v.
func checkRecord(t *testing.T, store blob.Store, job *sluicev1.FilterJob, v *sluicev1.Verdict) {
	t.Helper()
	data, err := read(t, store, job.RecordKey)
	if err != nil {
		t.Fatalf("verdict record: %v", err)
	}
	if strings.Count(data, "\n") < 5 {
		t.Errorf("record is not multi-line:\n%s", data)
	}
	var rec sluicev1.VerdictRecord
	if err := protojson.Unmarshal([]byte(data), &rec); err != nil {
		t.Fatalf("record does not decode: %v\n%s", err, data)
	}
	if !proto.Equal(rec.Job, job) || !proto.Equal(rec.Verdict, v) {
		t.Errorf("record holds %v", &rec)
	}
}

func TestNoFilterCommand(t *testing.T) {
	w, store := newWorker(t, "")
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || v.DeliverKey != job.MessageKey ||
		v.DeliverSize != int64(len(body)) || v.Status != "" || v.Reply != "" {
		t.Errorf("verdict %v", v)
	}
	if _, err := read(t, store, job.FilteredKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("a filtered copy was made: %v", err)
	}
	checkRecord(t, store, job, v)
}

func TestCat(t *testing.T) {
	w, store := newWorker(t, "cat")
	// Big enough to need streaming through the pipe.
	big := body + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 40000)
	job := newJob(t, store, "m1", big)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || v.DeliverKey != job.FilteredKey ||
		v.DeliverSize != int64(len(big)) || v.ExitCode != 0 || v.Reply != "" {
		t.Fatalf("verdict %v", v)
	}
	if got, err := read(t, store, job.FilteredKey); err != nil || got != big {
		t.Errorf("filtered message: %d bytes, %v; want the original", len(got), err)
	}
	checkRecord(t, store, job, v)
}

func TestFilterSeesEnvelope(t *testing.T) {
	w, store := newWorker(t, `printf '%s|%s|%s|%s\n' "$SENDER" "$RECIPIENTS" "$CLIENT" "$SERVER"; cat`)
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1)
	got, err := read(t, store, job.FilteredKey)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || err != nil {
		t.Fatalf("verdict %v, %v", v, err)
	}
	want := "<a@example.org>|<b@example.org>\n<c@example.org>|192.0.2.1|192.0.2.2\n" + body
	if got != want {
		t.Errorf("filter output %q, want %q", got, want)
	}
}

func TestRejectingFilter(t *testing.T) {
	w, store := newWorker(t, `cat >/dev/null; echo '550 no' >&2; exit 1`)
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_REJECT || !strings.HasPrefix(v.Reply, "550") ||
		!strings.Contains(v.Reply, "no") || v.ExitCode != 1 || v.DeliverKey != "" {
		t.Errorf("verdict %v", v)
	}
	if _, err := read(t, store, job.FilteredKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("a rejected message left a filtered copy: %v", err)
	}
	checkRecord(t, store, job, v)
}

func TestRecordShortCircuit(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	w, store := newWorker(t, fmt.Sprintf("echo run >> '%s'; cat", marker))
	job := newJob(t, store, "m1", body)
	first := handle(t, w, job, 1)
	if first.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Fatalf("verdict %v", first)
	}
	// The ack was lost and the job comes back.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second := w.Handle(ctx, job, 2)
	if !proto.Equal(first, second) {
		t.Errorf("second verdict %v, want the recorded %v", second, first)
	}
	runs, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(runs), "run"); n != 1 {
		t.Errorf("filter ran %d times", n)
	}

	// A record of another message at that key does not count.
	other := newJob(t, store, "m2", body)
	other.RecordKey = job.RecordKey
	if v := handle(t, w, other, 1); v.MessageId != "m2" {
		t.Errorf("verdict for %q", v.MessageId)
	}
	if runs, _ := os.ReadFile(marker); strings.Count(string(runs), "run") != 2 {
		t.Errorf("filter did not run for a different message")
	}
}

func TestStoreFailures(t *testing.T) {
	w, store := newWorker(t, "cat")
	check := func(name string, v *sluicev1.Verdict, detail string) {
		t.Helper()
		if v.Action != sluicev1.Verdict_ACTION_TEMPFAIL || v.Reply != storeFailReply ||
			v.Status != storeFailStatus || !strings.Contains(v.Detail, detail) {
			t.Errorf("%s: verdict %v", name, v)
		}
	}

	// The message is missing.
	job := newJob(t, store, "missing", "")
	v := handle(t, w, job, 1)
	check("missing message", v, "not found")
	checkRecord(t, store, job, v)

	// The filtered message cannot be stored.
	job = newJob(t, store, "badput", body)
	job.FilteredKey = "../outside"
	v = handle(t, w, job, 1)
	check("failed put", v, "")
	if v.Detail == "" {
		t.Error("no detail for a failed put")
	}

	// The record cannot be stored: the verdict still comes back.
	job = newJob(t, store, "badrecord", body)
	job.RecordKey = ""
	v = handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Errorf("verdict %v without a record key", v)
	}
}

// TestRunWithQueue is the worker on a real embedded NATS server: a job
// submitted by an edge comes back filtered.
func TestRunWithQueue(t *testing.T) {
	w, store := newWorker(t, "tr a-z A-Z")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{StoreDir: t.TempDir(), Logger: w.Logger})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(rctx, q, w, 2) }()

	s, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	job := newJob(t, store, "m1", body)
	job.Deadline = timestamppb.New(time.Now().Add(20 * time.Second))
	v, err := s.Submit(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || v.Attempt != 1 || v.WorkerId != "test-worker" {
		t.Errorf("verdict %v", v)
	}
	if got, _ := read(t, store, v.DeliverKey); !bytes.Equal([]byte(got), []byte(strings.ToUpper(body))) {
		t.Errorf("delivered %q", got)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestDroppingAndFailingFilters(t *testing.T) {
	w, store := newWorker(t, `cat >/dev/null; echo '250 2.0.0 dropped' >&2; exit 1`)
	job := newJob(t, store, "drop", body)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_DROP || !strings.HasPrefix(v.Reply, "250") || v.DeliverKey != "" {
		t.Errorf("drop: verdict %v", v)
	}
	if _, err := read(t, store, job.FilteredKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("a dropped message left a filtered copy: %v", err)
	}

	// A filter killed by a signal: the filter package's own 4xx, not the
	// store-failure one.
	tune(w, func(c *filter.Command) { c.Command = `cat >/dev/null; kill -9 $$` })
	job = newJob(t, store, "killed", body)
	v = handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_TEMPFAIL || !strings.HasPrefix(v.Reply, "4") || v.ExitCode != -1 {
		t.Errorf("killed: verdict %v", v)
	}
	checkRecord(t, store, job, v)
}

// stallingStore holds up the upload of filtered messages: its Put takes
// nothing for delay (or until ctx ends, as an S3 client gives up), then
// stores, or fails with fail.
type stallingStore struct {
	blob.Store
	delay time.Duration
	fail  error
}

func (s *stallingStore) Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	if strings.HasSuffix(key, blob.FilteredName) {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if s.fail != nil {
			return 0, s.fail
		}
	}
	return s.Store.Put(ctx, key, r, size)
}

// TestSlowStore: a store that stalls after the filter is done is not the
// filter's fault. When it recovers the message is delivered; when it
// fails, or stalls past the job's deadline, the sender gets the store's
// 4xx, not the filter's.
func TestSlowStore(t *testing.T) {
	tests := []struct {
		name     string
		delay    time.Duration
		fail     error
		deadline time.Duration
		want     sluicev1.Verdict_Action
	}{
		{"recovers", 1500 * time.Millisecond, nil, time.Minute, sluicev1.Verdict_ACTION_ACCEPT},
		{"fails", time.Second, errors.New("s3: service unavailable"), time.Minute, sluicev1.Verdict_ACTION_TEMPFAIL},
		{"stalls past the deadline", time.Hour, nil, 1500 * time.Millisecond, sluicev1.Verdict_ACTION_TEMPFAIL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, store := newWorker(t, "cat")
			tune(w, func(c *filter.Command) { c.KillGrace = 300 * time.Millisecond })
			w.Store = &stallingStore{Store: store, delay: tt.delay, fail: tt.fail}
			job := newJob(t, store, "m1", body)
			job.Deadline = timestamppb.New(time.Now().Add(tt.deadline))
			v := handle(t, w, job, 1)
			if v.Action != tt.want {
				t.Fatalf("verdict %v, want %v", v, tt.want)
			}
			if tt.want == sluicev1.Verdict_ACTION_ACCEPT {
				if got, err := read(t, store, v.DeliverKey); err != nil || got != body {
					t.Errorf("delivered %q, %v", got, err)
				}
				return
			}
			if v.Reply != storeFailReply || v.Status != storeFailStatus {
				t.Errorf("verdict %v, want the store's %q", v, storeFailReply)
			}
		})
	}
}

// TestOutputTooLarge: a filter that writes more than filter.max_output_size
// is stopped, the sender gets a 4xx, and nothing is stored for delivery.
func TestOutputTooLarge(t *testing.T) {
	w, store := newWorker(t, "cat; head -c 200000 /dev/zero")
	tune(w, func(c *filter.Command) { c.MaxOutput = 100_000 })
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_TEMPFAIL || !strings.HasPrefix(v.Reply, "451 4.3.4 ") ||
		!strings.Contains(v.Detail, "filter.max_output_size") || v.DeliverKey != "" {
		t.Errorf("verdict %v", v)
	}
	if _, err := read(t, store, job.FilteredKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("the oversized output was stored: %v", err)
	}
	checkRecord(t, store, job, v)
}

// heldRecordStore holds every Put of a verdict record until release is
// closed.
type heldRecordStore struct {
	blob.Store
	release chan struct{}
}

func (s *heldRecordStore) Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	if strings.HasSuffix(key, blob.RecordName) {
		<-s.release
	}
	return s.Store.Put(ctx, key, r, size)
}

// A store that hangs on the verdict record does not hold the verdict back
// (issue 6, fault test "StalledPoll": every verdict came 30 s late); the
// record is stored once the store answers, and Run-style waiting sees it.
func TestVerdictDoesNotWaitForAHungRecord(t *testing.T) {
	w, store := newWorker(t, "cat")
	held := &heldRecordStore{Store: store, release: make(chan struct{})}
	w.Store = held
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1) // returns although the record's Put hangs
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Fatalf("verdict %v", v)
	}
	if _, err := read(t, store, job.RecordKey); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("record stored while its Put hangs: %v", err)
	}
	close(held.release)
	w.records.Wait()
	checkRecord(t, store, job, v)
}

// Every verdict and every skip is counted under its own result, and only
// under one of the metric's fixed values.
func TestMetricResults(t *testing.T) {
	for a, want := range map[sluicev1.Verdict_Action]string{
		sluicev1.Verdict_ACTION_ACCEPT:      monitor.ResultAccept,
		sluicev1.Verdict_ACTION_REJECT:      monitor.ResultReject,
		sluicev1.Verdict_ACTION_DROP:        monitor.ResultDrop,
		sluicev1.Verdict_ACTION_TEMPFAIL:    monitor.ResultTempFail,
		sluicev1.Verdict_ACTION_UNSPECIFIED: monitor.ResultTempFail,
		sluicev1.Verdict_Action(42):         monitor.ResultTempFail,
	} {
		if got := jobResult(a); got != want {
			t.Errorf("jobResult(%v) = %q, want %q", a, got, want)
		}
	}
	if got := skipResult(queue.SkipExpired); got != monitor.ResultSkippedExpired {
		t.Errorf("skipResult(expired) = %q", got)
	}
	if got := skipResult(queue.SkipInvalid); got != monitor.ResultSkippedInvalid {
		t.Errorf("skipResult(invalid) = %q", got)
	}
}

// jobList is a Consumer without NATS: it hands its jobs to the handler,
// slots at a time, and keeps the verdicts.
type jobList struct {
	jobs     []*sluicev1.FilterJob
	verdicts chan *sluicev1.Verdict
}

func (l *jobList) Consume(ctx context.Context, slots int, h queue.Handler, _ ...queue.ConsumeOption) error {
	sem := make(chan struct{}, slots)
	for _, job := range l.jobs {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			l.verdicts <- h(ctx, job, 1)
		}()
	}
	for range slots {
		sem <- struct{}{}
	}
	return nil
}

// Run drives a worker through any Consumer: the worker can be tested and
// changed without a NATS server.
func TestRunWithAConsumer(t *testing.T) {
	w, store := newWorker(t, `cat; echo "X-Seen: yes"`)
	l := &jobList{verdicts: make(chan *sluicev1.Verdict, 3)}
	for _, id := range []string{"m1", "m2", "m3"} {
		l.jobs = append(l.jobs, newJob(t, store, id, body))
	}
	if err := Run(t.Context(), l, w, 2); err != nil {
		t.Fatal(err)
	}
	close(l.verdicts)
	seen := map[string]bool{}
	for v := range l.verdicts {
		if v.Action != sluicev1.Verdict_ACTION_ACCEPT {
			t.Errorf("verdict %v", v)
			continue
		}
		seen[v.MessageId] = true
		if got, err := read(t, store, v.DeliverKey); err != nil || !strings.HasSuffix(got, "X-Seen: yes\n") {
			t.Errorf("%s: delivered %q, %v", v.MessageId, got, err)
		}
	}
	if len(seen) != 3 {
		t.Errorf("verdicts for %v, want m1, m2 and m3", seen)
	}
}

// A milter chain that changes nothing delivers the stored message itself:
// no filtered copy is written (filter.Result.Unchanged). One that adds a
// header writes the copy; behind a FilterCommand, an unchanged chain
// delivers the command's output.
func TestMilterUnchangedDeliversTheMessage(t *testing.T) {
	chain := func(t *testing.T, st *miltertest.Peer) filter.Filter {
		c, err := milter.New(milter.Config{Milters: []string{miltertest.Start(t, st)}, TempDir: t.TempDir(),
			CommandTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	w, store := newWorker(t, "")
	accepts := &miltertest.Peer{}
	w.Filter = chain(t, accepts)
	job := newJob(t, store, "m1", body)
	v := handle(t, w, job, 1)
	if v.Action != sluicev1.Verdict_ACTION_ACCEPT || v.DeliverKey != job.MessageKey || v.DeliverSize != int64(len(body)) {
		t.Fatalf("unchanged: verdict %v, want the stored message delivered", v)
	}
	if _, err := read(t, store, job.FilteredKey); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("unchanged, yet a filtered copy was made: %v", err)
	}
	if got := accepts.Body(); got != "hello\r\n" {
		t.Errorf("the milter read the body %q from the stored file", got)
	}
	checkRecord(t, store, job, v)

	w.Filter = chain(t, &miltertest.Peer{EOM: func(m gomilter.Modifier) (*gomilter.Response, error) {
		return gomilter.RespAccept, m.AddHeader("X-Checked", "yes")
	}})
	job = newJob(t, store, "m2", body)
	v = handle(t, w, job, 1)
	if got, err := read(t, store, job.FilteredKey); v.DeliverKey != job.FilteredKey || err != nil ||
		got != strings.Replace(body, "\r\n\r\n", "\r\nX-Checked: yes\r\n\r\n", 1) || v.DeliverSize != int64(len(got)) {
		t.Errorf("a header added: verdict %v, filtered copy %q (%v)", v, got, err)
	}

	w.Filter = filter.Sequence{First: filter.Command{Command: "sed s/hello/bonjour/", Timeout: 30 * time.Second,
		TempDir: t.TempDir()}, Then: chain(t, &miltertest.Peer{}), TempDir: t.TempDir()}
	job = newJob(t, store, "m3", body)
	v = handle(t, w, job, 1)
	if got, err := read(t, store, job.FilteredKey); v.DeliverKey != job.FilteredKey || err != nil ||
		got != strings.Replace(body, "hello", "bonjour", 1) {
		t.Errorf("command then unchanged milter: verdict %v, filtered copy %q (%v)", v, got, err)
	}
}
