package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopSharedS3Server()
	os.Exit(code)
}

func TestS3Store(t *testing.T) {
	s := newTestS3(t, sharedS3Server(t), 0)
	testStore(t, s)
}

// A small part size makes the multipart paths (several parts, abort of
// a failed upload) run with the conformance suite's smaller bodies too.
func TestS3StoreMinPartSize(t *testing.T) {
	s := newTestS3(t, sharedS3Server(t), MinS3PartSize)
	testStore(t, s)
}

func TestS3FailedPutAbortsUpload(t *testing.T) {
	s := newTestS3(t, sharedS3Server(t), MinS3PartSize)
	ctx := t.Context()
	key := "2030/04/01/abort/message.eml"
	// Three parts go up before the reader fails.
	r := io.MultiReader(stBody(7, 3*int64(MinS3PartSize)+1000), stFailingReader{})
	if _, err := s.Put(ctx, key, r, -1); !errors.Is(err, errStFailing) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	var uploads []string
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, "", true) {
		if u.Err != nil {
			t.Fatalf("ListIncompleteUploads: %v", u.Err)
		}
		uploads = append(uploads, u.Key+" "+u.UploadID)
	}
	if len(uploads) != 0 {
		t.Errorf("incomplete uploads left after a failed Put: %q", uploads)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after failed Put: %v, want ErrNotFound", err)
	}
}

func TestNewS3Errors(t *testing.T) {
	v := sharedS3Server(t)
	ctx := t.Context()
	good := S3Options{Endpoint: v.addr, Bucket: "t-" + vgwRandom(8), AccessKey: v.access, SecretKey: v.secret, PathStyle: true}
	for _, c := range []struct {
		name  string
		edit  func(*S3Options)
		wants []string // in the error text
	}{
		{"MissingBucket", func(o *S3Options) {}, []string{v.addr, good.Bucket, "does not exist"}},
		{"WrongSecret", func(o *S3Options) { o.SecretKey = "wrong"; o.CreateBucket = true }, []string{v.addr, good.Bucket}},
		{"NoEndpoint", func(o *S3Options) { o.Endpoint = "" }, []string{"endpoint"}},
		{"NoBucket", func(o *S3Options) { o.Bucket = "" }, []string{v.addr, "bucket"}},
		{"SmallPartSize", func(o *S3Options) { o.PartSize = 1 << 20 }, []string{"part size"}},
		{"SchemeInEndpoint", func(o *S3Options) { o.Endpoint = "http://" + v.addr }, []string{v.addr}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.edit(&o)
			s, err := NewS3(ctx, o)
			if err == nil {
				t.Fatalf("NewS3 succeeded: %+v", s)
			}
			for _, w := range c.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	// CreateBucket creates it once, and later start-ups find it.
	o := good
	o.CreateBucket = true
	for i := range 2 {
		if _, err := NewS3(ctx, o); err != nil {
			t.Fatalf("NewS3 with CreateBucket, try %d: %v", i, err)
		}
	}
	o.CreateBucket = false
	if _, err := NewS3(ctx, o); err != nil {
		t.Fatalf("NewS3 of the created bucket: %v", err)
	}
}

func TestS3Ready(t *testing.T) {
	s := newTestS3(t, sharedS3Server(t), 0)
	ctx := t.Context()
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := s.client.RemoveBucket(ctx, s.bucket); err != nil {
		t.Fatalf("RemoveBucket: %v", err)
	}
	if err := s.Ready(ctx); err == nil || !strings.Contains(err.Error(), s.bucket) {
		t.Errorf("Ready without the bucket = %v, want an error naming it", err)
	}
}

// The edge turns blob store failures into 4xx replies, so with the server
// down every call must fail (not hang, and Get must not claim the key is
// missing), and the same S3 value must work once the server is back.
func TestS3ServerOutage(t *testing.T) {
	v := privateS3Server(t)
	s := newTestS3(t, v, 0)
	stPut(t, s, "2030/05/01/kept/message.eml", "kept")
	v.Stop()

	const deadline = 10 * time.Second
	for _, c := range []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"PutUnknownSize", func(ctx context.Context) error {
			_, err := s.Put(ctx, "2030/05/01/new/message.eml", stBody(1, 20<<20), -1)
			return err
		}},
		{"PutKnownSize", func(ctx context.Context) error {
			_, err := s.Put(ctx, "2030/05/01/new/verdict.json", stReader("{}"), 2)
			return err
		}},
		{"Get", func(ctx context.Context) error {
			rc, err := s.Get(ctx, "2030/05/01/kept/message.eml")
			if err == nil {
				rc.Close()
			} else if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("outage reported as ErrNotFound: %w", err)
			}
			return err
		}},
		{"Delete", func(ctx context.Context) error { return s.Delete(ctx, "2030/05/01/kept/message.eml") }},
		{"List", func(ctx context.Context) error {
			return s.List(ctx, "2030/", func(string) error { return nil })
		}},
		{"Ready", s.Ready},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		start := time.Now()
		err := s3WithHangGuard(t, deadline+20*time.Second, func() error { return c.op(ctx) })
		cancel()
		switch {
		case err == nil:
			t.Errorf("%s with the server down succeeded", c.name)
		case strings.Contains(err.Error(), "outage reported as ErrNotFound"):
			t.Errorf("%s: %v", c.name, err)
		default:
			t.Logf("%s with the server down: %v after %v", c.name, err, time.Since(start).Round(time.Millisecond))
		}
	}

	if err := v.Start(); err != nil {
		t.Fatalf("restarting versitygw on %s: %v", v.addr, err)
	}
	ctx := t.Context()
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after restart: %v", err)
	}
	if got := stGetString(t, s, "2030/05/01/kept/message.eml"); got != "kept" {
		t.Errorf("Get after restart = %q, want %q", got, "kept")
	}
	if _, err := s.Put(ctx, "2030/05/01/new/message.eml", stBody(2, 20<<20), -1); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	stList(t, s, "2030/05/01/", []string{"2030/05/01/kept/message.eml", "2030/05/01/new/message.eml"})
}

