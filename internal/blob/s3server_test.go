package blob

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A real S3 server for the tests: versitygw with its POSIX backend.
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// Without the binary the S3 tests skip, unless SLUICE_REQUIRE_S3=1 (as in
// CI), where they fail.

const vgwInstallHint = "versitygw not found on PATH or in $(go env GOPATH)/bin; install it with: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

var errNoVersitygw = errors.New(vgwInstallHint)

// versitygw is one server process. Stop and Start again keep its address,
// data directory and credentials, as a restarted server would.
type versitygw struct {
	bin, dir, addr string
	access, secret string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// findVersitygw looks on PATH, then in $(go env GOPATH)/bin.
func findVersitygw() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errNoVersitygw
}

// newVersitygw starts a server on a free loopback port with its data under
// dir and random credentials.
func newVersitygw(dir string) (*versitygw, error) {
	bin, err := findVersitygw()
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A free port can be taken between choosing and binding it: retry.
	for range 3 {
		addr, err := vgwFreeAddr()
		if err != nil {
			return nil, err
		}
		v := &versitygw{bin: bin, dir: dir, addr: addr, access: vgwRandom(10), secret: vgwRandom(20)}
		if lastErr = v.Start(); lastErr == nil {
			return v, nil
		}
	}
	return nil, lastErr
}

func vgwFreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func vgwRandom(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Start runs the server and waits until it answers HTTP, for at most 10 s.
func (v *versitygw) Start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		return errors.New("versitygw already running")
	}
	cmd := exec.Command(v.bin, "--port", v.addr, "--access", v.access, "--secret", v.secret,
		"--quiet", "--keep-alive", "posix", v.dir)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = vgwSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting versitygw: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("versitygw on %s exited at start-up: %s", v.addr, out.String())
		default:
		}
		// Any HTTP answer (403 without credentials) means it serves.
		if resp, err := hc.Get("http://" + v.addr + "/"); err == nil {
			resp.Body.Close()
			v.cmd, v.done = cmd, done
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("versitygw on %s did not answer within 10 s: %s", v.addr, out.String())
}

// Stop terminates exactly the process Start started and waits for it.
func (v *versitygw) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
	v.cmd, v.done = nil, nil
}

// The package's shared server, started by the first test that needs it
// and stopped by TestMain.
var (
	sharedVGWOnce sync.Once
	sharedVGW     *versitygw
	sharedVGWErr  error
	sharedVGWDir  string
)

// vgwRequire reports whether a missing versitygw must fail the tests.
func vgwRequire() bool { return os.Getenv("SLUICE_REQUIRE_S3") == "1" }

// vgwUnavailable skips or fails t for a server that could not be started.
func vgwUnavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errNoVersitygw) && !vgwRequire() {
		t.Skip(err)
	}
	t.Fatalf("S3 test server: %v", err)
}

// sharedS3Server returns the package's shared versitygw.
func sharedS3Server(t testing.TB) *versitygw {
	t.Helper()
	sharedVGWOnce.Do(func() {
		sharedVGWDir, sharedVGWErr = os.MkdirTemp("", "sluice-blob-versitygw-")
		if sharedVGWErr == nil {
			sharedVGW, sharedVGWErr = newVersitygw(sharedVGWDir)
		}
	})
	if sharedVGW == nil {
		vgwUnavailable(t, sharedVGWErr)
	}
	return sharedVGW
}

// privateS3Server starts a server for t alone (for tests that stop it),
// stopped when t ends.
func privateS3Server(t testing.TB) *versitygw {
	t.Helper()
	v, err := newVersitygw(t.TempDir())
	if err != nil {
		vgwUnavailable(t, err)
	}
	t.Cleanup(v.Stop)
	return v
}

// newTestS3 opens a fresh bucket on v.
func newTestS3(t testing.TB, v *versitygw, partSize uint64) *S3 {
	t.Helper()
	ctx := t.Context()
	s, err := NewS3(ctx, S3Options{
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
