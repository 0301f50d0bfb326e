// Package natstest starts real nats-server processes for tests: a
// JetStream cluster on free loopback ports, each node with its own store
// directory under the test's temporary directory, optionally with
// authentication (user and password, token, NKey) and TLS, whose nodes a
// test can kill, stop and restart. Every process is stopped by its PID
// when the test ends; on Linux the kernel also kills them if the test
// binary dies first.
//
// It needs the nats-server binary of ServerVersion (see FindServer). When
// it is missing a test skips, or fails when SLUICE_REQUIRE_TOOLS=1 (CI).
package natstest

import (
	"errors"
	"fmt"
	"io"
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

	"github.com/nats-io/nkeys"

	"github.com/sluice-mail/sluice/internal/testcert"
	"github.com/sluice-mail/sluice/internal/testproc"
)

// Bounds on waiting for the servers; generous because CI machines are
// shared and slow.
const (
	startTimeout = 30 * time.Second // until a node's JetStream answers /healthz
	stopTimeout  = 10 * time.Second // SIGTERM to SIGKILL
	logTailBytes = 8 << 10          // of each node's log, shown when a test fails
)

// Option configures StartCluster.
type Option func(*settings)

type settings struct {
	clusterName     string
	user, password  string
	token           string
	nkey            bool
	tls             bool
	jetstreamMemory string
	jetstreamFile   string
	domain          string   // JetStream domain
	leafListen      bool     // accept leaf nodes
	leafRemotes     []string // a leaf node of these hub URLs, without JetStream
}

// WithUser makes the servers require this user name and password.
func WithUser(user, password string) Option {
	return func(s *settings) { s.user, s.password = user, password }
}

// WithToken makes the servers require this token. It cannot be combined
// with WithUser or WithNKey (nats-server allows one or the other).
func WithToken(token string) Option {
	return func(s *settings) { s.token = token }
}

// WithNKey makes the servers accept a generated user NKey, whose seed is
// in the file Cluster.NKeySeedFile names.
func WithNKey() Option {
	return func(s *settings) { s.nkey = true }
}

// WithTLS makes the servers speak TLS to clients with a generated CA
// (Cluster.TLS) and require a client certificate signed by it. Routes
// between the nodes and the monitoring port stay plain.
func WithTLS() Option {
	return func(s *settings) { s.tls = true }
}

// WithClusterName names the cluster (default "sluice-test").
func WithClusterName(name string) Option {
	return func(s *settings) { s.clusterName = name }
}

// WithDomain gives the cluster's JetStream this domain name.
func WithDomain(domain string) Option {
	return func(s *settings) { s.domain = domain }
}

// WithLeafListener makes every node accept leaf node connections, on
// Node.LeafURL, without advertising other nodes' addresses to them (so a
// leaf only ever uses the URLs it was given, as through a site's link).
func WithLeafListener() Option {
	return func(s *settings) { s.leafListen = true }
}

// AsLeafOf makes the servers leaf nodes of a hub (its nodes' LeafURLs),
// without JetStream of their own; their clients reach the hub's
// JetStream by its domain. The nodes are named after the cluster name
// (WithClusterName), so that they differ from the hub's.
func AsLeafOf(hubLeafURLs ...string) Option {
	return func(s *settings) { s.leafRemotes = hubLeafURLs }
}

