package replay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/s3test"
	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/wiring"
)

// mail is one message the tests send through the edge.
type mail struct {
	name  string // a word in its subject, to find it in the store
	from  string
	rcpts []string
	body  string // without the terminating dot; lines starting with "." are stuffed when sent
}

var mails = []mail{
	{"hello", "alice@example.com", []string{"bob@example.com"}, "Subject: hello\r\n\r\nJust a note.\r\n"},
	{"offer", "spammer@example.net", []string{"bob@example.com", "carol@example.com"}, "Subject: offer\r\n\r\nBuy VIAGRA now.\r\n"},
	{"bounce", "", []string{"bob@example.com"}, "Subject: bounce\r\n\r\n.a line that starts with a dot\r\nend\r\n"},
	{"cheap", "spammer@example.net", []string{"dave@example.com"}, "Subject: cheap\r\n\r\nCheap VIAGRA here.\r\n"},
	{"bye", "alice@example.com", []string{"bob@example.com"}, "Subject: bye\r\n\r\nThanks.\r\n"},
}

// Filters the tests replay with. Each is a shell script in the test's
// directory; RejectWord is file mode, the others pipe mode.
const (
	catFilter   = "cat\n"
	rejectWord  = "if grep -q VIAGRA \"$EMAIL\"; then echo '550 5.7.1 Rejected: spam word' >&2; exit 1; fi\n"
	addHeader   = "printf 'X-Replayed: yes\\r\\n'; exec cat\n"
	rejectCarol = "case \"$RECIPIENTS\" in *carol@example.com*) echo '550 5.7.1 No mail for Carol' >&2; exit 1;; esac\nexec cat\n"
	nullSender  = "if [ \"$SENDER\" = '<>' ]; then echo '554 5.7.1 No bounces' >&2; exit 1; fi\nexec cat\n"
)

// script writes body as an executable shell script and returns its path.
func script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// populate starts an edge in process (embedded NATS, in-process workers)
// with FilterCommand filterCmd in mode filterType and the extra
// configuration lines conf, sends every mail through it with a real SMTP
// client, shuts it down, and returns the store it wrote to (opened anew,
// as replay opens it) with each mail's message id. wantCode is each
// mail's expected reply to the final dot.
func populate(t *testing.T, filterCmd, filterType string, wantCode func(mail) int, conf ...string) (*config.Config, map[string]string, string) {
	t.Helper()
	return populateWith(t, mails, filterCmd, filterType, wantCode, conf...)
}

