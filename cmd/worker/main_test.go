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
	"strconv"
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

// rig is what a worker needs around it: a NATS server with the job
// stream, a store, and an edge's submitter.
type rig struct {
	dir, storeDir string
	url           string
	store         *blob.FS
	sub           *queue.Submitter
}

func newRig(t *testing.T, ctx context.Context) *rig {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ns, err := queue.StartServer(queue.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	q, err := queue.Open(ctx, queue.Options{URLs: []string{ns.ClientURL()}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	sub, err := q.NewSubmitter(ctx, "edge1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	r := &rig{dir: t.TempDir(), url: ns.ClientURL(), sub: sub}
	r.storeDir = filepath.Join(r.dir, "store")
	if r.store, err = blob.NewFS(r.storeDir); err != nil {
		t.Fatal(err)
	}
	return r
}

// env is the worker's configuration for the rig, with one slot and a
// monitoring endpoint on a port of the system's choosing.
func (r *rig) env(filterCommand string) []string {
	return []string{
		"SLUICE_NATS_URL=" + r.url,
		"SLUICE_STORE_DIR=" + r.storeDir,
		"SLUICE_DATA_DIR=" + filepath.Join(r.dir, "data"),
		"SLUICE_TEMPDIRECTORY=" + r.dir,
		"SLUICE_HTTP_LISTEN=127.0.0.1:0",
		"SLUICE_WORKER_SLOTS=1",
		"SLUICE_FILTERCOMMAND=" + filterCommand,
	}
}

// submit stores msg as message id and publishes its job; the verdict
// comes on the channel.
func (r *rig) submit(t *testing.T, ctx context.Context, id, msg string) <-chan *sluicev1.Verdict {
	t.Helper()
	received := time.Now()
	job := &sluicev1.FilterJob{
		MessageId:   id,
		EdgeId:      "edge1",
		MessageKey:  blob.Key(id, received, blob.MessageName),
		FilteredKey: blob.Key(id, received, blob.FilteredName),
		RecordKey:   blob.Key(id, received, blob.RecordName),
		Received:    timestamppb.New(received),
		Deadline:    timestamppb.New(time.Now().Add(45 * time.Second)),
		Recipients:  []string{"<b@example.org>"},
	}
	if _, err := r.store.Put(ctx, job.MessageKey, strings.NewReader(msg), int64(len(msg))); err != nil {
		t.Fatal(err)
	}
	verdict := make(chan *sluicev1.Verdict, 1)
	go func() {
		v, err := r.sub.Submit(ctx, job)
		if err != nil {
			t.Errorf("Submit: %v", err)
		}
		verdict <- v
	}()
	return verdict
}

// TestDrainOnSIGTERM runs the worker against a NATS server, holds a job in
// its filter, sends SIGTERM and sees readiness fail while the job
// finishes.
func TestDrainOnSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(t, ctx)
	gate := filepath.Join(r.dir, "go")
	started := filepath.Join(r.dir, "started")
	c := startWorker(t, r.env(fmt.Sprintf("touch '%s'; while [ ! -e '%s' ]; do sleep 0.05; done; cat", started, gate))...)
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

	verdict := r.submit(t, ctx, "m1", "Subject: hi\r\n\r\nhello\r\n")
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

// TestFilterGetsNoSecrets runs the real worker with credentials in its
// environment and a filter that dumps its own: neither sluice's settings
// nor any credential (by name or by value) reaches the filter, the rest
// of the environment does, or only what filter.env_allow lists.
func TestFilterGetsNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"SLUICE_STORE_S3_SECRET_KEY": "s3-secret-key-value",
		"SLUICE_NATS_PASSWORD":       "nats-password-value",
		"AWS_SECRET_ACCESS_KEY":      "aws-secret-access-key-value",
		"AWS_SESSION_TOKEN":          "aws-session-token-value",
	}
	tests := []struct {
		name, allow string
		want, not   []string
	}{
		{"everything else", "", []string{"FILTER_KNOB=visible\n", "OTHER_KNOB=also\n", "PATH="}, nil},
		{"allow-list", "PATH,FILTER_*,AWS_*", []string{"FILTER_KNOB=visible\n", "PATH="}, []string{"OTHER_KNOB", "HOME="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := newRig(t, ctx)
			dump := filepath.Join(r.dir, "env")
			env := append(r.env(fmt.Sprintf("env > '%s'; cat", dump)),
				"SLUICE_NATS_USER=worker",
				"SLUICE_FILTER_ENV_ALLOW="+tt.allow,
				"COPY_OF_PASSWORD=nats-password-value",
				"FILTER_KNOB=visible",
				"OTHER_KNOB=also",
			)
			for k, v := range secrets {
				env = append(env, k+"="+v)
			}
			startWorker(t, env...)

			v := <-r.submit(t, ctx, "m1", "Subject: hi\r\n\r\nhello\r\n")
			if v.GetAction() != sluicev1.Verdict_ACTION_ACCEPT {
				t.Fatalf("verdict %v", v)
			}
			b, err := os.ReadFile(dump)
			if err != nil {
				t.Fatal(err)
			}
			got := string(b)
			for k, v := range secrets {
				if strings.Contains(got, k) || strings.Contains(got, v) {
					t.Errorf("the filter's environment holds %s or its value", k)
				}
			}
			for _, leak := range append([]string{"SLUICE_", "AWS_", "COPY_OF_PASSWORD"}, tt.not...) {
				if strings.Contains(got, leak) {
					t.Errorf("the filter's environment holds %s", leak)
				}
			}
			// The contract's variables are there whatever the allow-list says.
			for _, want := range append([]string{"TMPDIR=" + r.dir + "\n", "RECIPIENTS=<b@example.org>\n"}, tt.want...) {
				if !strings.Contains(got, want) {
					t.Errorf("the filter's environment lacks %q", want)
				}
			}
			if t.Failed() {
				t.Logf("filter environment:\n%s", got)
			}
		})
	}
}

// TestMaxOutputSize: the worker stops a filter that writes more than
// filter.max_output_size, which defaults to max_message_size.
func TestMaxOutputSize(t *testing.T) {
	for _, setting := range []string{"SLUICE_FILTER_MAX_OUTPUT_SIZE=1000", "SLUICE_MAX_MESSAGE_SIZE=1000"} {
		t.Run(setting, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := newRig(t, ctx)
			startWorker(t, append(r.env("cat; head -c 5000 /dev/zero"), setting)...)
			v := <-r.submit(t, ctx, "m1", "Subject: hi\r\n\r\nhello\r\n")
			if v.GetAction() != sluicev1.Verdict_ACTION_TEMPFAIL || !strings.HasPrefix(v.GetReply(), "451 4.3.4 ") ||
				!strings.Contains(v.GetDetail(), "(1000 bytes)") {
				t.Errorf("verdict %v", v)
			}
		})
	}
}

// TestFilterLeftovers: a process a filter started in a session of its
// own, which the kill of its process group cannot reach, ends with the
// filter's run: the worker is a child subreaper.
func TestFilterLeftovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(t, ctx)
	mark := filepath.Join(r.dir, "escaped")
	arg := fmt.Sprintf("1000.%09d", time.Now().UnixNano()%1e9) // sleep 1000 s, findable in /proc
	filter := fmt.Sprintf("setsid sh -c 'touch %s; exec sleep %s' </dev/null >/dev/null 2>&1 & "+
		"while [ ! -e %s ]; do sleep 0.01; done; cat", mark, arg, mark)
	startWorker(t, r.env(filter)...)

	v := <-r.submit(t, ctx, "m1", "Subject: hi\r\n\r\nhello\r\n")
	if v.GetAction() != sluicev1.Verdict_ACTION_ACCEPT {
		t.Fatalf("verdict %v", v)
	}
	var left []int
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if left = running("sleep", arg); len(left) == 0 {
			return
		}
	}
	t.Errorf("sleep %s (pids %v) outlived the filter's run", arg, left)
	for _, p := range left {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// running returns the pids of live processes of command name whose
// command line holds arg.
func running(name, arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err1 != nil || err2 != nil || !strings.Contains(string(cmdline), arg) ||
			!strings.HasPrefix(string(stat), e.Name()+" ("+name+") ") ||
			strings.Contains(string(stat), ") Z ") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
