package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// testStore checks that s behaves as the Store contract says. s must be
// empty and used by nothing else while the test runs. It writes a few
// hundred MB in total, streamed.
func testStore(t *testing.T, s Store) {
	t.Run("RoundTripStreamed50MBUnknownSize", func(t *testing.T) {
		key := Key("stream", stDay(2030, 1, 1), MessageName)
		const size = 50_000_000
		src := stBody(1, size)
		want := sha256.New()
		n, err := s.Put(t.Context(), key, io.TeeReader(src, want), -1)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if n != size {
			t.Errorf("Put returned %d, want %d", n, size)
		}
		gotLen, gotSum := stGetHash(t, s, key)
		if gotLen != size || !bytes.Equal(gotSum, want.Sum(nil)) {
			t.Errorf("Get: %d bytes, sha256 %x; want %d bytes, sha256 %x", gotLen, gotSum, size, want.Sum(nil))
		}
	})

	t.Run("KnownSize", func(t *testing.T) {
		for _, size := range []int64{0, 1, 100_000, 20 << 20} {
			key := Key(fmt.Sprintf("known-%d", size), stDay(2030, 1, 2), MessageName)
			want := sha256.New()
			// A plain reader: no ReaderAt or Seeker for the store to use.
			src := io.TeeReader(stBody(uint64(size), size), want)
			n, err := s.Put(t.Context(), key, src, size)
			if err != nil {
				t.Fatalf("Put %d bytes: %v", size, err)
			}
			if n != size {
				t.Errorf("Put %d bytes returned %d", size, n)
			}
			gotLen, gotSum := stGetHash(t, s, key)
			if gotLen != size || !bytes.Equal(gotSum, want.Sum(nil)) {
				t.Errorf("Get of %d-byte object: %d bytes, sha256 %x, want %x", size, gotLen, gotSum, want.Sum(nil))
			}
		}
		// A bytes.Reader already read from: only the rest is the body.
		r := bytes.NewReader([]byte("skipped|the body"))
		r.Seek(int64(len("skipped|")), io.SeekStart)
		key := Key("known-partly-read", stDay(2030, 1, 2), MessageName)
		if _, err := s.Put(t.Context(), key, r, int64(r.Len())); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if got := stGetString(t, s, key); got != "the body" {
			t.Errorf("Get = %q, want %q", got, "the body")
		}
	})

	t.Run("EmptyUnknownSize", func(t *testing.T) {
		key := Key("empty", stDay(2030, 1, 3), MessageName)
		if n, err := s.Put(t.Context(), key, stReader(""), -1); err != nil || n != 0 {
			t.Fatalf("Put = %d, %v; want 0, nil", n, err)
		}
		if got := stGetString(t, s, key); got != "" {
			t.Errorf("Get = %q, want empty", got)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		key := Key("over", stDay(2030, 1, 4), FilteredName)
		stPut(t, s, key, "first version, the longer one")
		stPut(t, s, key, "second")
		if got := stGetString(t, s, key); got != "second" {
			t.Errorf("Get after overwrite = %q, want %q", got, "second")
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		stPut(t, s, Key("something", stDay(2030, 1, 5), MessageName), "x")
		for _, key := range []string{
			Key("nothing", stDay(2030, 1, 5), MessageName),
			"2030/01/05", // a directory, for stores that have them
		} {
			rc, err := s.Get(t.Context(), key)
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
			}
		}
	})

	t.Run("Delete", func(t *testing.T) {
		key := Key("del", stDay(2030, 1, 6), RecordName)
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete of missing key: %v", err)
		}
		stPut(t, s, key, "{}")
		if err := s.Delete(t.Context(), key); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Get(t.Context(), key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete: %v, want ErrNotFound", err)
		}
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("second Delete: %v", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		stList(t, s, "2031/", nil) // nothing yet
		// Put in an order unlike the listing's; "abc-1" sorts before
		// "abc/" because '-' < '/'.
		for _, k := range []string{
			Key("y", stDay(2031, 6, 1), MessageName),
			Key("b", stDay(2031, 5, 7), MessageName),
			Key("abc", stDay(2031, 5, 7), RecordName),
			Key("abc", stDay(2031, 5, 7), MessageName),
			Key("abc", stDay(2031, 5, 7), FilteredName),
			Key("abc-1", stDay(2031, 5, 7), MessageName),
			Key("x", stDay(2031, 5, 8), MessageName),
			Key("abc-1", stDay(2031, 5, 7), RecordName),
		} {
			stPut(t, s, k, k)
		}
		day7 := []string{
			"2031/05/07/abc-1/message.eml",
			"2031/05/07/abc-1/verdict.json",
			"2031/05/07/abc/filtered.eml",
			"2031/05/07/abc/message.eml",
			"2031/05/07/abc/verdict.json",
			"2031/05/07/b/message.eml",
		}
		stList(t, s, "2031/05/07/", day7)
		stList(t, s, "2031/05/07", day7)
		stList(t, s, "2031/05/", append(slices.Clone(day7), "2031/05/08/x/message.eml"))
		stList(t, s, "2031/", append(slices.Clone(day7), "2031/05/08/x/message.eml", "2031/06/01/y/message.eml"))
		stList(t, s, "2031/05/07/abc/", day7[2:5])
		stList(t, s, "2031/05/07/abc", day7[:5])
		stList(t, s, "2031/05/09/", nil)
		stList(t, s, "2032/", nil)

		// fn's error stops the listing and comes back.
		errStopHere := errors.New("enough")
		var seen []string
		err := s.List(t.Context(), "2031/", func(key string) error {
			seen = append(seen, key)
			if len(seen) == 2 {
				return errStopHere
			}
			return nil
		})
		if !errors.Is(err, errStopHere) {
			t.Errorf("List returned %v, want fn's error", err)
		}
		if !slices.Equal(seen, day7[:2]) {
			t.Errorf("List called fn with %q after fn failed, want %q", seen, day7[:2])
		}
	})

	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		for i, c := range []struct {
			name         string
			good         int64  // bytes before the reader fails
			size         int64  // passed to Put
			readerErr    bool   // the reader fails; else it ends early or late
			bodyLen      int64  // when !readerErr
			existingBody string // an object already at the key
		}{
			{name: "UnknownSizeEarly", good: 1 << 20, size: -1, readerErr: true},
			{name: "UnknownSizeAfterAPart", good: 20 << 20, size: -1, readerErr: true},
			{name: "KnownSizeSmall", good: 512 << 10, size: 1 << 20, readerErr: true},
			{name: "KnownSizeLarge", good: 20 << 20, size: 30 << 20, readerErr: true},
			{name: "KnownSizeTooShort", size: 2 << 20, bodyLen: 1 << 20},
			{name: "KnownSizeTooLong", size: 1 << 20, bodyLen: 2 << 20},
			{name: "KnownSizeZeroButNot", size: 0, bodyLen: 10},
			{name: "OverExisting", good: 20 << 20, size: -1, readerErr: true, existingBody: "old"},
		} {
			t.Run(c.name, func(t *testing.T) {
				key := Key(fmt.Sprintf("fail-%d", i), stDay(2030, 2, 1), MessageName)
				if c.existingBody != "" {
					stPut(t, s, key, c.existingBody)
				}
				var r io.Reader
				if c.readerErr {
					r = io.MultiReader(stBody(uint64(i), c.good), stFailingReader{})
				} else {
					r = stBody(uint64(i), c.bodyLen)
				}
				if _, err := s.Put(t.Context(), key, r, c.size); err == nil {
					t.Fatal("Put succeeded")
				}
				rc, err := s.Get(t.Context(), key)
				switch {
				case c.existingBody == "" && !errors.Is(err, ErrNotFound):
					if err == nil {
						n, _ := io.Copy(io.Discard, rc)
						rc.Close()
						t.Fatalf("failed Put left a %d-byte object", n)
					}
					t.Fatalf("Get after failed Put: %v, want ErrNotFound", err)
				case c.existingBody != "" && err == nil:
					// The old object may survive, whole; never a partial new one.
					b, _ := io.ReadAll(io.LimitReader(rc, 100))
					rc.Close()
					if string(b) != c.existingBody {
						t.Fatalf("after failed Put over %q, Get = %d bytes", c.existingBody, len(b))
					}
				case c.existingBody != "" && !errors.Is(err, ErrNotFound):
					t.Fatalf("Get after failed Put: %v", err)
				}
				if c.existingBody == "" {
					stList(t, s, key, nil)
				}
			})
		}
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		const n = 8
		sums := make([][]byte, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				key := Key(fmt.Sprintf("conc-%d", i), stDay(2030, 3, 1), MessageName)
				h := sha256.New()
				size := int64(i)<<20 + int64(i)
				if _, err := s.Put(t.Context(), key, io.TeeReader(stBody(uint64(100+i), size), h), -1); err != nil {
					errs <- fmt.Errorf("Put %s: %w", key, err)
				}
				sums[i] = h.Sum(nil)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for i := range n {
			key := Key(fmt.Sprintf("conc-%d", i), stDay(2030, 3, 1), MessageName)
			gotLen, gotSum := stGetHash(t, s, key)
			if wantLen := int64(i)<<20 + int64(i); gotLen != wantLen || !bytes.Equal(gotSum, sums[i]) {
				t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, %x", key, gotLen, gotSum, wantLen, sums[i])
			}
		}
	})
}