// Node is one server of a Cluster. Its addresses and directories stay the
// same across restarts.
type Node struct {
	Name       string // server_name, as JetStream's cluster info names it
	ClientURL  string // nats://127.0.0.1:PORT, or tls:// with WithTLS
	RouteURL   string // nats-route://127.0.0.1:PORT
	MonitorURL string // http://127.0.0.1:PORT
	LeafURL    string // nats-leaf://127.0.0.1:PORT, with WithLeafListener
	StoreDir   string // JetStream store
	ConfigFile string
	LogFile    string // the server's stdout and stderr, appended across restarts

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Cluster is a set of running nats-server processes routed to each other.
// Its methods are for the test's own goroutine: they fail the test with
// t.Fatal.
type Cluster struct {
	t      testing.TB
	bin    string
	dir    string
	set    settings
	launch *testproc.Launcher

	nkeySeedFile string
	nkeyPublic   string
	tlsFiles     testcert.TLSFiles

	mu    sync.Mutex
	nodes []*Node
}

// StartCluster starts n nats-server processes with JetStream, routed into
// one cluster (n = 1: a single server without a cluster block), and waits
// until every node's JetStream is enabled and the cluster has elected its
// JetStream meta leader (every node's /healthz is ok). They are stopped
// when t ends.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: StartCluster with %d nodes", n)
	}
	bin, err := FindServer()
	if err != nil {
		unavailable(t, err)
	}
	s := settings{clusterName: "sluice-test", jetstreamMemory: "256MB", jetstreamFile: "2GB"}
	for _, o := range opts {
		o(&s)
	}
	if s.token != "" && (s.user != "" || s.nkey) {
		t.Fatal("natstest: a token cannot be combined with a user or an NKey")
	}
	c := &Cluster{t: t, bin: bin, set: s, dir: t.TempDir()}
	if s.nkey {
		if err := c.makeNKey(); err != nil {
			t.Fatalf("natstest: %v", err)
		}
	}
	if s.tls {
		if c.tlsFiles, err = testcert.GenerateTLS(filepath.Join(c.dir, "tls")); err != nil {
			t.Fatalf("natstest: %v", err)
		}
	}
	c.launch = testproc.NewLauncher()
	t.Cleanup(c.cleanup)

	// A free port can be taken between choosing and binding it: try again
	// with new ports and directories.
	var lastErr error
	for attempt := range 3 {
		if lastErr = c.startAttempt(n, attempt); lastErr == nil {
			return c
		}
		c.killAll()
	}
	t.Fatalf("natstest: %d-node cluster did not start: %v", n, lastErr)
	return nil
}

// unavailable skips t for a missing server, or fails it when the tools are
// required.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errNoServer) && os.Getenv("SLUICE_REQUIRE_TOOLS") != "1" {
		t.Skip(err)
	}
	t.Fatalf("natstest: %v", err)
}

func (c *Cluster) makeNKey() error {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("nkey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return fmt.Errorf("nkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("nkey: %w", err)
	}
	c.nkeySeedFile = filepath.Join(c.dir, "user.nk")
	c.nkeyPublic = pub
	return os.WriteFile(c.nkeySeedFile, append(seed, '\n'), 0o600)
}

func (c *Cluster) startAttempt(n, attempt int) error {
	ports, err := freePorts(4 * n)
	if err != nil {
		return err
	}
	nodes := make([]*Node, n)
	for i := range nodes {
		dir := filepath.Join(c.dir, fmt.Sprintf("n%d.%d", i, attempt))
		if err := os.MkdirAll(filepath.Join(dir, "jetstream"), 0o700); err != nil {
			return err
		}
		scheme := "nats"
		if c.set.tls {
			scheme = "tls"
		}
		name := fmt.Sprintf("n%d", i)
		if c.set.leafRemotes != nil {
			name = fmt.Sprintf("%s-leaf%d", c.set.clusterName, i)
		}
		nodes[i] = &Node{
			Name:       name,
			ClientURL:  fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[3*i]),
			RouteURL:   fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]),
			MonitorURL: fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+2]),
			LeafURL:    fmt.Sprintf("nats-leaf://127.0.0.1:%d", ports[3*n+i]),
			StoreDir:   filepath.Join(dir, "jetstream"),
			ConfigFile: filepath.Join(dir, "nats-server.conf"),
			LogFile:    filepath.Join(dir, "nats-server.log"),
		}
	}
	for i, nd := range nodes {
		if err := os.WriteFile(nd.ConfigFile, []byte(c.config(nodes, i, ports)), 0o600); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.nodes = nodes
	c.mu.Unlock()
	for i := range nodes {
		if err := c.startNode(i); err != nil {
			return err
		}
	}
	for i := range nodes {
		if c.set.leafRemotes != nil {
			break
		}
		if err := c.waitJetStream(i); err != nil {
			return err
		}
	}
	// A new cluster elects its JetStream meta leader first; until then
	// stream requests go unanswered.
	for i := range nodes {
		if err := c.waitHealth(i, "/healthz", startTimeout); err != nil {
			return err
		}
	}
	return nil
}

