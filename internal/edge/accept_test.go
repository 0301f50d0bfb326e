package edge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// failingListener is a real listener whose Accept first returns errs, one
// per call.
type failingListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// startFailing starts an edge in front of a recording upstream whose
// listener fails with errs first.
func startFailing(t *testing.T, errs ...error) *Edge {
	t.Helper()
	up := smtptest.NewServer(t, smtptest.Config{})
	conf := filepath.Join(t.TempDir(), "proxsmtpd.conf")
	text := "Listen: 127.0.0.1:10025\nOutAddress: " + up.Addr() + "\nTempDirectory: " + t.TempDir() +
		"\nhostname: edge.test\nhttp_listen: 127.0.0.1:0\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Edge, []string{"-f", conf, "--data-dir", t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.Port = 0
	e, err := start(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), func(a config.Address) (net.Listener, error) {
		ln, err := listen(a)
		if err != nil {
			return nil, err
		}
		return &failingListener{Listener: ln, errs: errs}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Issue 7: running out of descriptors, buffers or memory for a moment
// does not end the accept loop; the edge goes on serving once it passes.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	e := startFailing(t, acceptErr(syscall.ENFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENOBUFS),
		acceptErr(syscall.ENOMEM), acceptErr(syscall.ECONNABORTED))
	c := smtptest.Dial(t, e.Addr().String())
	c.ExpectLine("220 edge.test ESMTP")
	c.CmdExpect("QUIT", 221)
	select {
	case <-e.Failed():
		t.Fatalf("the edge gave up on its listener: %v", e.Err())
	default:
	}
	if rd := e.mon.Ready(t.Context()); slices.Contains(rd.Failing, "listener") {
		t.Errorf("readiness %+v", rd)
	}
}

// Issue 7: a listener that is broken for good makes the edge unready and
// says so, so that cmd/edge exits non-zero and is restarted, rather than
// an edge that looks ready and serves nobody.
func TestBrokenListenerMakesTheEdgeUnready(t *testing.T) {
	broken := errors.New("listener broken")
	e := startFailing(t, broken)
	select {
	case <-e.Failed():
	case <-time.After(30 * time.Second):
		t.Fatal("Failed not closed after a permanent accept error")
	}
	if !errors.Is(e.Err(), broken) {
		t.Errorf("Err = %v", e.Err())
	}
	rd := e.mon.Ready(t.Context())
	if !slices.Contains(rd.Failing, "listener") {
		t.Errorf("readiness %+v, want listener failing", rd)
	}
}

// Issue 9: Listen 0.0.0.0 is IPv4 only, as in proxsmtpd; Go's plain "tcp"
// would open [::] as well.
func TestListenIPv4Wildcard(t *testing.T) {
	ln, err := listen(config.Address{Network: "tcp", Host: "0.0.0.0", Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		t.Fatalf("IPv4: %v", err)
	}
	c.Close()
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	probe.Close()
	if c, err := net.DialTimeout("tcp6", net.JoinHostPort("::1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("Listen 0.0.0.0 accepted a connection on [::1]:%d", port)
	}
}
