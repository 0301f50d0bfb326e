package edge

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/session"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// dotReader notes when it returned EOF: the final dot, as the session's
// body reader reports it.
type dotReader struct {
	r   io.Reader
	mu  sync.Mutex
	eof time.Time
}

func (d *dotReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == io.EOF {
		d.mu.Lock()
		if d.eof.IsZero() {
			d.eof = time.Now()
		}
		d.mu.Unlock()
	}
	return n, err
}

func (d *dotReader) at() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.eof
}

// Issue 6: the job's deadline is the final dot plus job_timeout, however
// long the store took to take the message after the dot.
func TestPipelineDeadlineCountsFromTheFinalDot(t *testing.T) {
	b := newBed(t)
	const slow = 3 * time.Second
	store := &storeFuncs{Store: b.local, put: func(ctx context.Context, key string, r io.Reader) (int64, error) {
		data, err := io.ReadAll(r)
		if err != nil {
			return 0, err
		}
		select { // a store slow to confirm the upload
		case <-time.After(slow):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return b.local.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
	}}
	jobs := make(chan *sluicev1.FilterJob, 1)
	b.consume(t, func(ctx context.Context, job *sluicev1.FilterJob, attempt uint32) *sluicev1.Verdict {
		jobs <- job
		return accept(ctx, job, attempt)
	})
	const jobTimeout = 30 * time.Second
	p := b.pipeline(t, store, jobTimeout)
	body := &dotReader{r: strings.NewReader("Subject: slow store\r\n\r\nbody\r\n")}
	m, err := p.Filter(t.Context(), envelope(), body)
	if err != nil {
		t.Fatal(err)
	}
	job := <-jobs
	if job.GetClientHelo() != "client.example" || job.GetClientAddr() != "127.0.0.1" || job.GetSender() != "alice@example.com" {
		t.Errorf("job envelope: client %q helo %q sender %q", job.GetClientAddr(), job.GetClientHelo(), job.GetSender())
	}
	dot := body.at()
	want := dot.Add(jobTimeout)
	got := job.GetDeadline().AsTime()
	// Generous: the store's delay alone would push it past the bound.
	if got.After(want.Add(slow/2)) || got.Before(dot) {
		t.Errorf("job deadline %v after the final dot, want job_timeout (%v): the deadline must count from the dot, not from the end of the upload",
			got.Sub(dot), jobTimeout)
	}
	if !m.Deadline.Equal(got) {
		t.Errorf("message deadline %v, job deadline %v: the session must deliver by the same deadline", m.Deadline, got)
	}
}

// Issue 6: a store that hangs after the final dot (S3 frozen) is given up
// at final dot + job_timeout, not waited for without end.
func TestPipelineUploadEndsAtTheDeadline(t *testing.T) {
	b := newBed(t)
	store := &storeFuncs{Store: b.local, put: func(ctx context.Context, key string, r io.Reader) (int64, error) {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return 0, err
		}
		<-ctx.Done() // frozen once the last part is sent
		return 0, ctx.Err()
	}}
	const jobTimeout = 2 * time.Second
	p := b.pipeline(t, store, jobTimeout)
	body := &dotReader{r: strings.NewReader("Subject: frozen store\r\n\r\nbody\r\n")}
	select {
	case err := <-filterAsync(t, p, body):
		if err == nil || !strings.Contains(err.Error(), "job_timeout after the final dot passed") {
			t.Errorf("Filter: %v, want the upload given up at the deadline", err)
		}
		// Not before it either: the store had until then.
		if d := time.Since(body.at()); d < jobTimeout {
			t.Errorf("upload given up %v after the final dot, before job_timeout (%v)", d, jobTimeout)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Filter still storing 30s after the final dot, with job_timeout %v", jobTimeout)
	}
}

// endless is a client that keeps sending.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// Issue 6, before the final dot: a store that stops reading the body
// (S3 frozen while a large message's first part uploads) fails the upload
// after TimeOut without progress, so that the session can read the rest
// and answer 4xx.
func TestPipelineStalledStoreBeforeTheDot(t *testing.T) {
	b := newBed(t)
	store := &storeFuncs{Store: b.local, put: func(ctx context.Context, key string, r io.Reader) (int64, error) {
		if _, err := io.ReadFull(r, make([]byte, 64<<10)); err != nil {
			return 0, err
		}
		<-ctx.Done() // uploading the first part, for ever
		return 0, ctx.Err()
	}}
	p := b.pipeline(t, store, time.Minute)
	p.storeIdle = time.Second
	select {
	case err := <-filterAsync(t, p, endless{}):
		if err == nil || !strings.Contains(err.Error(), "the store stopped reading the message") {
			t.Errorf("Filter: %v, want the upload failed for a stalled store", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Filter still storing 30s after the store stopped reading, with TimeOut 1s")
	}
}

// slowClient pauses once in the middle of the body, as a slow sender does.
type slowClient struct {
	r      io.Reader
	pause  time.Duration
	paused bool
}

func (s *slowClient) Read(p []byte) (int, error) {
	if !s.paused {
		s.paused = true
		time.Sleep(s.pause)
	}
	return s.r.Read(p)
}

// The watchdog blames the store only: a client slower than TimeOut
// between two reads (the session's own limits bound it) is no stalled
// store.
func TestPipelineSlowClientIsNoStalledStore(t *testing.T) {
	b := newBed(t)
	b.consume(t, accept)
	p := b.pipeline(t, b.local, time.Minute)
	p.storeIdle = 500 * time.Millisecond
	body := &slowClient{r: strings.NewReader("Subject: slow client\r\n\r\nbody\r\n"), pause: 2 * time.Second}
	m, err := p.Filter(t.Context(), envelope(), body)
	if err != nil {
		t.Fatalf("Filter: %v", err)
	}
	if m.Verdict.Action != session.ActionAccept {
		t.Errorf("verdict %v", m.Verdict)
	}
}
