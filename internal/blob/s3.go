package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Part sizes for multipart uploads. S3 refuses parts under 5 MiB (except
// the last one).
const (
	DefaultS3PartSize uint64 = 16 << 20
	MinS3PartSize     uint64 = 5 << 20
)

// Client-side limits, so that a dead or black-holed endpoint fails within
// seconds rather than minio-go's defaults (30 s dial, 10 retries); callers
// still bound every call with their ctx.
const (
	s3DialTimeout = 2 * time.Second
	s3TLSTimeout  = 5 * time.Second
	s3MaxRetries  = 5
)

// s3SmallBody is the largest body of unknown size that Put reads whole
// before it contacts the server, then sends in one PUT of known size.
// A multipart upload of unknown size starts with a request of its own
// before it reads any data, so a hanging server would otherwise leave the
// body unread: an SMTP message's final dot, for one, would not be seen
// until the server answered. Most mail is far smaller; the cost is at
// most this much memory per upload, where minio-go's multipart path
// holds a whole part.
const s3SmallBody = 1 << 20

// S3Options configures an S3 store. Endpoint and Bucket are required.
type S3Options struct {
	// Endpoint is host:port, without a scheme.
	Endpoint string
	Bucket   string
	// Region defaults to us-east-1.
	Region                             string
	AccessKey, SecretKey, SessionToken string
	// TLS selects https.
	TLS bool
	// PathStyle addresses the bucket as a path (http://host/bucket/key)
	// rather than a virtual host, as most self-hosted servers need.
	PathStyle bool
	// CreateBucket creates the bucket at start-up when it is missing.
	CreateBucket bool
	// PartSize is the multipart part size, default 16 MiB, minimum 5 MiB.
	// Each upload of a body over 1 MiB holds one buffer of PartSize: budget
	// about PartSize + 5 MiB of heap per concurrent upload. Smaller bodies
	// of unknown size are read whole and sent in one PUT. Measured by
	// TestS3PutMemory (minio-go v7.4.1, versitygw): one 64 MB upload of
	// unknown size raised HeapInuse by at most 21 MiB and allocated
	// 22 MiB in all with 16 MiB parts (10 and 15 MiB with 5 MiB parts).
	// Bodies of known size up to PartSize go out in one streamed PUT
	// without that buffer. Parts also bound the object size, to 10,000
	// parts (156 GiB with 16 MiB parts).
	PartSize uint64
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// S3 is a Store on an S3-compatible server (AWS S3, MinIO, Ceph RGW,
// SeaweedFS, versitygw), through minio-go. It is safe for concurrent use
// and survives the server going away: once the server is back, calls
// succeed again on the same value.
type S3 struct {
	client   *minio.Client
	bucket   string
	endpoint string
	partSize uint64
	log      *slog.Logger
}

var _ Store = (*S3)(nil)

// NewS3 connects to the server and checks that the bucket exists,
// creating it when o.CreateBucket is set.
func NewS3(ctx context.Context, o S3Options) (*S3, error) {
	if o.Endpoint == "" {
		return nil, errors.New("blob: s3: no endpoint configured")
	}
	if o.Bucket == "" {
		return nil, fmt.Errorf("blob: s3 %s: no bucket configured", o.Endpoint)
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultS3PartSize
	}
	if o.PartSize < MinS3PartSize {
		return nil, fmt.Errorf("blob: s3 %s: part size %d is below the S3 minimum of %d bytes", o.Endpoint, o.PartSize, MinS3PartSize)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}

	tr, err := minio.DefaultTransport(o.TLS)
	if err != nil {
		return nil, fmt.Errorf("blob: s3 %s: transport: %w", o.Endpoint, err)
	}
	tr.DialContext = (&net.Dialer{Timeout: s3DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = s3TLSTimeout

	lookup := minio.BucketLookupAuto
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(o.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, o.SessionToken),
		Secure:       o.TLS,
		Transport:    tr,
		Region:       o.Region, // known region: no GetBucketLocation round trip
		BucketLookup: lookup,
		MaxRetries:   s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("blob: s3 %s: %w", o.Endpoint, err)
	}
	s := &S3{
		client:   client,
		bucket:   o.Bucket,
		endpoint: o.Endpoint,
		partSize: o.PartSize,
		log:      o.Logger,
	}

	ok, err := client.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, s.errorf(err, "checking bucket")
	}
	if ok {
		return s, nil
	}
	if !o.CreateBucket {
		return nil, fmt.Errorf("blob: s3 %s: bucket %q does not exist (create it, or set store.s3.create_bucket)", o.Endpoint, o.Bucket)
	}
	err = client.MakeBucket(ctx, o.Bucket, minio.MakeBucketOptions{Region: o.Region})
	switch minio.ToErrorResponse(err).Code {
	case "":
		s.log.Info("created bucket", "endpoint", o.Endpoint, "bucket", o.Bucket)
	case minio.BucketAlreadyOwnedByYou:
		// Another instance created it first.
	default:
		return nil, s.errorf(err, "creating bucket")
	}
	return s, nil
}

// Put stores r under key. With size -1 a body of at most 1 MiB is read
// to its end before the server is contacted and sent in one PUT; a
// larger one as a multipart upload in parts of PartSize, holding one part
// (PartSize bytes) in memory. With a known size, bodies up to PartSize go out in one streamed
// PUT and larger ones in parts. A known size must be exact: a body of
// another length fails the Put. r is read sequentially from its current
// position. On failure minio-go aborts the multipart upload (a single PUT
// cut short is discarded by the server), so no object appears and an
// object already at key stays as it was.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	opts := minio.PutObjectOptions{
		// Without PartSize an upload of unknown size allocates ~537 MiB.
		PartSize: s.partSize,
	}
	var body io.Reader
	switch {
	case size < 0:
		head, err := io.ReadAll(io.LimitReader(r, s3SmallBody+1))
		if err != nil {
			return 0, s.errorf(err, "put %s", key)
		}
		if len(head) <= s3SmallBody {
			// The whole body (an empty one goes the size-0 way below).
			size = int64(len(head))
			body = bytes.NewReader(head)
			break
		}
		// Hides io.ReaderAt too: for that minio-go would upload parts
		// from offset 0, whatever r's position.
		body = io.MultiReader(bytes.NewReader(head), r)
	case size == 0:
		// Nothing will read r: check here that it is empty.
		if err := s3CheckEOF(r); err != nil {
			return 0, s.errorf(err, "put %s", key)
		}
	default:
		body = &s3SizedReader{r: r, left: size}
	}
	if size == 0 {
		body = io.MultiReader()
		// minio-go's chunk-signed (streaming) encoding of an empty body
		// leaves bytes unread on versitygw's connection, failing the next
		// request on it: send it unchunked.
		opts.DisableContentSha256 = true
	}
	n, err := s.putObject(ctx, key, body, size, opts)
	if err != nil {
		return 0, s.errorf(err, "put %s", key)
	}
	return n, nil
}

