package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/miltertest"
	"github.com/sluice-mail/sluice/internal/worker"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// buildReplay compiles this command into a temporary directory.
func buildReplay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "replay")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// fill stores messages the way the edge does and has the real worker
// filter them with `cat`, which writes filtered.eml and verdict.json.
// The last message gets no verdict, as one still in flight.
func fill(t *testing.T, dir string) (ids []string) {
	t.Helper()
	ids = []string{"msga", "msgb", "msgc"}
	storeFiltered(t, dir, ids, []string{
		"Subject: hello\r\n\r\nJust a note.\r\n",
		"Subject: offer\r\n\r\nBuy VIAGRA now.\r\n",
		"Subject: in flight\r\n\r\nStill waiting.\r\n",
	}, 1)
	return ids
}

// storeFiltered stores each body under its id (today) the way the edge
// does and has the real worker filter it with `cat`, except the last
// inFlight ones, which get no verdict.
func storeFiltered(t *testing.T, dir string, ids, bodies []string, inFlight int) {
	t.Helper()
	store, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker.Worker{ID: "test", Store: store,
		Filter: filter.Command{Command: "cat", Timeout: 30 * time.Second, TempDir: t.TempDir()}}
	ctx := context.Background()
	now := time.Now()
	for i, body := range bodies {
		id := ids[i]
		key := func(name string) string { return blob.Key(id, now, name) }
		if _, err := store.Put(ctx, key(blob.MessageName), strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if i >= len(bodies)-inFlight {
			continue
		}
		sender := "alice@example.com"
		job := &sluicev1.FilterJob{MessageId: id, MessageKey: key(blob.MessageName), FilteredKey: key(blob.FilteredName),
			RecordKey: key(blob.RecordName), MessageSize: int64(len(body)), Sender: &sender,
			Recipients: []string{"bob@example.com"}, ClientAddr: "127.0.0.1", ServerAddr: "127.0.0.1:10025"}
		if v := w.Handle(ctx, job, 1); v.GetAction() != sluicev1.Verdict_ACTION_ACCEPT {
			t.Fatalf("worker: %v", v)
		}
	}
}

// tree is every file under dir with its content's hash and its mtime.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[p] = string(sum[:]) + fi.ModTime().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type result struct {
	code           int
	stdout, stderr string
}

func runReplay(t *testing.T, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SLUICE_CONFIG=") // nothing from the caller's environment
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("replay %q: %v", args, err)
	}
	t.Logf("replay %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	return r
}