// A server that accepts connections and never answers must not hold a
// call past its ctx.
func TestS3UnresponsiveServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	err = s3WithHangGuard(t, deadline+20*time.Second, func() error {
		_, err := NewS3(ctx, S3Options{Endpoint: l.Addr().String(), Bucket: "bucket", AccessKey: "a", SecretKey: "s", PathStyle: true})
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewS3 against a silent server = %v, want the ctx deadline", err)
	}
}

// With nothing listening, retries are bounded by the client, not only by
// a long ctx.
func TestS3RefusedConnectionGivesUp(t *testing.T) {
	addr, err := vgwFreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	_, err = NewS3(ctx, S3Options{Endpoint: addr, Bucket: "bucket", AccessKey: "a", SecretKey: "s", PathStyle: true})
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("NewS3 with nothing listening = %v, want a connection error before the ctx deadline", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint", err)
	}
	t.Logf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestS3PutMemory measures what one upload of unknown size costs: about
// one part buffer, whatever the body's length. Without PutObjectOptions.
// PartSize minio-go would allocate ~537 MiB here.
func TestS3PutMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 64 MB twice")
	}
	v := sharedS3Server(t)
	const size = 64_000_000
	for _, ps := range []uint64{DefaultS3PartSize, MinS3PartSize} {
		s := newTestS3(t, v, ps)
		stPut(t, s, "warm-up", "x") // connection set-up is not per upload
		alloc, peak := s3MeasurePut(t, s, size)
		t.Logf("PartSize %d MiB: 64 MB unknown-size upload: TotalAlloc +%.1f MiB, peak HeapInuse +%.1f MiB",
			ps>>20, float64(alloc)/(1<<20), float64(peak)/(1<<20))
		// About one part buffer live; the body is neither held nor
		// copied whole (minio-go's own default would be ~537 MiB).
		if limit := 2*ps + 16<<20; peak > limit {
			t.Errorf("PartSize %d MiB: peak heap +%d, want under %d", ps>>20, peak, limit)
		}
		if alloc > size/2 {
			t.Errorf("PartSize %d MiB: allocated %d for a %d-byte body, want under half of it", ps>>20, alloc, size)
		}
	}
}