// populateWith is populate with these mails.
func populateWith(t *testing.T, mails []mail, filterCmd, filterType string, wantCode func(mail) int, conf ...string) (*config.Config, map[string]string, string) {
	t.Helper()
	up := smtptest.NewServer(t, smtptest.Config{})
	dataDir := t.TempDir()
	lines := []string{
		"Listen: 127.0.0.1:10025",
		"OutAddress: " + up.Addr(),
		"TempDirectory: " + t.TempDir(),
		"TimeOut: 10",
		"FilterCommand: " + filterCmd,
		"FilterType: " + filterType,
		"hostname: edge.test",
		"data_dir: " + dataDir,
		"worker.slots: 2",
	}
	lines = append(lines, conf...)
	file := filepath.Join(t.TempDir(), "proxsmtpd.conf")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Edge, []string{"-f", file}, nil)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	cfg.Listen.Port = 0 // Load refuses port 0, as proxsmtpd does
	// The edge's goroutines may log after the test: into a buffer, shown
	// when the test failed.
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("edge log:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := edge.Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("edge.Start: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.Shutdown(sctx)
		}
	}
	t.Cleanup(stop)

	c := smtptest.Dial(t, e.Addr().String())
	c.Timeout = 60 * time.Second
	c.Expect(220)
	c.CmdExpect("EHLO client.example", 250)
	for _, m := range mails {
		c.CmdExpect("MAIL FROM:<"+m.from+">", 250)
		for _, r := range m.rcpts {
			c.CmdExpect("RCPT TO:<"+r+">", 250)
		}
		c.CmdExpect("DATA", 354)
		c.Write([]byte(smtptest.Stuff(m.body) + ".\r\n"))
		if got := c.Read(); got.Code != wantCode(m) {
			t.Fatalf("%s: reply to the final dot %q, want %d", m.name, got, wantCode(m))
		}
	}
	c.CmdExpect("QUIT", 221)
	c.Close()
	stop()

	// Which id is which mail: the subject of each stored message.
	store := openTestStore(t, cfg)
	ids := map[string]string{}
	day := ""
	err = store.List(context.Background(), "", func(key string) error {
		if !strings.HasSuffix(key, "/"+blob.MessageName) {
			return nil
		}
		body := readAll(t, store, key)
		for _, m := range mails {
			if strings.Contains(body, "Subject: "+m.name+"\r\n") {
				if body != m.body {
					t.Errorf("%s stored as %q, want %q", m.name, body, m.body)
				}
				parts := strings.Split(key, "/")
				ids[m.name] = parts[3]
				day = strings.Join(parts[:3], "-")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(mails) {
		t.Fatalf("found %d stored messages, want %d: %v", len(ids), len(mails), ids)
	}
	return cfg, ids, day
}

func openTestStore(t *testing.T, cfg *config.Config) blob.Store {
	t.Helper()
	s, err := wiring.OpenStore(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s blob.Store, key string) string {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshot is every key of the store with the sha256 of its content.
func snapshot(t *testing.T, s blob.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.List(context.Background(), "", func(key string) error {
		sum := sha256.Sum256([]byte(readAll(t, s, key)))
		out[key] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// testWriter logs through t; only for loggers that stop with the test.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// replayAll runs Run over yesterday and today and returns every result in
// report order.
func replayAll(t *testing.T, store blob.Store, spec filter.Command, conc, limit int) ([]Result, Summary) {
	t.Helper()
	rs, sum, _ := replayLogged(t, store, spec, conc, limit)
	return rs, sum
}

// replayLogged is replayAll that also returns Run's log.
func replayLogged(t *testing.T, store blob.Store, spec filter.Command, conc, limit int) ([]Result, Summary, string) {
	t.Helper()
	var logs strings.Builder
	now := time.Now()
	var got []Result
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := Run(ctx, Options{
		Store: store, Filter: spec, Timeout: spec.Timeout, Since: now.AddDate(0, 0, -1), Until: now,
		Concurrency: conc, Limit: limit,
		Logger:        slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, &logs), nil)),
		ProgressEvery: 2,
	}, func(r Result) error {
		t.Logf("%s", TextLine(r))
		got = append(got, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("%s", TextSummary(sum))
	return got, sum, logs.String()
}

// byName indexes results by the mail they are about.
func byName(t *testing.T, rs []Result, ids map[string]string) map[string]Result {
	t.Helper()
	out := map[string]Result{}
	for _, r := range rs {
		for name, id := range ids {
			if r.ID == id {
				out[name] = r
			}
		}
	}
	return out
}

func spec(t *testing.T, body string, mode filter.Mode) filter.Command {
	return filter.Command{Command: script(t, "filter.sh", body), Mode: mode, Timeout: 30 * time.Second, TempDir: t.TempDir()}
}

func TestReplayFS(t *testing.T) {
	catCmd := script(t, "cat.sh", catFilter)
	cfg, ids, today := populate(t, catCmd, "pipe", func(mail) int { return 250 })
	store := openTestStore(t, cfg)
	before := snapshot(t, store)

	// Results come in listing order, whatever the concurrency.
	sortedIDs := make([]string, 0, len(ids))
	for _, id := range ids {
		sortedIDs = append(sortedIDs, id)
	}
	sort.Strings(sortedIDs)

	t.Run("same filter", func(t *testing.T) {
		rs, sum, logs := replayLogged(t, store, spec(t, catFilter, filter.Pipe), 3, 0)
		// ProgressEvery 2: after the 2nd and 4th message.
		if n := strings.Count(logs, "msg=\"replay progress\""); n != 2 {
			t.Errorf("%d progress lines, want 2:\n%s", n, logs)
		}
		var order []string
		for _, r := range rs {
			order = append(order, r.ID)
			if r.Status != StatusSame || r.Content != ContentSame || r.Day != today ||
				r.Old.Action != "accept" || r.New.Action != "accept" {
				t.Errorf("%+v: want same, content same, accepted, day %s", r, today)
			}
		}
		if !slices.Equal(order, sortedIDs) {
			t.Errorf("order %v, want %v", order, sortedIDs)
		}
		if sum != (Summary{Type: "summary", Messages: 5, Same: 5, Listed: 5, Complete: true}) {
			t.Errorf("summary %+v", sum)
		}
		// The envelope comes from the record.
		got := byName(t, rs, ids)
		if r := got["offer"]; r.From == nil || *r.From != "spammer@example.net" || r.To != 2 {
			t.Errorf("offer: from %v to %d", r.From, r.To)
		}
		if r := got["bounce"]; r.From == nil || *r.From != "<>" || r.To != 1 {
			t.Errorf("bounce: from %v to %d", r.From, r.To)
		}
	})

	t.Run("reject word", func(t *testing.T) {
		rs, sum := replayAll(t, store, spec(t, rejectWord, filter.File), 2, 0)
		got := byName(t, rs, ids)
		for _, name := range []string{"offer", "cheap"} {
			r := got[name]
			if r.Status != StatusChanged || r.Change != ChangeAcceptReject ||
				r.New.Action != "reject" || r.New.Reply != "550 5.7.1 Rejected: spam word" || r.Content != "" {
				t.Errorf("%s: %+v %+v", name, r, r.New)
			}
		}
		for _, name := range []string{"hello", "bounce", "bye"} {
			if r := got[name]; r.Status != StatusSame || r.Content != ContentSame {
				t.Errorf("%s: %+v", name, r)
			}
		}
		if sum != (Summary{Type: "summary", Messages: 5, Same: 3, Changed: 2, AcceptToReject: 2, Listed: 5, Complete: true}) {
			t.Errorf("summary %+v", sum)
		}
	})

	t.Run("add header", func(t *testing.T) {
		rs, sum := replayAll(t, store, spec(t, addHeader, filter.Pipe), 1, 0)
		for _, r := range rs {
			if r.Status != StatusChanged || r.Change != ChangeContent || r.Content != ContentChanged {
				t.Errorf("%+v: want content changed", r)
			}
		}
		if sum != (Summary{Type: "summary", Messages: 5, Changed: 5, ContentChanged: 5, Listed: 5, Complete: true}) {
			t.Errorf("summary %+v", sum)
		}
	})

	t.Run("environment", func(t *testing.T) {
		// RECIPIENTS and SENDER are those of the first run.
		rs, sum := replayAll(t, store, spec(t, rejectCarol, filter.Pipe), 2, 0)
		if r := byName(t, rs, ids)["offer"]; r.Change != ChangeAcceptReject || r.New.Reply != "550 5.7.1 No mail for Carol" {
			t.Errorf("offer: %+v", r)
		}
		if sum.AcceptToReject != 1 || sum.Same != 4 {
			t.Errorf("summary %+v", sum)
		}
		rs, sum = replayAll(t, store, spec(t, nullSender, filter.Pipe), 2, 0)
		if r := byName(t, rs, ids)["bounce"]; r.Change != ChangeAcceptReject || r.New.Reply != "554 5.7.1 No bounces" {
			t.Errorf("bounce: %+v", r)
		}
		if sum.AcceptToReject != 1 || sum.Same != 4 {
			t.Errorf("summary %+v", sum)
		}
	})

	t.Run("limit", func(t *testing.T) {
		rs, sum := replayAll(t, store, spec(t, catFilter, filter.Pipe), 2, 2)
		if len(rs) != 2 || sum.Messages != 2 || rs[0].ID != sortedIDs[0] || rs[1].ID != sortedIDs[1] {
			t.Errorf("limit 2: %+v %+v", rs, sum)
		}
	})

	t.Run("other days", func(t *testing.T) {
		ctx := context.Background()
		n := 0
		for _, days := range [][2]int{{-3, -1}, {1, 2}} {
			now := time.Now()
			sum, err := Run(ctx, Options{Store: store, Filter: spec(t, catFilter, filter.Pipe),
				Since: now.AddDate(0, 0, days[0]), Until: now.AddDate(0, 0, days[1])},
				func(Result) error { n++; return nil })
			if err != nil || sum.Messages != 0 {
				t.Errorf("days %v: %+v %v", days, sum, err)
			}
		}
		if n != 0 {
			t.Errorf("%d results for days without messages", n)
		}
	})

	if after := snapshot(t, store); !maps.Equal(before, after) {
		t.Fatalf("replay changed the store:\nbefore %v\nafter  %v", before, after)
	}

	t.Run("skipped and errors", func(t *testing.T) {
		// A message in flight has no verdict.json yet; one whose record is
		// damaged is an error, not a verdict.
		root := cfg.Store.Dir
		dir := func(name string) string {
			return filepath.Join(root, filepath.FromSlash(strings.ReplaceAll(today, "-", "/")), ids[name])
		}
		if err := os.Remove(filepath.Join(dir("bye"), blob.RecordName)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir("hello"), blob.RecordName), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		rs, sum := replayAll(t, store, spec(t, catFilter, filter.Pipe), 2, 0)
		got := byName(t, rs, ids)
		if r := got["bye"]; r.Status != StatusSkipped || r.Reason != "no verdict.json" || r.Old != nil ||
			TextLine(r) != today+" "+ids["bye"]+" skipped: no verdict.json" {
			t.Errorf("bye: %+v %q", r, TextLine(r))
		}
		if r := got["hello"]; r.Status != StatusError || !strings.Contains(r.Reason, "decode verdict record") {
			t.Errorf("hello: %+v", r)
		}
		if sum != (Summary{Type: "summary", Messages: 5, Same: 3, Skipped: 1, Errors: 1, Listed: 5, Complete: true}) {
			t.Errorf("summary %+v", sum)
		}
	})
}

// TestReplayS3 replays from an S3 store (versitygw): messages the first
// filter refused, which a filter that accepts all would let through.
func TestReplayS3(t *testing.T) {
	s3 := s3test.Start(t)
	reject := script(t, "reject.sh", rejectWord)
	cfg, ids, _ := populate(t, reject, "file", func(m mail) int {
		if strings.Contains(m.body, "VIAGRA") {
			return 550
		}
		return 250
	},
		"store.s3.endpoint: "+s3.Endpoint,
		"store.s3.bucket: replay",
		"store.s3.access_key: "+s3.AccessKey,
		"store.s3.secret_key: "+s3.SecretKey,
		"store.s3.create_bucket: on",
		"store.s3.tls: off",
	)
	if cfg.Store.Type != config.StoreS3 {
		t.Fatalf("store %+v", cfg.Store)
	}
	store := openTestStore(t, cfg)
	before := snapshot(t, store)
	rs, sum := replayAll(t, store, spec(t, catFilter, filter.Pipe), 2, 0)
	got := byName(t, rs, ids)
	for _, name := range []string{"offer", "cheap"} {
		r := got[name]
		if r.Status != StatusChanged || r.Change != ChangeRejectAccept || r.Old.Reply != "550 5.7.1 Rejected: spam word" || r.New.Action != "accept" {
			t.Errorf("%s: %+v old %+v", name, r, r.Old)
		}
	}
	if sum != (Summary{Type: "summary", Messages: 5, Same: 3, Changed: 2, RejectToAccept: 2, Listed: 5, Complete: true}) {
		t.Errorf("summary %+v", sum)
	}
	if after := snapshot(t, store); !maps.Equal(before, after) {
		t.Fatalf("replay changed the store:\nbefore %v\nafter  %v", before, after)
	}
}

// TestReadOnly: the store replay works on refuses writes.
func TestReadOnly(t *testing.T) {
	fs, err := blob.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ro := readOnly{fs}
	ctx := context.Background()
	if _, err := ro.Put(ctx, "2026/01/01/x/message.eml", strings.NewReader("x"), 1); !errors.Is(err, errReadOnly) {
		t.Errorf("Put: %v", err)
	}
	if err := ro.Delete(ctx, "2026/01/01/x/message.eml"); !errors.Is(err, errReadOnly) {
		t.Errorf("Delete: %v", err)
	}
	n := 0
	if err := ro.List(ctx, "", func(string) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("List: %d, %v", n, err)
	}
}

// TestStoreUnreachable: a listing that fails is Run's error.
func TestStoreUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s3 := s3test.Start(t)
	store, err := blob.NewS3(ctx, blob.S3Options{Endpoint: s3.Endpoint, Bucket: "gone", AccessKey: s3.AccessKey,
		SecretKey: s3.SecretKey, CreateBucket: true})
	if err != nil {
		t.Fatal(err)
	}
	s3.Stop()
	now := time.Now()
	_, err = Run(ctx, Options{Store: store, Since: now, Until: now}, func(Result) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "listing "+now.UTC().Format("2006/01/02/")) {
		t.Errorf("Run with the store down: %v", err)
	}
}
