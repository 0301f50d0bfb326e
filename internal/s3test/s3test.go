// Package s3test runs a real S3 server for tests: versitygw with its POSIX
// backend, on a free loopback port, with random credentials, a private
// data directory, and a process that dies with the test binary.
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// Without the binary, Start skips the test, unless SLUICE_REQUIRE_S3=1 (as
// in CI), where it fails.
package s3test

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

	"github.com/sluice-mail/sluice/internal/testproc"
)

// InstallHint says how to get the server.
const InstallHint = "install it with: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// ErrNotInstalled means no versitygw binary was found.
var ErrNotInstalled = errors.New("versitygw not found on PATH or in $(go env GOPATH)/bin; " + InstallHint)

// readyTimeout bounds how long Start waits for the server to answer.
const readyTimeout = 10 * time.Second

// Server is one versitygw process. Stop and Start again keep its address,
// data directory and credentials, as a restarted server would.
type Server struct {
	Endpoint  string // "127.0.0.1:port", no scheme (plain HTTP)
	AccessKey string
	SecretKey string
	Dir       string // the POSIX backend's root: one directory per bucket

	bin string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Required reports whether a missing versitygw must fail the tests
// (SLUICE_REQUIRE_S3=1) rather than skip them.
func Required() bool { return os.Getenv("SLUICE_REQUIRE_S3") == "1" }

// Start runs a server for t alone, with its data under t.TempDir(), and
// stops it when t ends. It skips t when versitygw is not installed (unless
// Required) and fails it when the server does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Unavailable skips t for a missing binary (unless Required), and fails
// it for any other start-up error.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) && !Required() {
		t.Skip(err)
	}
	t.Fatalf("S3 test server: %v", err)
}

// New starts a server with its data under dir, for servers that outlive
// one test (a package's shared server, stopped from TestMain). The caller
// stops it.
func New(dir string) (*Server, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A free port can be taken between choosing and binding it: retry.
	for range 3 {
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		s := &Server{Endpoint: addr, AccessKey: RandomKey(10), SecretKey: RandomKey(20), Dir: dir, bin: bin}
		if lastErr = s.Start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// FindBinary looks for versitygw on PATH, then in $(go env GOPATH)/bin.
func FindBinary() (string, error) {
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
	return "", ErrNotInstalled
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// RandomKey returns 2n random hex digits, for credentials and bucket names.
func RandomKey(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Start runs the server (again, after Stop) on its address and waits until
// it answers HTTP, for at most 10 s.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("versitygw already running")
	}
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--quiet", "--keep-alive", "posix", s.Dir)
	var out testproc.Output
	cmd.Stdout = &out
	cmd.Stderr = &out
	launch := testproc.NewLauncher()
	if err := launch.Start(cmd, syscall.SIGTERM); err != nil {
		launch.Close()
		return fmt.Errorf("starting versitygw: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); launch.Close(); close(done) }()

	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("versitygw on %s exited at start-up: %s", s.Endpoint, out.String())
		default:
		}
		// Any HTTP answer (403 without credentials) means it serves.
		if resp, err := hc.Get("http://" + s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			s.cmd, s.done = cmd, done
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("versitygw on %s did not answer within %v: %s", s.Endpoint, readyTimeout, out.String())
}

// Running reports whether the server process is up (between Start and Stop).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// PID is the server's process id, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop terminates exactly the process Start started and waits for it:
// SIGTERM, then SIGKILL after 5 s.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}