// putObject is PutObject, returning when ctx ends whatever minio-go does.
// When a multipart upload fails, minio-go aborts it on a context of its
// own that outlives ctx by up to a minute: against a server that hangs,
// the caller (an edge whose sender waits) would wait that long too. The
// upload then finishes in the background, and the caller's reader is
// never read again once this returns.
func (s *S3) putObject(ctx context.Context, key string, body io.Reader, size int64, opts minio.PutObjectOptions) (int64, error) {
	// A body of our own (bytes read ahead) may be read on after we
	// return; the caller's reader is gated.
	rd, gate := body, (*gateReader)(nil)
	if _, own := body.(*bytes.Reader); !own {
		gate = &gateReader{r: body}
		rd = gate
	}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		info, err := s.client.PutObject(ctx, s.bucket, key, rd, size, opts)
		done <- result{info.Size, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done: // finished meanwhile: its own answer
		return r.n, r.err
	default:
	}
	if gate != nil {
		gate.close()
	}
	return 0, ctx.Err()
}

// gateReader passes reads through until closed, then fails them: a
// reader handed to a call that may outlive its caller.
type gateReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *gateReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errGateClosed
	}
	return g.r.Read(p)
}

// close waits for a read in progress, then fails every later one.
func (g *gateReader) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

var errGateClosed = errors.New("blob: upload abandoned")

// Get opens key for reading. The object is requested before Get returns,
// so a missing key is ErrNotFound here and not at the first Read; ctx
// must stay live while the body is read.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	// Core's GetObject issues the request now and hands back the response
	// body; Client's is lazy and would report absence only at Read.
	rc, _, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, fmt.Errorf("blob: s3 %s/%s: get %s: %w", s.endpoint, s.bucket, key, ErrNotFound)
		}
		return nil, s.errorf(err, "get %s", key)
	}
	return rc, nil
}

// Delete removes key; S3 reports success for a missing key too.
func (s *S3) Delete(ctx context.Context, key string) error {
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.errorf(err, "delete %s", key)
	}
	return nil
}

// List calls fn with every key that starts with prefix, in the server's
// order, which S3 defines as lexical (UTF-8 binary).
func (s *S3) List(ctx context.Context, prefix string, fn func(key string) error) error {
	objs := s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true})
	for obj := range objs {
		if obj.Err != nil {
			return s.errorf(obj.Err, "list %q", prefix)
		}
		if err := fn(obj.Key); err != nil {
			return err
		}
	}
	return nil
}

var errS3SizeMismatch = errors.New("body length differs from the size given")

// s3SizedReader fails the upload when r is not exactly left bytes long.
// Errors come with no data and stick: minio-go fills buffers with
// io.ReadFull-like loops, which drop an error that arrives with the bytes
// completing a buffer, and would then store a body cut to size.
type s3SizedReader struct {
	r    io.Reader
	left int64
	err  error
}

func (s *s3SizedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	switch {
	case s.left == 0:
		// Before handing over the last bytes, make sure no more follow.
		s.err = s3CheckEOF(s.r)
	case err == io.EOF:
		s.err = fmt.Errorf("%w: %d bytes missing", errS3SizeMismatch, s.left)
	default:
		s.err = err
	}
	if s.err != nil {
		return 0, s.err
	}
	return n, nil
}

// s3CheckEOF reads one byte to see whether r has more.
func s3CheckEOF(r io.Reader) error {
	var one [1]byte
	switch n, err := io.ReadFull(r, one[:]); {
	case n > 0:
		return fmt.Errorf("%w: body is longer", errS3SizeMismatch)
	case err == io.EOF:
		return nil
	default:
		return err
	}
}

// Ready reports whether the server answers and the bucket exists: one
// HEAD request, for readiness endpoints.
func (s *S3) Ready(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.errorf(err, "checking bucket")
	}
	if !ok {
		return fmt.Errorf("blob: s3 %s: bucket %q does not exist", s.endpoint, s.bucket)
	}
	return nil
}

func (s *S3) errorf(err error, format string, args ...any) error {
	return fmt.Errorf("blob: s3 %s/%s: %s: %w", s.endpoint, s.bucket, fmt.Sprintf(format, args...), err)
}
