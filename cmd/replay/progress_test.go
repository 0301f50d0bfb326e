package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/natstest"
	"github.com/sluice-mail/sluice/internal/replay"
)

func TestBarLine(t *testing.T) {
	got := barLine(replay.Progress{Done: 50, Total: 200, Changed: 3, Errors: 1, Elapsed: 10 * time.Second}, 20)
	want := "[#####...............] 50/200  25%  5.0 msg/s  ETA 0:30  changed 3  errors 1"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := barLine(replay.Progress{Done: 7200, Total: 7200 * 3, Elapsed: time.Hour}, 4); !strings.Contains(got, "ETA 2:00:00") {
		t.Errorf("long ETA: %q", got)
	}
	// Log lines go above the bar: clear it, write, draw it again.
	var out bytes.Buffer
	b := &bar{w: &out}
	b.Update(replay.Progress{Total: 2})
	fmt.Fprint(b, "a log line\n")
	b.Done()
	if want := "\r\x1b[K[" + strings.Repeat(".", 24) + "] 0/2   0%  0.0 msg/s  ETA -  changed 0  errors 0" +
		"\r\x1b[Ka log line\n[" + strings.Repeat(".", 24) + "] 0/2   0%  0.0 msg/s  ETA -  changed 0  errors 0\n"; out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
}

// fillMany stores n messages of today, filtered by the real worker with
// cat.
func fillMany(t *testing.T, dir string, n int) {
	t.Helper()
	var ids, bodies []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("m%04d", i))
		bodies = append(bodies, fmt.Sprintf("Subject: message %d\r\n\r\nbody\r\n", i))
	}
	storeFiltered(t, dir, ids, bodies, 0)
}

// On a terminal (script(1) gives the run one) progress is a bar; the
// report on stdout is unchanged.
func TestReplayProgressOnATerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed")
	}
	bin := buildReplay(t)
	dir := t.TempDir()
	fillMany(t, filepath.Join(dir, "messages"), 20)
	report := filepath.Join(dir, "report.txt")
	cmdline := fmt.Sprintf("%s --store-dir %s --filter-command 'sleep 0.05; cat' >%s",
		bin, filepath.Join(dir, "messages"), report)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null").CombinedOutput()
	t.Logf("terminal:\n%q", out)
	if err != nil {
		t.Fatalf("script: %v", err)
	}
	if !regexp.MustCompile(`\[#{24}\] 20/20 100%  [0-9.]+ msg/s  ETA 0:00  changed 0  errors 0`).Match(out) {
		t.Errorf("no finished bar on the terminal")
	}
	if !bytes.Contains(out, []byte("\r\x1b[K")) || bytes.Contains(out, []byte("replay progress")) {
		t.Errorf("the bar is not redrawn in place, or progress log lines were written with it")
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if ls := lines(string(b)); len(ls) != 21 || !strings.HasPrefix(ls[20], "summary: messages=20 same=20 ") {
		t.Errorf("report:\n%s", b)
	}
}