// config renders node i's configuration file.
func (c *Cluster) config(nodes []*Node, i int, ports []int) string {
	var b strings.Builder
	s := c.set
	fmt.Fprintf(&b, "server_name: %q\n", nodes[i].Name)
	fmt.Fprintf(&b, "listen: \"127.0.0.1:%d\"\n", ports[3*i])
	fmt.Fprintf(&b, "http: \"127.0.0.1:%d\"\n", ports[3*i+2])
	b.WriteString("logtime: true\n")
	if s.leafRemotes == nil {
		fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  max_memory_store: %s\n  max_file_store: %s\n", nodes[i].StoreDir, s.jetstreamMemory, s.jetstreamFile)
		if s.domain != "" {
			fmt.Fprintf(&b, "  domain: %q\n", s.domain)
		}
		b.WriteString("}\n")
	} else {
		b.WriteString("leafnodes {\n  reconnect: \"1s\"\n  remotes: [ { urls: [\n")
		for _, u := range s.leafRemotes {
			fmt.Fprintf(&b, "    %q\n", u)
		}
		b.WriteString("  ] } ]\n}\n")
	}
	if s.leafListen {
		fmt.Fprintf(&b, "leafnodes {\n  listen: %q\n  no_advertise: true\n}\n", strings.TrimPrefix(nodes[i].LeafURL, "nats-leaf://"))
	}
	if len(nodes) > 1 {
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: \"127.0.0.1:%d\"\n  routes: [\n", s.clusterName, ports[3*i+1])
		for j, nd := range nodes {
			if j != i {
				fmt.Fprintf(&b, "    %q\n", nd.RouteURL)
			}
		}
		b.WriteString("  ]\n}\n")
	}
	switch {
	case s.token != "":
		fmt.Fprintf(&b, "authorization {\n  token: %q\n}\n", s.token)
	case s.user != "" || s.nkey:
		b.WriteString("authorization {\n  users: [\n")
		if s.user != "" {
			fmt.Fprintf(&b, "    {user: %q, password: %q}\n", s.user, s.password)
		}
		if s.nkey {
			fmt.Fprintf(&b, "    {nkey: %q}\n", c.nkeyPublic)
		}
		b.WriteString("  ]\n}\n")
	}
	if s.tls {
		f := c.tlsFiles
		fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n  timeout: 2\n}\n",
			f.ServerCert, f.ServerKey, f.CA)
	}
	return b.String()
}

// freePorts picks n distinct free loopback ports, holding them all open
// at once so that none is picked twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// startNode starts node i's process; it must not be running.
func (c *Cluster) startNode(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := c.nodes[i]
	if nd.cmd != nil {
		return fmt.Errorf("node %s is already running", nd.Name)
	}
	logf, err := os.OpenFile(nd.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== natstest: starting %s %s\n", c.bin, nd.ConfigFile)
	cmd := exec.Command(c.bin, "-c", nd.ConfigFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := c.launch.Start(cmd, syscall.SIGKILL); err != nil {
		return fmt.Errorf("starting nats-server %s: %w", nd.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	nd.cmd, nd.done = cmd, done
	return nil
}

// waitJetStream waits until node i answers /healthz?js-enabled-only=true.
func (c *Cluster) waitJetStream(i int) error {
	return c.waitHealth(i, "/healthz?js-enabled-only=true", startTimeout)
}

func (c *Cluster) waitHealth(i int, path string, timeout time.Duration) error {
	c.mu.Lock()
	nd := c.nodes[i]
	done := nd.done
	c.mu.Unlock()
	hc := &http.Client{Timeout: time.Second}
	var last string
	for end := time.Now().Add(timeout); time.Now().Before(end); {
		if done != nil {
			select {
			case <-done:
				return fmt.Errorf("nats-server %s exited; log:\n%s", nd.Name, tail(nd.LogFile))
			default:
			}
		}
		resp, err := hc.Get(nd.MonitorURL + path)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nats-server %s: %s not ok within %v (last: %s); log:\n%s",
		nd.Name, path, timeout, last, tail(nd.LogFile))
}

// signalNode sends sig to node i and waits up to wait for it to exit,
// then kills it. It reports whether the node was running.
func (c *Cluster) signalNode(i int, sig syscall.Signal, wait time.Duration) bool {
	c.mu.Lock()
	nd := c.nodes[i]
	cmd, done := nd.cmd, nd.done
	c.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
	}
	c.mu.Lock()
	nd.cmd, nd.done = nil, nil
	c.mu.Unlock()
	return true
}

func (c *Cluster) check(i int) {
	c.t.Helper()
	if i < 0 || i >= c.Len() {
		c.t.Fatalf("natstest: no node %d in a %d-node cluster", i, c.Len())
	}
}

// Len is the number of nodes.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node {
	c.t.Helper()
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Index returns the index of the node with this server name, or -1.
func (c *Cluster) Index(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, nd := range c.nodes {
		if nd.Name == name {
			return i
		}
	}
	return -1
}

// URLs are every node's client URL.
func (c *Cluster) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		out[i] = nd.ClientURL
	}
	return out
}

// NKeySeedFile is the user NKey seed file of WithNKey ("" without it).
func (c *Cluster) NKeySeedFile() string { return c.nkeySeedFile }

// TLS are the files of WithTLS (zero without it).
func (c *Cluster) TLS() testcert.TLSFiles { return c.tlsFiles }

// Running reports whether node i's process runs.
func (c *Cluster) Running(i int) bool {
	c.t.Helper()
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].cmd != nil
}

