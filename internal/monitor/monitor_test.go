package monitor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/queue"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// start starts a monitor on a free loopback port and shuts it down when
// the test ends.
func start(t *testing.T, checks map[string]func(context.Context) error) *monitor.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := monitor.Start(ctx, "127.0.0.1:0", checks, monitor.NewRegistry("test-version"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

var client = &http.Client{Timeout: 30 * time.Second}

func get(t *testing.T, s *monitor.Server, path string) (int, string) {
	t.Helper()
	resp, err := client.Get("http://" + s.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// ready fetches /readyz and decodes its body.
func ready(t *testing.T, s *monitor.Server) (int, monitor.Readiness) {
	t.Helper()
	code, body := get(t, s, "/readyz")
	var rd monitor.Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if (code == http.StatusOK) != (len(rd.Failing) == 0) || (code != http.StatusOK && code != http.StatusServiceUnavailable) {
		t.Errorf("/readyz %d with failing %q", code, rd.Failing)
	}
	return code, rd
}

func openQueue(t *testing.T) *queue.Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{StoreDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func TestHealthz(t *testing.T) {
	s := start(t, map[string]func(context.Context) error{
		"broken": func(context.Context) error { return errors.New("down") },
	})
	// Liveness does not depend on readiness.
	if code, body := get(t, s, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	resp, err := client.Post("http://"+s.Addr().String()+"/healthz", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d", resp.StatusCode)
	}
	if code, _ := get(t, s, "/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d", code)
	}
}

func TestReadyz(t *testing.T) {
	q := openQueue(t)
	store, err := blob.NewFS(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, map[string]func(context.Context) error{
		"queue": q.Ready,
		"store": blob.ReadyCheck(store),
	})

	code, rd := ready(t, s)
	if code != http.StatusOK || rd.Status != "ready" {
		t.Fatalf("/readyz %d %+v", code, rd)
	}
	var names []string
	for _, c := range rd.Checks {
		names = append(names, c.Name)
		if !c.OK || c.Error != "" {
			t.Errorf("check %+v", c)
		}
	}
	if want := []string{"draining", "queue", "store"}; !slices.Equal(names, want) {
		t.Errorf("checks %q, want %q", names, want)
	}

	t.Run("failing check", func(t *testing.T) {
		s.SetCheck("extra", func(context.Context) error { return errors.New("extra is down") })
		defer s.SetCheck("extra", func(context.Context) error { return nil })
		code, rd := ready(t, s)
		if code != http.StatusServiceUnavailable || rd.Status != "not ready" || !slices.Equal(rd.Failing, []string{"extra"}) {
			t.Errorf("/readyz %d %+v", code, rd)
		}
		i := slices.IndexFunc(rd.Checks, func(c monitor.CheckResult) bool { return c.Name == "extra" })
		if i < 0 || rd.Checks[i].OK || rd.Checks[i].Error != "extra is down" {
			t.Errorf("checks %+v", rd.Checks)
		}
	})

	t.Run("hanging check", func(t *testing.T) {
		s.SetCheck("extra", func(ctx context.Context) error { <-ctx.Done(); return nil })
		defer s.SetCheck("extra", func(context.Context) error { return nil })
		code, rd := ready(t, s)
		if code != http.StatusServiceUnavailable || !slices.Equal(rd.Failing, []string{"extra"}) {
			t.Errorf("/readyz %d %+v", code, rd)
		}
	})

	if code, _ := ready(t, s); code != http.StatusOK {
		t.Fatalf("/readyz %d after the failing checks went", code)
	}

	t.Run("store gone", func(t *testing.T) {
		moved := store.Root() + ".moved"
		if err := os.Rename(store.Root(), moved); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(moved, store.Root())
		code, rd := ready(t, s)
		if code != http.StatusServiceUnavailable || !slices.Equal(rd.Failing, []string{"store"}) {
			t.Errorf("/readyz %d %+v", code, rd)
		}
	})

	t.Run("queue closed", func(t *testing.T) {
		q.Close()
		code, rd := ready(t, s)
		if code != http.StatusServiceUnavailable || !slices.Equal(rd.Failing, []string{"queue"}) {
			t.Errorf("/readyz %d %+v", code, rd)
		}
		i := slices.IndexFunc(rd.Checks, func(c monitor.CheckResult) bool { return c.Name == "queue" })
		if i < 0 || !strings.Contains(rd.Checks[i].Error, "CLOSED") {
			t.Errorf("checks %+v", rd.Checks)
		}
	})

	t.Run("draining", func(t *testing.T) {
		s.SetCheck("queue", func(context.Context) error { return nil })
		if code, _ := ready(t, s); code != http.StatusOK {
			t.Fatalf("/readyz %d before draining", code)
		}
		s.SetDraining()
		code, rd := ready(t, s)
		if code != http.StatusServiceUnavailable || !slices.Equal(rd.Failing, []string{"draining"}) {
			t.Errorf("/readyz %d %+v", code, rd)
		}
		// Liveness and metrics go on while draining.
		if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz %d while draining", code)
		}
		if code, _ := get(t, s, "/metrics"); code != http.StatusOK {
			t.Errorf("/metrics %d while draining", code)
		}
	})
}

func TestAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	s, err := monitor.Start(context.Background(), addr, nil, nil, testLogger(t))
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatal("Start on a busy address succeeded")
	}
	if !strings.Contains(err.Error(), "http_listen") || !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name http_listen and %s", err, addr)
	}
}

func TestShutdown(t *testing.T) {
	s, err := monitor.Start(context.Background(), "127.0.0.1:0", nil, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still listening after Shutdown")
	}
}

// metric returns the value of the sample named series (name with labels,
// as the text format writes it), or fails.
func metric(t *testing.T, s *monitor.Server, series string) string {
	t.Helper()
	code, body := get(t, s, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics %d", code)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", series, body)
	return ""
}

const body = "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"

func newJob(t *testing.T, store blob.Store, id string, deadline time.Time) *sluicev1.FilterJob {
	t.Helper()
	received := time.Now()
	sender := "<a@example.org>"
	job := &sluicev1.FilterJob{
		MessageId:   id,
		EdgeId:      "edge1",
		MessageKey:  blob.Key(id, received, blob.MessageName),
		FilteredKey: blob.Key(id, received, blob.FilteredName),
		RecordKey:   blob.Key(id, received, blob.RecordName),
		MessageSize: int64(len(body)),
		Received:    timestamppb.New(received),
		Deadline:    timestamppb.New(deadline),
		Sender:      &sender,
		Recipients:  []string{"<b@example.org>"},
		ClientAddr:  "192.0.2.1",
		ServerAddr:  "192.0.2.2",
	}
	if _, err := store.Put(context.Background(), job.MessageKey, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	return job
}

func TestWorkerMetrics(t *testing.T) {
	reg := monitor.NewRegistry("test-version")
	m := monitor.NewWorkerMetrics(reg)
	s, err := monitor.Start(context.Background(), "127.0.0.1:0", nil, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	// Everything shows from the start, at zero.
	for _, r := range []string{"accept", "reject", "drop", "tempfail", "skipped_expired", "skipped_invalid"} {
		if v := metric(t, s, `sluice_worker_jobs_total{result="`+r+`"}`); v != "0" {
			t.Errorf("%s = %s before any job", r, v)
		}
	}
	if v := metric(t, s, "sluice_worker_filter_seconds_count"); v != "0" {
		t.Errorf("filter runs %s before any job", v)
	}
	// The Go and process collectors are there, and the build's version.
	metric(t, s, "go_goroutines")
	metric(t, s, "process_open_fds")
	if v := metric(t, s, `sluice_build_info{goversion="`+runtime.Version()+`",version="test-version"}`); v != "1" {
		t.Errorf("sluice_build_info = %s", v)
	}

	store, err := blob.NewFS(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	w := &worker.Worker{
		ID:      "test-worker",
		Store:   store,
		Filter:  filter.Command{Command: "cat", Timeout: 30 * time.Second, TempDir: t.TempDir()},
		Logger:  testLogger(t),
		Metrics: m,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if v := w.Handle(ctx, newJob(t, store, "m1", time.Now().Add(time.Minute)), 1); v.Action != sluicev1.Verdict_ACTION_ACCEPT {
		t.Fatalf("verdict %v", v)
	}
	w.Filter = filter.Command{Command: `cat >/dev/null; echo '550 5.7.1 no' >&2; exit 1`, Timeout: 30 * time.Second, TempDir: t.TempDir()}
	if v := w.Handle(ctx, newJob(t, store, "m2", time.Now().Add(time.Minute)), 1); v.Action != sluicev1.Verdict_ACTION_REJECT {
		t.Fatalf("verdict %v", v)
	}
	for series, want := range map[string]string{
		`sluice_worker_jobs_total{result="accept"}`:   "1",
		`sluice_worker_jobs_total{result="reject"}`:   "1",
		`sluice_worker_jobs_total{result="tempfail"}`: "0",
		"sluice_worker_filter_seconds_count":          "2",
		"sluice_worker_slots_busy":                    "0",
	} {
		if v := metric(t, s, series); v != want {
			t.Errorf("%s = %s, want %s", series, v, want)
		}
	}

	// Through the queue: the slots show while the worker runs, and a job
	// whose deadline passed is counted as skipped.
	q := openQueue(t)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- worker.Run(rctx, q, w, 3) }()
	sub, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sctx, scancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = sub.Submit(sctx, newJob(t, store, "old", time.Now().Add(-time.Second)))
	scancel()
	if err == nil {
		t.Error("an expired job got a verdict")
	}
	waitFor(t, func() bool { return metric(t, s, `sluice_worker_jobs_total{result="skipped_expired"}`) == "1" })
	if v := metric(t, s, "sluice_worker_slots"); v != "3" {
		t.Errorf("slots %s while running, want 3", v)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if v := metric(t, s, "sluice_worker_slots"); v != "0" {
		t.Errorf("slots %s after Run, want 0", v)
	}
	if v := metric(t, s, "sluice_worker_filter_seconds_count"); v != "2" {
		t.Errorf("the skipped job ran a filter: %s runs", v)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}

func TestEdgeMetrics(t *testing.T) {
	reg := monitor.NewRegistry("test-version")
	m := monitor.NewEdgeMetrics(reg)
	s, err := monitor.Start(context.Background(), "127.0.0.1:0", nil, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	for _, st := range monitor.Statuses {
		if v := metric(t, s, `sluice_edge_messages_total{status="`+st+`"}`); v != "0" {
			t.Errorf("%s = %s at start", st, v)
		}
	}
	m.SessionStarted()
	m.SessionStarted()
	m.SessionEnded()
	m.Connection(monitor.ConnAccepted)
	m.Connection(monitor.ConnBusy)
	m.Connection("made up") // ignored: the label keeps its fixed values
	m.Message(monitor.StatusFiltered)
	m.Message(monitor.StatusRejected)
	m.Message(monitor.StatusRejected)
	m.Message(monitor.StatusUpstreamRefused)
	m.Message("550 5.7.1 made up") // ignored: the label keeps its fixed values
	m.SessionPanic()
	m.VerdictWait(1500 * time.Millisecond)
	m.MessageSize(5000)
	for series, want := range map[string]string{
		"sluice_edge_sessions_active":                                  "1",
		`sluice_edge_connections_total{result="accepted"}`:             "1",
		`sluice_edge_connections_total{result="busy"}`:                 "1",
		`sluice_edge_connections_total{result="upstream_unreachable"}`: "0",
		`sluice_edge_messages_total{status="filtered"}`:                "1",
		`sluice_edge_messages_total{status="rejected"}`:                "2",
		`sluice_edge_messages_total{status="upstream_refused"}`:        "1",
		"sluice_edge_session_panics_total":                             "1",
		"sluice_edge_verdict_wait_seconds_sum":                         "1.5",
		`sluice_edge_verdict_wait_seconds_bucket{le="1"}`:              "0",
		`sluice_edge_verdict_wait_seconds_bucket{le="2.5"}`:            "1",
		`sluice_edge_message_bytes_bucket{le="4096"}`:                  "0",
		`sluice_edge_message_bytes_bucket{le="16384"}`:                 "1",
	} {
		if v := metric(t, s, series); v != want {
			t.Errorf("%s = %s, want %s", series, v, want)
		}
	}
	code, body := get(t, s, "/metrics")
	if code != http.StatusOK || strings.Contains(body, "made up") {
		t.Errorf("/metrics %d has a made-up label", code)
	}

	// Nil metrics count nothing and do not panic.
	var nm *monitor.EdgeMetrics
	nm.SessionStarted()
	nm.SessionPanic()
	nm.SessionEnded()
	nm.Connection(monitor.ConnBusy)
	nm.Message("FILTERED")
	nm.VerdictWait(time.Second)
	nm.MessageSize(1)
	var ns *monitor.Server
	ns.SetCheck("x", nil)
	ns.SetDraining()
	if err := ns.Shutdown(context.Background()); err != nil {
		t.Errorf("nil Shutdown: %v", err)
	}
	var nw *monitor.WorkerMetrics
	nw.Job(monitor.ResultAccept)
	nw.FilterRan(time.Second)
	nw.Busy(1)
	nw.AddSlots(1)
}

func ExampleStart() {
	reg := monitor.NewRegistry("test-version")
	metrics := monitor.NewWorkerMetrics(reg)
	s, err := monitor.Start(context.Background(), "127.0.0.1:0", map[string]func(context.Context) error{
		"queue": func(context.Context) error { return nil }, // e.g. (*queue.Queue).Ready
	}, reg, nil)
	if err != nil {
		panic(err)
	}
	defer s.Shutdown(context.Background())
	metrics.Job(monitor.ResultAccept)

	resp, err := http.Get("http://" + s.Addr().String() + "/readyz")
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.StatusCode, " ", string(b))
	// Output: 200 {"status":"ready","checks":[{"name":"draining","ok":true},{"name":"queue","ok":true}]}
}
