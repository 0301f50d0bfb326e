// Package postfixtest runs a real Postfix for tests: a second instance of
// the system's Postfix (Debian's postfix package, 3.7) from its own
// configuration, queue and data directories under a temporary directory,
// listening on a free loopback port. It accepts mail and keeps it: there is
// no queue manager, so nothing is ever delivered, and a test reads each
// queued message back with postcat (Message). A sender instance
// (StartSender) has a queue manager and an SMTP client instead, and
// relays every message to one next hop, as an MTA in front of a proxy.
//
// The instance trusts exactly one client address, TrustedAddr (127.0.0.1,
// where a proxy in front of it connects from): it is Postfix's mynetworks
// and may use XCLIENT and XFORWARD. LocalDomain is accepted from anyone;
// any other domain, such as OutsideDomain, is relayed only for mynetworks.
// A test client that connects from another loopback address (127.0.0.5)
// is therefore an outsider, directly or after a proxy's XCLIENT.
//
// Postfix's master must run as root. Without root or without Postfix's
// programs, Unavailable skips a test, unless SLUICE_REQUIRE_TOOLS=1 (CI),
// where it fails.
//
// Start-up takes 2.5-5 s on a shared 2-core machine, nearly all of it
// Postfix's own "postfix check" creating the queue directories, so a
// package starts one server (lazily, through Shared) and stops it from
// TestMain when its tests are done.
package postfixtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/testproc"
)

// The instance's names and addresses, for the tests' dialogs.
const (
	Hostname      = "postfix.test" // in its greeting and Received lines
	LocalDomain   = "local.test"   // accepted from anyone
	OutsideDomain = "outside.test" // relayed for TrustedAddr only
	TrustedAddr   = "127.0.0.1"    // mynetworks; may use XCLIENT and XFORWARD
)

// InstallHint says how to get Postfix.
const InstallHint = "apt-get install postfix, or run deploy/local/test-deps.sh"

// ErrUnavailable means Postfix cannot run here: it is not installed, or
// the tests do not run as root.
var ErrUnavailable = errors.New("postfix unavailable")

// Bounds on waiting; generous because CI machines are shared and slow.
const (
	checkTimeout = 60 * time.Second // postfix check
	readyTimeout = 30 * time.Second // until the listener greets
	stopTimeout  = 10 * time.Second // postfix stop, then SIGKILL
	toolTimeout  = 30 * time.Second // one postcat or postsuper
	logTailBytes = 8 << 10          // of the mail log, in error messages
)

// Required reports whether a missing Postfix must fail the tests
// (SLUICE_REQUIRE_TOOLS=1) rather than skip them.
func Required() bool { return os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" }

// Unavailable skips t when Postfix cannot run here (unless Required), and
// fails it for any other start-up error.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrUnavailable) && !Required() {
		t.Skipf("%v; set SLUICE_REQUIRE_TOOLS=1 to fail instead", err)
	}
	t.Fatalf("postfixtest: %v", err)
}

// Server is one running Postfix instance.
type Server struct {
	addr  string // 127.0.0.1:port
	dir   string // everything of the instance lives under it
	conf  string // config_directory: main.cf, master.cf
	spool string
	tools tools
	extra []string // more main.cf lines
	// relayhost: a sending instance (StartSender) delivers every message
	// there; "" = one that only queues.
	relayhost string

	mu   sync.Mutex
	cmd  *exec.Cmd // the master, in the foreground
	done chan struct{}
}

// tools are the Postfix programs the Server runs.
type tools struct {
	postfix, postcat, postsuper, master string
}

// findTools checks that Postfix can run here and finds its programs.
func findTools() (tools, error) {
	var ts tools
	if os.Geteuid() != 0 {
		return ts, fmt.Errorf("%w: its master must run as root, and the tests do not", ErrUnavailable)
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return ts, fmt.Errorf("%w: no postfix user (%s)", ErrUnavailable, InstallHint)
	}
	for _, p := range []struct {
		dst  *string
		name string
	}{{&ts.postfix, "postfix"}, {&ts.postcat, "postcat"}, {&ts.postsuper, "postsuper"}} {
		path, err := lookTool(p.name)
		if err != nil {
			return ts, err
		}
		*p.dst = path
	}
	// daemon_directory is where the package put master, smtpd and the rest.
	postconf, err := lookTool("postconf")
	if err != nil {
		return ts, err
	}
	out, err := exec.Command(postconf, "-d", "-h", "daemon_directory").Output()
	if err != nil {
		return ts, fmt.Errorf("%w: postconf -d daemon_directory: %v (%s)", ErrUnavailable, err, InstallHint)
	}
	ts.master = filepath.Join(strings.TrimSpace(string(out)), "master")
	if !executable(ts.master) {
		return ts, fmt.Errorf("%w: no %s (%s)", ErrUnavailable, ts.master, InstallHint)
	}
	return ts, nil
}

