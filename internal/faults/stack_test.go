package faults

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/natstest"
	"github.com/sluice-mail/sluice/internal/s3test"
	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/testproc"
)

// filterScript records every run in $FAULTS_RUNLOG, one line appended
// (O_APPEND, one short write) at its start and one at its end:
// "<token> <pid> start|end <worker>", the token from the message's
// X-Faults-Token header; then it passes the message through, after
// sleeping $FAULTS_SLEEP seconds if set; with $FAULTS_REJECT set it
// rejects instead, that line its reply.
const filterScript = `#!/bin/sh
tmp=$(mktemp "${TMPDIR:-/tmp}/faults.XXXXXX") || exit 75
trap 'rm -f "$tmp"' EXIT
cat >"$tmp" || exit 75
tok=$(sed -n 's/^X-Faults-Token: *\([A-Za-z0-9._-]*\).*$/\1/p' "$tmp" | head -n 1)
echo "${tok:-none} $$ start ${FAULTS_WORKER:-unknown}" >>"$FAULTS_RUNLOG"
if [ -n "$FAULTS_SLEEP" ]; then sleep "$FAULTS_SLEEP"; fi
if [ -n "$FAULTS_REJECT" ]; then
  echo "${tok:-none} $$ end ${FAULTS_WORKER:-unknown}" >>"$FAULTS_RUNLOG"
  echo "$FAULTS_REJECT" >&2
  exit 1
fi
cat "$tmp"
echo "${tok:-none} $$ end ${FAULTS_WORKER:-unknown}" >>"$FAULTS_RUNLOG"
`

// timing is the timeout budget of one stack (docs/configuration.md):
// FilterTimeout < nats.ack_wait, and job_timeout > FilterTimeout.
type timing struct {
	filterTimeout int           // FilterTimeout, seconds
	ackWait       time.Duration // nats.ack_wait: redelivery of a dead worker's job
	jobTimeout    time.Duration // job_timeout: how long the edge waits for a verdict
	filterSleep   string        // seconds the filter sleeps; "" = none
	filterReject  string        // the filter rejects with this reply; "" = it passes the message
	slots         int           // worker.slots per worker
	timeOut       int           // TimeOut, seconds; 0 = the default
	partSize      string        // store.s3.part_size; "" = the default
	filterCommand string        // FilterCommand instead of the recording script; "" = the script
}

// defaultTiming fits one NATS fail-over (~7 s) and one redelivery.
var defaultTiming = timing{filterTimeout: 10, ackWait: 15 * time.Second, jobTimeout: 40 * time.Second, slots: 2}

// stack is one sluice deployment on loopback: a 3-node NATS cluster,
// versitygw, an upstream, edges and workers as processes.
type stack struct {
	t      testing.TB
	dir    string
	tm     timing
	nats   *natstest.Cluster
	s3     *s3test.Server
	up     *upstream
	runlog string
	filter string
	launch *testproc.Launcher

	edges   []*proc
	workers []*proc

	stopOnce sync.Once
}

// newStack starts everything and stops it when t ends.
func newStack(t testing.TB, tm timing, nEdges, nWorkers int) *stack {
	t.Helper()
	s := newBase(t, tm, natstest.StartCluster(t, 3))
	for i := range nWorkers {
		s.workers = append(s.workers, s.newProc(fmt.Sprintf("w%d", i+1), bins.worker))
	}
	for i := range nEdges {
		s.edges = append(s.edges, s.newProc(fmt.Sprintf("e%d", i+1), bins.edge))
	}
	s.startAll()
	t.Logf("stack up: nats %v, s3 %s, upstream %s, edges %v, workers %v, runs in %s",
		s.nats.URLs(), s.s3.Endpoint, s.up.addr, s.edgeAddrs(), s.workerPIDs(), s.runlog)
	return s
}

