package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newFS(t *testing.T) *FS {
	t.Helper()
	s, err := NewFS(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randReader yields n pseudo-random bytes without holding them.
type randReader struct {
	rng *rand.ChaCha8
	n   int64
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, _ := r.rng.Read(p)
	r.n -= int64(n)
	return n, nil
}

func newRand(n int64) *randReader {
	return &randReader{rng: rand.NewChaCha8([32]byte{1, 2, 3}), n: n}
}

func TestNewFSCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if _, err := NewFS(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("store dir mode %v, want 0700", fi.Mode().Perm())
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(file); err == nil {
		t.Error("NewFS on a regular file succeeded")
	}
}

func TestRoundTripLargeStreamed(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	const size = 20 << 20
	key := Key("id1", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), MessageName)

	want := sha256.New()
	n, err := s.Put(ctx, key, io.TeeReader(newRand(size), want), -1)
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("Put stored %d bytes, want %d", n, size)
	}
	rc, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	if m, err := io.Copy(got, rc); err != nil || m != size {
		t.Fatalf("Get: %d bytes, %v", m, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("content differs after round trip")
	}

	// Files 0600, directories 0700.
	err = filepath.WalkDir(s.Root(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPutReplaces(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	put(t, s, "k/v", "first")
	put(t, s, "k/v", "second")
	if got := get(t, s, "k/v"); got != "second" {
		t.Fatalf("got %q", got)
	}
	// A known size that does not match is a failed Put.
	if _, err := s.Put(ctx, "k/w", strings.NewReader("abc"), 4); err == nil {
		t.Fatal("Put with a wrong size succeeded")
	}
	if _, err := s.Get(ctx, "k/w"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after failed Put: %v", err)
	}
}

// failingReader yields n bytes, then an error.
type failingReader struct {
	r io.Reader
}

var errBroken = errors.New("connection broke")

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errBroken
	}
	return n, err
}

func TestFailedPutLeavesNothing(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	_, err := s.Put(ctx, "2024/01/01/x/message.eml", failingReader{newRand(3 << 20)}, -1)
	if !errors.Is(err, errBroken) {
		t.Fatalf("Put: %v, want the reader's error", err)
	}
	if _, err := s.Get(ctx, "2024/01/01/x/message.eml"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after failed Put: %v", err)
	}
	var files []string
	filepath.WalkDir(s.Root(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left behind: %v", files)
	}

	// A cancelled context fails the Put the same way.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, "a/b", strings.NewReader("x"), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx: %v", err)
	}
	if _, err := s.Get(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after cancelled Put: %v", err)
	}
}

func TestBadKeys(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	bad := []string{
		"", "/etc/passwd", "../x", "a/../../x", "a/..", "..", ".", "a/./b",
		"a//b", "a/", "a\\b", "a\x00b", tempPrefix + "x", "a/" + tempPrefix + "1",
	}
	for _, k := range bad {
		if err := CheckKey(k); err == nil {
			t.Errorf("CheckKey(%q) accepted", k)
		}
		if _, err := s.Put(ctx, k, strings.NewReader("x"), 1); err == nil {
			t.Errorf("Put(%q) accepted", k)
		}
		if _, err := s.Get(ctx, k); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q): %v, want a key error", k, err)
		}
		if err := s.Delete(ctx, k); err == nil {
			t.Errorf("Delete(%q) accepted", k)
		}
	}
	for _, k := range []string{"a", "a/b", "2024/01/02/id/message.eml", "a.b/..c/d..", ".hidden"} {
		if err := CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q): %v", k, err)
		}
	}
	// Nothing escaped the root.
	entries, _ := os.ReadDir(filepath.Dir(s.Root()))
	if len(entries) != 1 {
		t.Errorf("entries beside the store: %v", entries)
	}
}

func TestNotFound(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	put(t, s, "a/b", "x")
	for _, k := range []string{"missing", "a/c", "a", "a/b/c"} {
		if _, err := s.Get(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", k, err)
		}
	}
	if err := s.Delete(ctx, "missing/x"); err != nil {
		t.Errorf("Delete of missing key: %v", err)
	}
}

func TestDeleteRemovesEmptyDirs(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	put(t, s, "2024/01/01/a/message.eml", "1")
	put(t, s, "2024/01/01/a/verdict.json", "2")
	put(t, s, "2024/01/02/b/message.eml", "3")
	for _, k := range []string{"2024/01/01/a/message.eml", "2024/01/01/a/verdict.json"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "2024", "01", "01")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty day directory left: %v", err)
	}
	if got := get(t, s, "2024/01/02/b/message.eml"); got != "3" {
		t.Errorf("sibling: %q", got)
	}
	if _, err := os.Stat(s.Root()); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