func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func TestReplayBinary(t *testing.T) {
	bin := buildReplay(t)
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "messages")
	ids := fill(t, storeDir)
	tmp := t.TempDir()
	rejectWord := filepath.Join(dir, "reject-word.sh")
	script := "#!/bin/sh\necho 'chatter on stdout'\n" +
		"if grep -q VIAGRA \"$EMAIL\"; then echo '550 5.7.1 Rejected: spam word' >&2; exit 1; fi\n"
	if err := os.WriteFile(rejectWord, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The edge's proxsmtpd.conf, as it is.
	conf := filepath.Join(dir, "proxsmtpd.conf")
	err := os.WriteFile(conf, []byte("OutAddress: 127.0.0.1:2525\nFilterCommand: cat\nTempDirectory: "+tmp+
		"\nstore.dir: "+storeDir+"\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	before := tree(t, storeDir)
	day := time.Now().UTC().Format("2006-01-02")

	// Text: the configured filter changes nothing.
	r := runReplay(t, bin, "-f", conf)
	want := []string{
		day + " " + ids[0] + " from=alice@example.com to=1 accept -> accept same content=same",
		day + " " + ids[1] + " from=alice@example.com to=1 accept -> accept same content=same",
		day + " " + ids[2] + " skipped: no verdict.json",
		"summary: messages=3 same=2 changed=0 (accept->reject=0 reject->accept=0 other-action=0 reply=0 content=0) skipped=1 errors=0 listed=3",
	}
	if r.code != 0 || strings.Join(lines(r.stdout), "\n") != strings.Join(want, "\n") {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s", r.code, r.stdout, strings.Join(want, "\n"))
	}

	// JSON with a new file-mode filter that also prints to its stdout:
	// that goes to stderr, the report stays JSON.
	r = runReplay(t, bin, "-f", conf, "--filter-command", rejectWord, "--filter-type=file", "--format", "json",
		"--since", "yesterday", "--until", day, "--concurrency", "3")
	if r.code != 0 {
		t.Errorf("json: exit %d", r.code)
	}
	ls := lines(r.stdout)
	if len(ls) != 4 {
		t.Fatalf("json: %d lines, want 4", len(ls))
	}
	var objs []map[string]any
	for _, l := range ls {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("json: line %q: %v", l, err)
		}
		objs = append(objs, m)
	}
	if o := objs[1]; o["type"] != "message" || o["id"] != ids[1] || o["status"] != "changed" || o["change"] != "accept->reject" ||
		o["new"].(map[string]any)["reply"] != "550 5.7.1 Rejected: spam word" || o["from"] != "alice@example.com" || o["to"] != 1.0 {
		t.Errorf("json: changed message %v", o)
	}
	if o := objs[0]; o["status"] != "same" || o["content"] != "same" {
		t.Errorf("json: same message %v", o)
	}
	if o := objs[2]; o["status"] != "skipped" || o["reason"] != "no verdict.json" {
		t.Errorf("json: skipped message %v", o)
	}
	if o := objs[3]; o["type"] != "summary" || o["messages"] != 3.0 || o["same"] != 1.0 || o["changed"] != 1.0 ||
		o["accept_to_reject"] != 1.0 || o["skipped"] != 1.0 || o["errors"] != 0.0 {
		t.Errorf("json: summary %v", o)
	}
	if strings.Count(r.stderr, "chatter on stdout") != 2 {
		t.Errorf("json: the filter's stdout did not go to stderr")
	}

	// --only-changed.
	r = runReplay(t, bin, "-f", conf, "--filter-command", rejectWord, "--filter-type", "file", "--only-changed")
	if ls := lines(r.stdout); r.code != 0 || len(ls) != 2 || !strings.HasSuffix(ls[0], `accept -> reject "550 5.7.1 Rejected: spam word" changed`) ||
		!strings.HasPrefix(ls[1], "summary: messages=3 same=1 changed=1 (accept->reject=1 ") {
		t.Errorf("only-changed: exit %d\n%s", r.code, r.stdout)
	}

	// Issue 11: --milter tries a milter after the configured cat; one
	// that refuses the spam word changes that message's verdict to its
	// reply, the other's content gains the milter's header.
	spamMilter := miltertest.Start(t, &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if strings.Contains(m.Get(milter.MacroQueueId), ids[1]) {
			return milter.RejectWithCodeAndReason(550, "5.7.1 Milter says spam")
		}
		return milter.RespAccept, m.AddHeader("X-Rules", "new")
	}})
	r = runReplay(t, bin, "-f", conf, "--milter", spamMilter)
	if ls := lines(r.stdout); r.code != 0 || len(ls) != 4 ||
		!strings.HasSuffix(ls[0], "accept -> accept changed content=changed") ||
		!strings.HasSuffix(ls[1], `accept -> reject "550 5.7.1 Milter says spam" changed`) {
		t.Errorf("--milter: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runReplay(t, bin, "-f", conf, "--milter", "tcp:nowhere"); r.code != 2 || !strings.Contains(r.stderr, "--milter") {
		t.Errorf("--milter tcp:nowhere: exit %d, stderr %q", r.code, r.stderr)
	}

	// Usage and configuration errors: 2.
	for _, args := range [][]string{
		{"-f", conf, "--format", "xml"},
		{"-f", conf, "--since", "2026-11-27", "--until", "2026-11-26"},
		{"-f", conf, "--no-such-flag"},
		{"-f", conf, "--log-format", "yaml"},
	} {
		if r := runReplay(t, bin, args...); r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "replay: ") {
			t.Errorf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if r := runReplay(t, bin, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Read-only: replay never writes to the message store") ||
		!strings.Contains(r.stdout, "--store-dir") {
		t.Errorf("--help: exit %d", r.code)
	}

	// A store that is not there: 1, and nothing created.
	missing := filepath.Join(dir, "no-store")
	if r := runReplay(t, bin, "-f", conf, "--store-dir", missing); r.code != 1 || r.stdout != "" {
		t.Errorf("missing store: exit %d", r.code)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("replay created %s: %v", missing, err)
	}

	if after := tree(t, storeDir); !maps.Equal(before, after) {
		t.Errorf("replay changed the store:\n%v\n%v", before, after)
	}

	// A message that cannot be replayed: reported, and exit 1.
	rec := filepath.Join(storeDir, strings.ReplaceAll(day, "-", "/"), ids[0], blob.RecordName)
	if err := os.WriteFile(rec, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runReplay(t, bin, "-f", conf)
	if ls := lines(r.stdout); r.code != 1 || len(ls) != 4 || !strings.Contains(ls[0], " error: reading verdict.json") ||
		!strings.HasSuffix(ls[3], "skipped=1 errors=1 listed=3") {
		t.Errorf("damaged record: exit %d\n%s", r.code, r.stdout)
	}
}
