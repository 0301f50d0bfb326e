package blob

import (
	"os"
	"sync"
	"testing"

	"github.com/sluice-mail/sluice/internal/s3test"
)

// The S3 tests run against a real server, versitygw, from internal/s3test;
// without the binary they skip, unless SLUICE_REQUIRE_S3=1 (as in CI).

// versitygw names the server's fields as these tests use them.
type versitygw struct {
	*s3test.Server
	addr, access, secret string
}

func wrapVGW(s *s3test.Server) *versitygw {
	return &versitygw{Server: s, addr: s.Endpoint, access: s.AccessKey, secret: s.SecretKey}
}

func vgwFreeAddr() (string, error) { return s3test.FreeAddr() }

func vgwRandom(n int) string { return s3test.RandomKey(n) }

// The package's shared server, started by the first test that needs it
// and stopped by TestMain.
var (
	sharedVGWOnce sync.Once
	sharedVGW     *versitygw
	sharedVGWErr  error
	sharedVGWDir  string
)

// sharedS3Server returns the package's shared versitygw.
func sharedS3Server(t testing.TB) *versitygw {
	t.Helper()
	sharedVGWOnce.Do(func() {
		sharedVGWDir, sharedVGWErr = os.MkdirTemp("", "sluice-blob-versitygw-")
		if sharedVGWErr == nil {
			var s *s3test.Server
			if s, sharedVGWErr = s3test.New(sharedVGWDir); sharedVGWErr == nil {
				sharedVGW = wrapVGW(s)
			}
		}
	})
	if sharedVGW == nil {
		s3test.Unavailable(t, sharedVGWErr)
	}
	return sharedVGW
}

// privateS3Server starts a server for t alone (for tests that stop it),
// stopped when t ends.
func privateS3Server(t testing.TB) *versitygw {
	t.Helper()
	return wrapVGW(s3test.Start(t))
}

// newTestS3 opens a fresh bucket on v.
func newTestS3(t testing.TB, v *versitygw, partSize uint64) *S3 {
	t.Helper()
	s, err := NewS3(t.Context(), S3Options{
		Endpoint:     v.addr,
		Bucket:       "t-" + vgwRandom(8),
		AccessKey:    v.access,
		SecretKey:    v.secret,
		PathStyle:    true,
		CreateBucket: true,
		PartSize:     partSize,
	})
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return s
}

// stopSharedS3Server ends the shared server, if one was started.
func stopSharedS3Server() {
	if sharedVGW != nil {
		sharedVGW.Stop()
	}
	if sharedVGWDir != "" {
		os.RemoveAll(sharedVGWDir)
	}
}