// lookTool finds a Postfix program on PATH or in the sbin directories,
// which a plain user's PATH lacks.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p := filepath.Join(d, name); executable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found (%s)", ErrUnavailable, name, InstallHint)
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// New starts an instance under dir (which must exist, and which Stop
// leaves in place) for servers that outlive one test; the caller stops
// it. It returns an error wrapping ErrUnavailable when Postfix cannot run
// here. extra are main.cf lines after the instance's own, which they
// override ("smtpd_tls_security_level = encrypt").
func New(dir string, extra ...string) (*Server, error) {
	return newServer(dir, "", extra)
}

func newServer(dir, relayhost string, extra []string) (*Server, error) {
	ts, err := findTools()
	if err != nil {
		return nil, err
	}
	// Postfix's daemons run as the postfix user and must reach the queue.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	// A free port can be taken between choosing and binding it: retry.
	for attempt := range 3 {
		s := &Server{dir: filepath.Join(dir, fmt.Sprintf("postfix%d", attempt)), tools: ts, extra: extra, relayhost: relayhost}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// Start runs an instance for t alone and stops it when t ends; it skips
// or fails t as Unavailable says. extra are as for New.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	return start(t, "", extra)
}

// StartSender runs a sending instance for t alone: as Start, plus a
// queue manager and an SMTP client that deliver every message it accepts
// to relayhost (Postfix's syntax: "[127.0.0.1]:10025"), so that Postfix
// is the MTA in front of a proxy. extra adds the client's settings
// ("smtp_tls_security_level = encrypt"). Its log says what became of
// each message (status=sent, deferred, bounced).
func StartSender(t testing.TB, relayhost string, extra ...string) *Server {
	t.Helper()
	return start(t, relayhost, extra)
}

func start(t testing.TB, relayhost string, extra []string) *Server {
	t.Helper()
	// Not t.TempDir(): its parent is private to root, and Postfix's
	// daemons, which run as postfix, must reach the queue.
	dir, err := os.MkdirTemp("", "postfixtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := newServer(dir, relayhost, extra)
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr is the SMTP listener's "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Dir is the instance's directory: conf (main.cf, master.cf), spool (the
// queue), data, and maillog.
func (s *Server) Dir() string { return s.dir }

// LogFile is Postfix's mail log (maillog_file).
func (s *Server) LogFile() string { return filepath.Join(s.dir, "maillog") }

// LogTail is the end of the mail log, for error messages.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.LogFile())
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

func (s *Server) start() error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	s.addr = addr
	s.conf = filepath.Join(s.dir, "conf")
	s.spool = filepath.Join(s.dir, "spool")
	for _, d := range []string{s.conf, s.spool} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{"main.cf": s.mainCF(), "master.cf": s.masterCF()}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(s.conf, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	// "postfix check" validates the configuration and creates the queue
	// and data directories with the owners and modes the daemons need.
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, s.tools.postfix, "-c", s.conf, "check").CombinedOutput(); err != nil {
		return fmt.Errorf("postfix -c %s check: %v\n%s%s", s.conf, err, out, s.LogTail())
	}
	return s.runMaster()
}

// guardScript runs the master in the foreground and stops it when the
// shell gets SIGTERM. The master's own parent-death signal would not do:
// the kernel clears it when a process changes its credentials, and the
// master does; the shell keeps it.
const guardScript = `"$0" -c "$1" -s &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT HUP
wait $pid
status=$?
wait $pid 2>/dev/null
exit $status`

// runMaster starts Postfix's master in the foreground (-s) under a guard
// shell that is the test binary's child, rather than daemonised by
// "postfix start": it stops with the test binary (testproc), and Stop
// reaps it.
func (s *Server) runMaster() error {
	cmd := exec.Command("/bin/sh", "-c", guardScript, s.tools.master, s.conf)
	var out testproc.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	launch := testproc.NewLauncher()
	if err := launch.Start(cmd, syscall.SIGTERM); err != nil {
		launch.Close()
		return fmt.Errorf("starting postfix master: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); launch.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			s.mu.Lock()
			s.cmd, s.done = nil, nil
			s.mu.Unlock()
			return fmt.Errorf("postfix master on %s exited at start-up: %s\n%s", s.addr, out.String(), s.LogTail())
		default:
		}
		if greets(s.addr) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("postfix on %s did not greet within %v: %s\n%s", s.addr, readyTimeout, out.String(), s.LogTail())
}

// greets reports whether an SMTP server on addr answers 220.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	return n == 4 && string(buf) == "220 "
}

// Stop stops the instance: "postfix stop" (SIGTERM to the master, which
// stops its children), then SIGKILL to the master's process group if it
// is still there. Its directory stays.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	exec.CommandContext(ctx, s.tools.postfix, "-c", s.conf, "stop").Run()
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		// The master leads its own session and process group (setsid):
		// this reaches every daemon it started.
		if pid := s.masterPID(); pid > 1 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// masterPID is the master's process id from its pid file, or 0.
func (s *Server) masterPID() int {
	b, err := os.ReadFile(filepath.Join(s.spool, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Running reports whether the master is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// mainCF is the instance's main.cf; every setting says why it is there.
func (s *Server) mainCF() string {
	lines := []string{
		"# written by internal/postfixtest",
		"compatibility_level = 3.6", // as Debian's fresh installs
		"queue_directory = " + s.spool,
		"data_directory = " + filepath.Join(s.dir, "data"),
		"maillog_file = " + s.LogFile(),
		"maillog_file_prefixes = " + s.dir,
		"syslog_name = postfix-sluice-test",
		// Names of its own, so nothing is looked up.
		"myhostname = " + Hostname,
		"mydomain = " + Hostname,
		"myorigin = $myhostname",
		"mydestination =",
		"inet_interfaces = " + TrustedAddr,
		"inet_protocols = ipv4",
		"smtpd_peername_lookup = no",
		"smtp_dns_support_level = disabled",
		"smtp_host_lookup = native",
		// Who may do what: only TrustedAddr relays and speaks for others.
		"mynetworks = " + TrustedAddr + "/32",
		"smtpd_authorized_xclient_hosts = " + TrustedAddr,
		"smtpd_authorized_xforward_hosts = " + TrustedAddr,
		"relay_domains = " + LocalDomain,
		"relay_recipient_maps =",
		"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
		"smtpd_recipient_restrictions =",
		// No system files: no aliases, no local users, no TLS keys.
		"alias_maps =",
		"alias_database =",
		"local_recipient_maps =",
		"smtpd_tls_security_level = none",
		"biff = no",
		// Answer at once and give up soon.
		"smtpd_error_sleep_time = 0",
		// The queue manager hands the cleanup server tokens to accept
		// mail; without one, each message would wait in_flow_delay (1 s).
		"in_flow_delay = 0s",
		"smtpd_soft_error_limit = 100",
		"smtpd_hard_error_limit = 100",
		"smtpd_junk_command_limit = 1000",
		"smtpd_timeout = 30s",
		"smtpd_proxy_timeout = 30s",
		"ipc_timeout = 30s",
		"daemon_timeout = 120s",
		"max_idle = 30s",
	}
	if s.relayhost != "" {
		lines = append(lines,
			"relayhost = "+s.relayhost,
			"default_transport = smtp",
			"relay_transport = smtp",
			// Retry soon after a failure, and give up on a bounce's
			// delivery soon: the test reads the outcome from the log.
			"minimal_backoff_time = 2s",
			"maximal_backoff_time = 4s",
			"queue_run_delay = 2s",
			"smtp_connect_timeout = 10s",
			"bounce_queue_lifetime = 0",
		)
	}
	lines = append(lines, s.extra...)
	return strings.Join(lines, "\n") + "\n"
}

// masterCF is the instance's master.cf: the SMTP server and what it needs
// to queue a message, but (unless it is a sender) no qmgr and no pickup,
// so that nothing is ever delivered or bounced; no chroot, so no copies
// of system files.
func (s *Server) masterCF() string {
	lines := []string{
		"# written by internal/postfixtest",
		s.addr + " inet n - n - - smtpd",
		"cleanup unix n - n - 0 cleanup",
		"rewrite unix - - n - - trivial-rewrite",
		"proxymap unix - - n - - proxymap",
		"anvil unix - - n - 1 anvil",
		"postlog unix-dgram n - n - 1 postlogd",
		"tlsmgr unix - - n 1000? 1 tlsmgr", // for an instance given TLS keys (New's extra)
	}
	if s.relayhost != "" {
		// A sending instance: the queue manager and what delivery and
		// its reports need.
		lines = append(lines,
			"qmgr unix n - n 300 1 qmgr",
			"smtp unix - - n - - smtp",
			"bounce unix - - n - 0 bounce",
			"defer unix - - n - 0 bounce",
			"trace unix - - n - 0 bounce",
			"error unix - - n - - error",
			"retry unix - - n - - error",
			"scache unix - - n - 1 scache",
			"flush unix n - n 1000? 0 flush",
			"verify unix - - n - 1 verify",
		)
	}
	return strings.Join(lines, "\n") + "\n"
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", TrustedAddr+":0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