// s3MeasurePut uploads size bytes of unknown size and returns the bytes
// allocated meanwhile and the peak rise of HeapInuse, sampled every
// millisecond.
func s3MeasurePut(t testing.TB, s *S3, size int64) (alloc, peak uint64) {
	t.Helper()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	stop := make(chan struct{})
	peakCh := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var hi uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			hi = max(hi, m.HeapInuse)
			select {
			case <-stop:
				peakCh <- hi
				return
			case <-tick.C:
			}
		}
	}()
	n, err := s.Put(t.Context(), "2030/06/01/mem/message.eml", stBody(9, size), -1)
	close(stop)
	maxInuse := <-peakCh
	if err != nil || n != size {
		t.Fatalf("Put = %d, %v", n, err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	maxInuse = max(maxInuse, after.HeapInuse)
	if maxInuse > before.HeapInuse {
		peak = maxInuse - before.HeapInuse
	}
	return after.TotalAlloc - before.TotalAlloc, peak
}

// BenchmarkS3PutUnknownSize reports B/op for a 64 MB upload of unknown
// size with the default part size.
func BenchmarkS3PutUnknownSize(b *testing.B) {
	s := newTestS3(b, sharedS3Server(b), 0)
	const size = 64_000_000
	b.SetBytes(size)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Put(b.Context(), "2030/06/02/bench/message.eml", stBody(uint64(i), size), -1); err != nil {
			b.Fatal(err)
		}
	}
}

// s3WithHangGuard runs f and fails t if f has not returned within limit.
func s3WithHangGuard(t *testing.T, limit time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("call still running after %v", limit)
		return nil
	}
}

// A small body of unknown size is read to its end before the server is
// contacted: a caller that watches for the end (the edge, for the final
// dot of a message) sees it even while the server hangs.
func TestS3SmallBodyReadBeforeTheServerAnswers(t *testing.T) {
	v := privateS3Server(t)
	s := newTestS3(t, v, MinS3PartSize)
	if err := syscall.Kill(v.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(v.PID(), syscall.SIGCONT)
	body := &s3EOFReader{r: stBody(3, 200<<10)}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := s3WithHangGuard(t, 30*time.Second, func() error {
		_, err := s.Put(ctx, "2030/07/01/frozen/message.eml", body, -1)
		return err
	})
	if err == nil {
		t.Fatal("Put to a stopped server succeeded")
	}
	if !body.eof.Load() {
		t.Errorf("Put to a stopped server gave up (%v) with the body unread to its end", err)
	}
}

type s3EOFReader struct {
	r   io.Reader
	eof atomic.Bool
}

func (e *s3EOFReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof.Store(true)
	}
	return n, err
}

// freezingReader yields n bytes and stops the S3 server once it has
// given more than at: the multipart upload is under way then.
type freezingReader struct {
	r      io.Reader
	at     int64
	pid    int
	read   int64
	frozen atomic.Bool
}

func (f *freezingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.read += int64(n)
	if f.read > f.at && !f.frozen.Swap(true) {
		_ = syscall.Kill(f.pid, syscall.SIGSTOP)
	}
	return n, err
}

// A multipart upload to a server that hangs returns when its context
// ends, not when minio-go's own abort of the upload gives up (a minute
// later): the edge's sender is waiting (the fault suite's S3 freeze met
// it once).
func TestS3PutReturnsAtItsDeadline(t *testing.T) {
	v := privateS3Server(t)
	s := newTestS3(t, v, MinS3PartSize)
	defer syscall.Kill(v.PID(), syscall.SIGCONT)
	body := &freezingReader{r: stBody(9, 7<<20), at: 6 << 20, pid: v.PID()}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := s3WithHangGuard(t, 30*time.Second, func() error {
		_, err := s.Put(ctx, "2030/07/02/frozen/message.eml", body, -1)
		return err
	})
	if err == nil {
		t.Fatal("Put to a stopped server succeeded")
	}
	if !body.frozen.Load() {
		t.Fatal("the server was not stopped during the upload")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Put returned %v after it started, its deadline was 5s", d.Round(time.Second))
	}
}