func stDay(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 12, 0, 0, 0, time.UTC)
}

// stBody is n pseudo-random bytes from seed, generated as read.
func stBody(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// stReader hides everything of a strings.Reader but Read.
func stReader(s string) io.Reader {
	return struct{ io.Reader }{bytes.NewReader([]byte(s))}
}

var errStFailing = errors.New("storetest: reader broke")

type stFailingReader struct{}

func (stFailingReader) Read([]byte) (int, error) { return 0, errStFailing }

func stPut(t *testing.T, s Store, key, body string) {
	t.Helper()
	n, err := s.Put(t.Context(), key, stReader(body), int64(len(body)))
	if err != nil || n != int64(len(body)) {
		t.Fatalf("Put(%q) = %d, %v", key, n, err)
	}
}

func stGetString(t *testing.T, s Store, key string) string {
	t.Helper()
	rc, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return string(b)
}

func stGetHash(t *testing.T, s Store, key string) (int64, []byte) {
	t.Helper()
	rc, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("reading %q: %v", key, err)
	}
	return n, h.Sum(nil)
}

func stList(t *testing.T, s Store, prefix string, want []string) {
	t.Helper()
	var got []string
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := s.List(ctx, prefix, func(key string) error {
		got = append(got, key)
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("List(%q) =\n%q\nwant\n%q", prefix, got, want)
	}
}
