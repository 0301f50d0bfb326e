package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/queue"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// The test binary doubles as the worker: a child started with this
// variable set runs main's run with its environment.
const childEnv = "WORKER_MAIN_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(nil, os.Environ()))
	}
	os.Exit(m.Run())
}

// child is a worker process started by a test.
type child struct {
	cmd  *exec.Cmd
	addr chan string // the monitoring address, once logged
	done chan error  // Wait's result

	mu     sync.Mutex
	stderr strings.Builder
}

var listeningRE = regexp.MustCompile(`monitoring endpoint listening.*addr=(\S+)`)

func startWorker(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, addr: make(chan string, 1), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.stderr.WriteString(line + "\n")
			c.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case c.addr <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		t.Logf("worker stderr:\n%s", c.log())
	})
	return c
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

func (c *child) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("worker: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not exit")
	}
	return -1
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestDrainOnSIGTERM runs the worker against a NATS server, holds a job in
// its filter, sends SIGTERM and sees readiness fail while the job
// finishes.
func TestDrainOnSIGTERM(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ns, err := queue.StartServer(queue.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, queue.Options{URLs: []string{ns.ClientURL()}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sub, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	store, err := blob.NewFS(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(dir, "go")
	started := filepath.Join(dir, "started")
	c := startWorker(t,
		"SLUICE_NATS_URL="+ns.ClientURL(),
		"SLUICE_STORE_DIR="+storeDir,
		"SLUICE_DATA_DIR="+filepath.Join(dir, "data"),
		"SLUICE_TEMPDIRECTORY="+dir,
		"SLUICE_HTTP_LISTEN=127.0.0.1:0",
		"SLUICE_WORKER_SLOTS=1",
		fmt.Sprintf("SLUICE_FILTERCOMMAND=touch '%s'; while [ ! -e '%s' ]; do sleep 0.05; done; cat", started, gate),
	)
	var base string
	select {
	case a := <-c.addr:
		base = "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatal("the worker never logged its monitoring address")
	}
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	waitFor(t, "readiness", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })
	_, metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, "sluice_worker_slots 1\n") {
		t.Errorf("/metrics lacks the slots:\n%s", metrics)
	}

	received := time.Now()
	job := &sluicev1.FilterJob{
		MessageId:   "m1",
		EdgeId:      "edge1",
		MessageKey:  blob.Key("m1", received, blob.MessageName),
		FilteredKey: blob.Key("m1", received, blob.FilteredName),
		RecordKey:   blob.Key("m1", received, blob.RecordName),
		Received:    timestamppb.New(received),
		Deadline:    timestamppb.New(time.Now().Add(45 * time.Second)),
		Recipients:  []string{"<b@example.org>"},
	}
	msg := "Subject: hi\r\n\r\nhello\r\n"
	if _, err := store.Put(ctx, job.MessageKey, strings.NewReader(msg), int64(len(msg))); err != nil {
		t.Fatal(err)
	}
	verdict := make(chan *sluicev1.Verdict, 1)
	go func() {
		v, err := sub.Submit(ctx, job)
		if err != nil {
			t.Errorf("Submit: %v", err)
		}
		verdict <- v
	}()
	waitFor(t, "the filter to start", func() bool { _, err := os.Stat(started); return err == nil })
	if _, metrics := get(t, base+"/metrics"); !strings.Contains(metrics, "sluice_worker_slots_busy 1\n") {
		t.Errorf("/metrics does not show the busy slot:\n%s", metrics)
	}

	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The filter is held: the worker is draining, not gone.
	waitFor(t, "readiness to fail", func() bool {
		code, body := get(t, base+"/readyz")
		var rd struct{ Failing []string }
		_ = json.Unmarshal([]byte(body), &rd)
		return code == http.StatusServiceUnavailable && len(rd.Failing) == 1 && rd.Failing[0] == "draining"
	})
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while draining", code)
	}

	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if v := <-verdict; v.GetAction() != sluicev1.Verdict_ACTION_ACCEPT {
		t.Errorf("verdict %v", v)
	}
	if code := c.exitCode(t); code != 0 {
		t.Errorf("worker exit %d", code)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second); err == nil {
		conn.Close()
		t.Error("monitoring endpoint still open after exit")
	}
}

func TestHTTPListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	c := startWorker(t,
		// Nothing listens there: the busy address must fail first.
		"SLUICE_NATS_URL=nats://127.0.0.1:1",
		"SLUICE_STORE_DIR="+filepath.Join(dir, "store"),
		"SLUICE_DATA_DIR="+filepath.Join(dir, "data"),
		"SLUICE_HTTP_LISTEN="+ln.Addr().String(),
	)
	if code := c.exitCode(t); code != 1 {
		t.Errorf("worker exit %d, want 1", code)
	}
	if l := c.log(); !strings.Contains(l, "http_listen") || !strings.Contains(l, ln.Addr().String()) {
		t.Errorf("stderr does not name http_listen and the address:\n%s", l)
	}
}