func TestListOrder(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	keys := []string{"a/b/c", "a/b.txt", "a/b0", "a/a", "b", "2024/01/10/x", "2024/01/02/y/z", "2024/01/02/y.z"}
	for _, k := range keys {
		put(t, s, k, k)
	}
	// A temporary file of an unfinished Put is not listed.
	if err := os.WriteFile(filepath.Join(s.Root(), "a", tempPrefix+"123"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(keys)
	slices.Sort(want)

	list := func(prefix string) []string {
		var got []string
		if err := s.List(ctx, prefix, func(k string) error {
			got = append(got, k)
			return nil
		}); err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		return got
	}
	if got := list(""); !slices.Equal(got, want) {
		t.Errorf("List: %q\nwant %q", got, want)
	}
	for _, prefix := range []string{"a/", "a/b", "2024/01/", "2024/01/0", "a/b/", "zzz", "nope/", "2024/01/02/y"} {
		var w []string
		for _, k := range want {
			if strings.HasPrefix(k, prefix) {
				w = append(w, k)
			}
		}
		if got := list(prefix); !slices.Equal(got, w) {
			t.Errorf("List(%q): %q, want %q", prefix, got, w)
		}
	}
	// fn's error stops the listing and comes back.
	stop := errors.New("stop")
	n := 0
	err := s.List(ctx, "", func(string) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("List with failing fn: %v after %d calls", err, n)
	}
	if err := s.List(ctx, "../", func(string) error { return nil }); err == nil {
		t.Error("List(\"../\") accepted")
	}
}

func TestSweep(t *testing.T) {
	s := newFS(t)
	ctx := context.Background()
	keys := []string{
		"2023/12/31/a/message.eml",
		"2024/01/01/b/message.eml",
		"2024/01/01/b/verdict.json",
		"2024/01/02/c/message.eml",
		"2024/01/03/d/message.eml",
		"1999-not-a-date",
		"replay/report.json",
	}
	for _, k := range keys {
		put(t, s, k, "x")
	}
	log := slog.New(slog.DiscardHandler)
	// 2024-01-02 12:00: 01-01 ended before it, 01-02 has not.
	n, err := Sweep(ctx, s, time.Date(2024, 1, 2, 12, 0, 0, 0, time.UTC), log)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("deleted %d, want 3", n)
	}
	var left []string
	s.List(ctx, "", func(k string) error { left = append(left, k); return nil })
	want := []string{"1999-not-a-date", "2024/01/02/c/message.eml", "2024/01/03/d/message.eml", "replay/report.json"}
	if !slices.Equal(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
	// A day ending exactly at before is swept.
	n, err = Sweep(ctx, s, time.Date(2024, 1, 3, 0, 0, 0, 0, time.UTC), log)
	if err != nil || n != 1 {
		t.Errorf("second sweep: %d, %v", n, err)
	}
}

func TestKeyDay(t *testing.T) {
	for key, want := range map[string]string{
		"2024/02/29/x":  "2024-02-29",
		"2024/02/30/x":  "",
		"2024/2/01/x":   "",
		"+024/02/01/x":  "",
		"2024/02/01/":   "",
		"2024-02-01/x/": "",
	} {
		day, ok := KeyDay(key)
		got := ""
		if ok {
			got = day.Format(time.DateOnly)
		}
		if got != want {
			t.Errorf("KeyDay(%q) = %q, want %q", key, got, want)
		}
	}
}

func FuzzCheckKey(f *testing.F) {
	for _, k := range []string{"a/b", "../x", "2024/01/02/id/message.eml", "a//b", "/x", ".", "a\\b", "2024/01/02/"} {
		f.Add(k)
	}
	root := f.TempDir()
	s, err := NewFS(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if day, ok := KeyDay(key); ok && day.Format(dayLayout) != key[:len(dayLayout)] {
			t.Fatalf("KeyDay(%q) = %v", key, day)
		}
		if CheckKey(key) != nil {
			return
		}
		p, err := s.path(key)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(s.Root(), p)
		if err != nil || rel != filepath.FromSlash(key) || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("key %q maps to %q (rel %q)", key, p, rel)
		}
	})
}

func put(t *testing.T, s *FS, key, body string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s *FS, key string) string {
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

// TestFSConformance runs the checks every Store must pass (storetest_test.go).
func TestFSConformance(t *testing.T) {
	testStore(t, newFS(t))
}