// PID is node i's process id, 0 when it is not running.
func (c *Cluster) PID(i int) int {
	c.t.Helper()
	c.check(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	if cmd := c.nodes[i].cmd; cmd != nil {
		return cmd.Process.Pid
	}
	return 0
}

// Kill ends node i with SIGKILL, as a crash would, and waits for it.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.check(i)
	if !c.signalNode(i, syscall.SIGKILL, stopTimeout) {
		c.t.Fatalf("natstest: Kill(%d): node is not running", i)
	}
}

// Stop ends node i with SIGTERM (SIGKILL after 10 s) and waits for it.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.check(i)
	if !c.signalNode(i, syscall.SIGTERM, stopTimeout) {
		c.t.Fatalf("natstest: Stop(%d): node is not running", i)
	}
}

// Restart stops node i if it runs, starts it again with the same ports,
// configuration and store, and waits until its JetStream is enabled. It
// may not have caught up with the cluster yet: see WaitHealthy.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.check(i)
	c.signalNode(i, syscall.SIGTERM, stopTimeout)
	if err := c.startNode(i); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
	if err := c.waitJetStream(i); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

// StopAll stops every running node at once (SIGTERM).
func (c *Cluster) StopAll() {
	c.t.Helper()
	c.eachNode(func(i int) { c.signalNode(i, syscall.SIGTERM, stopTimeout) })
}

// StartAll starts every node that is not running and waits until each
// one's JetStream is enabled.
func (c *Cluster) StartAll() {
	c.t.Helper()
	for i := range c.Len() {
		if !c.Running(i) {
			if err := c.startNode(i); err != nil {
				c.t.Fatalf("natstest: %v", err)
			}
		}
	}
	for i := range c.Len() {
		if err := c.waitJetStream(i); err != nil {
			c.t.Fatalf("natstest: %v", err)
		}
	}
}

// WaitHealthy waits up to timeout until node i's full health check
// passes: it is connected to the JetStream meta leader and its streams and
// consumers are current. Use it to see that a restarted node rejoined.
func (c *Cluster) WaitHealthy(i int, timeout time.Duration) error {
	c.t.Helper()
	c.check(i)
	return c.waitHealth(i, "/healthz", timeout)
}

// eachNode runs f on every node concurrently and waits.
func (c *Cluster) eachNode(f func(i int)) {
	var wg sync.WaitGroup
	for i := range c.Len() {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

func (c *Cluster) killAll() {
	c.eachNode(func(i int) { c.signalNode(i, syscall.SIGKILL, stopTimeout) })
}

// cleanup shows the logs of a failed test and stops every process.
func (c *Cluster) cleanup() {
	if c.t.Failed() {
		c.mu.Lock()
		nodes := c.nodes
		c.mu.Unlock()
		for _, nd := range nodes {
			c.t.Logf("natstest: end of %s (%s):\n%s", nd.Name, nd.LogFile, tail(nd.LogFile))
		}
	}
	c.eachNode(func(i int) { c.signalNode(i, syscall.SIGTERM, stopTimeout) })
	c.launch.Close()
}

// tail returns the end of a log file.
func tail(name string) string {
	f, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailBytes {
		if _, err := f.Seek(-logTailBytes, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