// newBase starts the parts around the NATS cluster nc: versitygw, the
// upstream, the filter's run log. No edge or worker yet.
func newBase(t testing.TB, tm timing, nc *natstest.Cluster) *stack {
	t.Helper()
	s := &stack{t: t, tm: tm, dir: t.TempDir(), nats: nc}
	s.s3 = s3test.Start(t)
	s.up = newUpstream(t)
	s.runlog = filepath.Join(s.dir, "runs.log")
	s.filter = filepath.Join(s.dir, "record-filter.sh")
	if err := os.WriteFile(s.filter, []byte(filterScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.runlog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.launch = testproc.NewLauncher()
	t.Cleanup(s.stop)
	return s
}

// stop stops the stack's processes (see cleanup) once; the test's end
// calls it too.
func (s *stack) stop() { s.stopOnce.Do(s.cleanup) }

// startAll starts every worker and edge at once and waits until all are
// ready.
func (s *stack) startAll() {
	t := s.t
	t.Helper()
	procs := append(append([]*proc(nil), s.workers...), s.edges...)
	errs := make(chan error, len(procs))
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { errs <- s.start(p) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (s *stack) edgeAddrs() []string {
	var out []string
	for _, e := range s.edges {
		out = append(out, e.addr)
	}
	return out
}

func (s *stack) workerPIDs() map[string]int {
	out := map[string]int{}
	for _, w := range s.workers {
		out[w.name] = w.pid()
	}
	return out
}

// cleanup stops every process, then any filter a killed worker left
// behind, then shows the logs of a failed test.
func (s *stack) cleanup() {
	var wg sync.WaitGroup
	for _, p := range append(append([]*proc(nil), s.edges...), s.workers...) {
		wg.Go(p.stop)
	}
	wg.Wait()
	for _, pid := range s.leftovers() {
		s.t.Logf("killing left-over filter process %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	s.launch.Close()
	if s.t.Failed() {
		for _, p := range append(append([]*proc(nil), s.edges...), s.workers...) {
			s.t.Logf("--- end of %s's log (%s):\n%s", p.name, p.log, tail(p.log, 6<<10))
		}
		s.t.Logf("--- end of the filter run log:\n%s", tail(s.runlog, 4<<10))
	}
}

// leftovers are the processes still running with this stack's run log in
// their environment: only filters (and their sleep) once every edge and
// worker has stopped.
func (s *stack) leftovers() []int {
	marker := []byte("FAULTS_RUNLOG=" + s.runlog + "\x00")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, marker) {
			out = append(out, pid)
		}
	}
	return out
}

// configFile writes p's configuration: the same settings for every
// process (they all create or update the stream and the consumer), its
// own Listen and directories.
func (s *stack) configFile(p *proc, listen string) string {
	tm := s.tm
	dir := filepath.Join(s.dir, p.name)
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		s.t.Fatal(err)
	}
	filterCommand := s.filter
	if tm.filterCommand != "" {
		filterCommand = tm.filterCommand
	}
	var urls []string
	natsURLs, s3Endpoint := s.nats.URLs(), s.s3.Endpoint
	if p.natsURLs != nil {
		natsURLs = p.natsURLs
	}
	if p.s3Endpoint != "" {
		s3Endpoint = p.s3Endpoint
	}
	for _, u := range natsURLs {
		urls = append(urls, strconv.Quote(u))
	}
	slots := "0"
	if p.bin == bins.worker {
		slots = strconv.Itoa(tm.slots)
	}
	cfg := fmt.Sprintf(`Listen: %s
OutAddress: %s
FilterCommand: %q
FilterType: pipe
FilterTimeout: %d
TempDirectory: %q
hostname: %s.faults.test
data_dir: %q
log_format: json
job_timeout: %s
nats:
  url: [%s]
  replicas: 3
  ack_wait: %s
  max_deliver: 5
store:
  s3:
    endpoint: %s
    bucket: faults
    access_key: %s
    secret_key: %s
    tls: false
    create_bucket: true
worker:
  slots: %s
`, listen, s.up.addr, filterCommand, tm.filterTimeout, tmp, p.name, dir, tm.jobTimeout,
		strings.Join(urls, ", "), tm.ackWait, s3Endpoint, s.s3.AccessKey, s.s3.SecretKey, slots)
	if tm.timeOut > 0 {
		cfg += fmt.Sprintf("TimeOut: %d\n", tm.timeOut)
	}
	if tm.partSize != "" {
		cfg = strings.Replace(cfg, "    create_bucket: true\n", "    create_bucket: true\n    part_size: "+tm.partSize+"\n", 1)
	}
	cfg = strings.Replace(cfg, "  max_deliver: 5\n", "  max_deliver: 5\n"+p.natsExtra, 1)
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// proc is one edge or worker process. Its address and configuration stay
// the same across restarts.
type proc struct {
	name string
	bin  string
	log  string
	env  []string
	addr string // an edge's SMTP address

	// Where the process's NATS and S3 are, when not the stack's own
	// (through a site's link), and lines added to its nats: block.
	natsURLs   []string
	s3Endpoint string
	natsExtra  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (s *stack) newProc(name, bin string) *proc {
	p := &proc{name: name, bin: bin, log: filepath.Join(s.dir, name+".log")}
	p.env = append(os.Environ(),
		"FAULTS_RUNLOG="+s.runlog,
		"FAULTS_WORKER="+name,
		"FAULTS_SLEEP="+s.tm.filterSleep,
		"FAULTS_REJECT="+s.tm.filterReject)
	return p
}

// start runs p and waits until it says it is ready: an edge listening, a
// worker pulling. An edge's port is chosen free; taken meanwhile, it is
// chosen again.
func (s *stack) start(p *proc) error {
	ready := `"msg":"worker started"`
	if p.bin == bins.edge {
		ready = `"msg":"edge listening"`
	}
	var err error
	for range 3 {
		listen := "127.0.0.1:1" // unused by workers
		if p.bin == bins.edge {
			if listen, err = s3test.FreeAddr(); err != nil {
				return err
			}
		}
		cfg := s.configFile(p, listen)
		if err = p.run(s.launch, "-d", "3", "-f", cfg); err != nil {
			return err
		}
		if err = p.waitReady(ready, 60*time.Second); err == nil {
			if p.bin == bins.edge {
				p.addr = listen
			}
			return nil
		}
		p.kill()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return fmt.Errorf("%s did not start: %w", p.name, err)
}

// run starts the process, its output appended to p.log.
func (p *proc) run(l *testproc.Launcher, args ...string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(args, " "))
	cmd := exec.Command(p.bin, args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := l.Start(cmd, syscall.SIGKILL); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// waitReady waits for line in p's log written since its last start.
func (p *proc) waitReady(line string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		if i := bytes.LastIndex(b, []byte("\n=== ")); i >= 0 {
			b = b[i:]
		}
		if bytes.Contains(b, []byte(line)) {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("%s exited at start-up: %s", p.name, lastLines(b, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %s", p.name, timeout, tail(p.log, 2<<10))
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// kill ends p with SIGKILL, as a crash would, and waits for it.
func (p *proc) kill() { p.signal(syscall.SIGKILL, 0) }

// stop ends p with SIGTERM, SIGKILL after 20 s.
func (p *proc) stop() { p.signal(syscall.SIGTERM, 20*time.Second) }

func (p *proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd, p.done = nil, nil
}

// checkAlive fails t for every process (but those in except) that is no
// longer running: recovery must happen without restarts.
func (s *stack) checkAlive(except ...*proc) {
	s.t.Helper()
outer:
	for _, p := range append(append([]*proc(nil), s.edges...), s.workers...) {
		for _, e := range except {
			if e == p {
				continue outer
			}
		}
		if !p.running() {
			s.t.Errorf("%s is no longer running: %s", p.name, tail(p.log, 2<<10))
		}
	}
}

// logLines returns the lines of p's log that contain all of parts.
func (p *proc) logLines(parts ...string) []string {
	f, err := os.Open(p.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
scan:
	for sc.Scan() {
		for _, part := range parts {
			if !strings.Contains(sc.Text(), part) {
				continue scan
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// logSummary logs how many warnings and errors each process logged, with
// a few examples: what the sender could not see.
func (s *stack) logSummary() {
	s.t.Helper()
	for _, p := range append(append([]*proc(nil), s.edges...), s.workers...) {
		warn := p.logLines(`"level":"WARN"`)
		errs := p.logLines(`"level":"ERROR"`)
		if len(warn)+len(errs) == 0 {
			continue
		}
		ex := append(errs, warn...)
		s.t.Logf("%s logged %d errors, %d warnings; e.g. %s", p.name, len(errs), len(warn), strings.Join(distinct(ex, 3), " / "))
	}
}

// distinct returns up to n lines with different "msg" values.
func distinct(lines []string, n int) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		msg := l
		if i := strings.Index(l, `"msg":`); i >= 0 {
			msg = l[i:]
			if j := strings.Index(msg, `",`); j >= 0 {
				msg = msg[:j]
			}
		}
		if seen[msg] {
			continue
		}
		seen[msg] = true
		out = append(out, l)
		if len(out) == n {
			break
		}
	}
	return out
}

func tail(name string, n int64) string {
	f, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// upstream is the edges' OutAddress: a fixed loopback port relayed to the
// current recording smtptest.Server, so that the upstream can go down
// (connections refused, open ones cut) and come back on the same port as
// a new server.
type upstream struct {
	t    testing.TB
	addr string

	mu      sync.Mutex
	ln      net.Listener
	srv     *smtptest.Server
	servers []*smtptest.Server
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{t: t, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	u.serve(ln, smtptest.NewServer(t, smtptest.Config{}))
	t.Cleanup(u.Down)
	return u
}

func (u *upstream) serve(ln net.Listener, srv *smtptest.Server) {
	u.mu.Lock()
	u.ln, u.srv = ln, srv
	u.servers = append(u.servers, srv)
	u.mu.Unlock()
	u.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.wg.Go(func() { u.relay(c, srv.Addr()) })
		}
	})
}

// relay copies between the edge's connection and the server until either
// side ends or Down cuts both.
func (u *upstream) relay(c net.Conn, target string) {
	b, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	u.mu.Lock()
	if u.ln == nil { // went down meanwhile
		u.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	u.conns[c], u.conns[b] = struct{}{}, struct{}{}
	u.mu.Unlock()
	splice(c, b)
	u.mu.Lock()
	delete(u.conns, c)
	delete(u.conns, b)
	u.mu.Unlock()
}

// splice copies between a and b until either side ends, then closes
// both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(b, a); done <- struct{}{} }()
	go func() { io.Copy(a, b); done <- struct{}{} }()
	<-done
	a.Close()
	b.Close()
	<-done
}

// Down closes the port and every open connection, and the server.
func (u *upstream) Down() {
	u.mu.Lock()
	ln, srv := u.ln, u.srv
	u.ln, u.srv = nil, nil
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	if srv != nil {
		srv.Close()
	}
	u.wg.Wait()
}

// Up starts a new server on the same port.
func (u *upstream) Up() {
	u.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly
		if ln, err = net.Listen("tcp", u.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		u.t.Fatalf("upstream back on %s: %v", u.addr, err)
	}
	u.serve(ln, smtptest.NewServer(u.t, smtptest.Config{}))
}

// Transactions returns every DATA phase of every server so far.
func (u *upstream) Transactions() []smtptest.Transaction {
	u.mu.Lock()
	servers := append([]*smtptest.Server(nil), u.servers...)
	u.mu.Unlock()
	var out []smtptest.Transaction
	for _, s := range servers {
		out = append(out, s.Transactions()...)
	}
	return out
}