// Ctrl-C stops the run: the partial summary is printed, marked
// incomplete, the HTML page says so too, and the exit status is 1.
func TestReplayInterrupted(t *testing.T) {
	bin := buildReplay(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "messages")
	fillMany(t, store, 40)
	page := filepath.Join(dir, "report.html")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--store-dir", store, "--filter-command", "sleep 0.2; cat",
		"--format", "json", "--html", page)
	cmd.Env = append(os.Environ(), "SLUICE_CONFIG=")
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once a few results are out, as an operator's Ctrl-C would.
	exited := make(chan struct{})
	var err error
	go func() { err = cmd.Wait(); close(exited) }()
	for strings.Count(stdout.String(), "\n") < 4 && ctx.Err() == nil {
		select {
		case <-exited:
			t.Fatalf("replay exited before it was interrupted: %s", stderr.String())
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	<-exited
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want 1", err)
	}
	ls := lines(stdout.String())
	var sum replay.Summary
	if err := json.Unmarshal([]byte(ls[len(ls)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Type != "summary" || sum.Complete || sum.Stopped != "interrupted" || sum.Listed != 40 ||
		sum.Messages < 4 || sum.Messages >= 40 || sum.Messages != len(ls)-1 || sum.Same != sum.Messages {
		t.Errorf("summary %+v after %d lines", sum, len(ls))
	}
	if !strings.Contains(stderr.String(), `msg="the replay did not complete"`) && !strings.Contains(stderr.String(), `msg="replay failed"`) {
		t.Errorf("stderr does not say the run did not complete")
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatalf("the HTML page was not kept: %v", err)
	}
	if !bytes.Contains(bytes.ToLower(html), []byte("incomplete")) {
		t.Errorf("the HTML page does not say it is incomplete")
	}
}

// Bad input: an empty selection and unknown ids are clear messages and
// exit 1; nothing looks like a complete report.
func TestReplayNothingSelected(t *testing.T) {
	bin := buildReplay(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "messages")
	fillMany(t, store, 3)
	base := []string{"--store-dir", store, "--filter-command", "cat"}

	r := runReplay(t, bin, append(base, "--from", "nobody@*")...)
	if r.code != 1 || !strings.Contains(r.stderr, `msg="no stored message matches the selection"`) ||
		!strings.Contains(r.stdout, "summary: messages=0 ") {
		t.Errorf("empty selection: exit %d", r.code)
	}
	r = runReplay(t, bin, append(base, "--since", "2020-01-01", "--until", "2020-01-02")...)
	if r.code != 1 || !strings.Contains(r.stderr, "no stored message matches the selection") {
		t.Errorf("empty days: exit %d", r.code)
	}
	unknown := "dc8vlchksdu9ph0j9am0"
	r = runReplay(t, bin, append(base, "--id", unknown)...)
	if r.code != 1 || !strings.Contains(r.stdout, unknown+" error: no such message in the store") {
		t.Errorf("unknown id: exit %d", r.code)
	}
	// A filter that fails on every message: errors, not changes.
	r = runReplay(t, bin, "--store-dir", store, "--filter-command", "/nonexistent/filter")
	if r.code != 1 || !strings.Contains(r.stderr, "no message could be replayed") ||
		strings.Count(r.stdout, "error: the filter gave no answer: 451 Local Error") != 3 ||
		!strings.Contains(r.stdout, "changed=0 ") || !strings.Contains(r.stdout, "errors=3 ") {
		t.Errorf("failing filter: exit %d", r.code)
	}
	r = runReplay(t, bin, append(base, "--id", "m0001")...)
	if r.code != 2 || !strings.Contains(r.stderr, `--id: "m0001" is not a message id`) {
		t.Errorf("malformed id: exit %d", r.code)
	}
}

// lockedBuffer is a bytes.Buffer a running command writes while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The commands as an operator runs them: sluice-worker serving a replay
// pool, replay --pool sending it a filter it was not started with.
func TestReplayOnWorkerPool(t *testing.T) {
	bin := buildReplay(t)
	workerBin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", workerBin, "../worker").CombinedOutput(); err != nil {
		t.Fatalf("go build worker: %v\n%s", err, out)
	}
	nc := natstest.StartCluster(t, 1)
	dir := t.TempDir()
	store := filepath.Join(dir, "messages")
	ids := fill(t, store)
	conf := filepath.Join(dir, "worker.conf")
	if err := os.WriteFile(conf, []byte("FilterCommand: cat\nTempDirectory: "+t.TempDir()+"\nstore.dir: "+store+
		"\nnats.url: "+strings.Join(nc.URLs(), ",")+"\nworker.replay_pools: rules\nworker.slots: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := exec.CommandContext(ctx, workerBin, "-f", conf)
	var wlog lockedBuffer
	w.Stdout, w.Stderr = &wlog, &wlog
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Process.Signal(syscall.SIGTERM)
		w.Wait()
		t.Logf("worker log:\n%s", wlog.String())
	}()
	for !strings.Contains(wlog.String(), "serving replay pools") {
		if ctx.Err() != nil {
			t.Fatal("the worker did not start serving its pool")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rejectWord := filepath.Join(dir, "reject-word.sh")
	if err := os.WriteFile(rejectWord, []byte("#!/bin/sh\nif grep -q VIAGRA \"$EMAIL\"; then echo '550 5.7.1 Rejected: spam word' >&2; exit 1; fi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	url := "--nats-url=" + strings.Join(nc.URLs(), ",")
	day := time.Now().UTC().Format(replay.DayLayout)
	r := runReplay(t, bin, "--store-dir", store, url, "--pool", "rules", "--filter-command", rejectWord, "--filter-type", "file")
	want := []string{
		day + " " + ids[0] + " from=alice@example.com to=1 accept -> accept same content=same",
		day + " " + ids[1] + ` from=alice@example.com to=1 accept -> reject "550 5.7.1 Rejected: spam word" changed`,
		day + " " + ids[2] + " skipped: no verdict.json",
		"summary: messages=3 same=1 changed=1 (accept->reject=1 reject->accept=0 other-action=0 reply=0 content=0) skipped=1 errors=0 listed=3",
	}
	if r.code != 0 || strings.Join(lines(r.stdout), "\n") != strings.Join(want, "\n") {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s", r.code, r.stdout, strings.Join(want, "\n"))
	}
	if !strings.Contains(wlog.String(), "replay filter ready") || !strings.Contains(wlog.String(), rejectWord) {
		t.Errorf("the worker did not build the job's filter")
	}

	// A pool no worker serves, and no NATS at all: clear, exit 1 or 2.
	r = runReplay(t, bin, "--store-dir", store, url, "--pool", "nobody")
	if r.code != 1 || !strings.Contains(r.stderr, `no worker serves the replay pool \"nobody\"`) {
		t.Errorf("unserved pool: exit %d", r.code)
	}
	r = runReplay(t, bin, "--store-dir", store, "--pool", "rules")
	if r.code != 2 || !strings.Contains(r.stderr, "--pool: needs nats.url") {
		t.Errorf("no nats.url: exit %d", r.code)
	}
	r = runReplay(t, bin, "--store-dir", store, "--nats-url=nats://127.0.0.1:9", "--pool", "rules")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot replay on the pool") {
		t.Errorf("NATS down: exit %d", r.code)
	}
}

// The edge on its embedded default serves replay pools with its
// in-process workers too: replay --pool through its nats.listen.
func TestReplayOnEmbeddedEdge(t *testing.T) {
	bin := buildReplay(t)
	edgeBin := filepath.Join(t.TempDir(), "edge")
	if out, err := exec.Command("go", "build", "-o", edgeBin, "../edge").CombinedOutput(); err != nil {
		t.Fatalf("go build edge: %v\n%s", err, out)
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "messages")
	fillMany(t, store, 10)
	port := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	natsAddr := port()
	conf := filepath.Join(dir, "proxsmtpd.conf")
	if err := os.WriteFile(conf, []byte("Listen: "+port()+"\nOutAddress: "+port()+"\nFilterCommand: cat\nTempDirectory: "+t.TempDir()+
		"\ndata_dir: "+filepath.Join(dir, "data")+"\nstore.dir: "+store+"\nnats.listen: "+natsAddr+
		"\nworker.replay_pools: here\nworker.slots: 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := exec.CommandContext(ctx, edgeBin, "-d", "3", "-f", conf)
	var elog lockedBuffer
	e.Stdout, e.Stderr = &elog, &elog
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		e.Process.Signal(syscall.SIGTERM)
		e.Wait()
		if t.Failed() {
			t.Logf("edge log:\n%s", elog.String())
		}
	}()
	for !strings.Contains(elog.String(), "serving replay pools") {
		if ctx.Err() != nil {
			t.Fatalf("the edge does not serve its replay pool:\n%s", elog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := runReplay(t, bin, "--store-dir", store, "--nats-url=nats://"+natsAddr, "--pool", "here", "--filter-command",
		"printf 'X-New: 1\\r\\n'; cat", "--format", "json")
	ls := lines(r.stdout)
	if r.code != 0 || len(ls) != 11 || !strings.Contains(ls[10], `"messages":10,"same":0,"changed":10,`) ||
		!strings.Contains(ls[10], `"content_changed":10,`) {
		t.Errorf("exit %d:\n%s", r.code, r.stdout)
	}
}
