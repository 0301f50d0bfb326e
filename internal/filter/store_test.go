package filter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowStore is a store's writer that makes its first write wait: an S3
// upload held up by a slow or frozen server. With fail set, the write
// then fails.
type slowStore struct {
	delay time.Duration
	fail  error

	once sync.Once
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (s *slowStore) Write(p []byte) (int, error) {
	s.once.Do(func() { time.Sleep(s.delay) })
	if s.fail != nil {
		return 0, s.fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *slowStore) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func runSlow(t *testing.T, ctx context.Context, spec Spec, in string, out *slowStore) (Result, error) {
	t.Helper()
	spec.TempDir = t.TempDir()
	return Run(ctx, spec, stdEnv(), strings.NewReader(in), out)
}

// TestSlowStoreIsNotTheFilter: the shell is done and its output is in
// the pipe, but the store keeps the copier waiting for longer than the
// grace for background processes. That wait is the store's: the message
// is delivered once the store takes it.
func TestSlowStoreIsNotTheFilter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out := &slowStore{delay: 1500 * time.Millisecond}
	res, err := runSlow(t, ctx, Spec{Command: "cat", KillGrace: 300 * time.Millisecond}, msg, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || out.String() != msg {
		t.Errorf("result %+v, output %q; want Accept and the message", res, out.String())
	}
}

// TestSlowStoreDoesNotCountAgainstTimeout: a filter blocked on its stdout
// because the store is slow is not using its FilterTimeout.
func TestSlowStoreDoesNotCountAgainstTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: more than the pipe holds
	out := &slowStore{delay: 1500 * time.Millisecond}
	res, err := runSlow(t, ctx, Spec{Command: "cat", Timeout: 500 * time.Millisecond, KillGrace: 300 * time.Millisecond}, big, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || out.String() != big {
		t.Errorf("result %+v, %d bytes out; want Accept and the message", res, len(out.String()))
	}
}

// TestSlowStoreThenFails: the store's failure is the store's, not the
// filter's.
func TestSlowStoreThenFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out := &slowStore{delay: time.Second, fail: errors.New("store: upload failed")}
	res, err := runSlow(t, ctx, Spec{Command: "cat", KillGrace: 300 * time.Millisecond}, msg, out)
	if err == nil || !strings.Contains(err.Error(), "upload failed") {
		t.Fatalf("err = %v, want the store's error", err)
	}
	if res.Action != TempFail || !strings.Contains(res.Detail, "upload failed") {
		t.Errorf("result %+v, want a TempFail naming the store's error", res)
	}
}

// TestStoreStallsPastTheJob: the store holds the copier until the job's
// context ends (and longer): that is the store's failure, returned as an
// error so that the worker answers its own 4xx.
func TestStoreStallsPastTheJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	out := &slowStore{delay: 2 * time.Second}
	res, err := runSlow(t, ctx, Spec{Command: "cat", KillGrace: 200 * time.Millisecond}, msg, out)
	if err == nil || !strings.Contains(err.Error(), "store") {
		t.Fatalf("err = %v (result %+v), want the store's failure", err, res)
	}
	if res.Action != TempFail || strings.Contains(res.Detail, "kept stdout") {
		t.Errorf("result %+v, want a TempFail that blames the store", res)
	}
}

// slowReader gives the message, but makes the filter wait for the rest of
// it: a GET from a store that stalls mid-stream.
type slowReader struct {
	first, rest string
	delay       time.Duration
	n           int
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.n++
	switch s.n {
	case 1:
		return copy(p, s.first), nil
	case 2:
		time.Sleep(s.delay)
		return copy(p, s.rest), nil
	}
	return 0, io.EOF
}

// TestSlowMessageDoesNotCountAgainstTimeout: a filter waiting on its
// stdin because the store is slow to give the message is not slow.
func TestSlowMessageDoesNotCountAgainstTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	in := &slowReader{first: "Subject: test\r\n", rest: "\r\nhello\r\n", delay: 1500 * time.Millisecond}
	var out bytes.Buffer
	res, err := Run(ctx, Spec{Command: "cat", Timeout: 500 * time.Millisecond, TempDir: t.TempDir()}, stdEnv(), in, &out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || out.String() != msg {
		t.Errorf("result %+v, output %q; want Accept and the message", res, out.String())
	}
}

// TestMessageStallsPastTheJob: a store that never gives the rest of the
// message before the job's context ends fails the job as the store's
// failure.
func TestMessageStallsPastTheJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	in := &slowReader{first: "Subject: test\r\n", rest: "\r\nhello\r\n", delay: 2 * time.Second}
	var out bytes.Buffer
	res, err := Run(ctx, Spec{Command: "cat", Timeout: 300 * time.Millisecond, KillGrace: 200 * time.Millisecond, TempDir: t.TempDir()},
		stdEnv(), in, &out)
	if err == nil || !strings.Contains(err.Error(), "store") {
		t.Fatalf("err = %v (result %+v), want the store's failure", err, res)
	}
	if res.Action != TempFail || strings.Contains(res.Detail, "timed out") {
		t.Errorf("result %+v, want a TempFail that blames the store", res)
	}
}
