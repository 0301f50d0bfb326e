package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/natstest"
	"github.com/sluice-mail/sluice/internal/testcert"
)

// Issue 8: several MX sites, one worker pool (deploy/examples/multisite).
// The centre is a 3-node JetStream cluster (domain "core") with the
// workers, and versitygw; each site is a NATS leaf node without
// JetStream and an edge using nats.domain, both reaching the centre only
// through the site's link: TCP relays this test can cut and restore.
//
//	site a: edge -> leaf a --link a--> core n0..n2 <- workers
//	           \--------------link a--> versitygw
//	site b: edge -> leaf b --link b--> (the same)

// multiSiteTiming: job_timeout short enough that a cut site's answers
// come well within the test, nats.publish_timeout below it.
var multiSiteTiming = timing{filterTimeout: 3, ackWait: 5 * time.Second, jobTimeout: 12 * time.Second, slots: 2}

const multiSitePublishTimeout = 5 * time.Second

// site is one MX site: its link to the centre and its edge.
type site struct {
	name string
	link *link
	edge *proc
}

// newMultiSite starts the centre, two sites (a and b) and two workers.
func newMultiSite(t *testing.T) (*stack, []*site) {
	t.Helper()
	hub := natstest.StartCluster(t, 3, natstest.WithDomain("core"), natstest.WithLeafListener())
	s := newBase(t, multiSiteTiming, hub)
	natsExtra := fmt.Sprintf("  domain: core\n  publish_timeout: %s\n", multiSitePublishTimeout)
	for i := range 2 {
		w := s.newProc(fmt.Sprintf("w%d", i+1), bins.worker)
		w.natsExtra = natsExtra
		s.workers = append(s.workers, w)
	}
	var sites []*site
	for _, name := range []string{"a", "b"} {
		st := &site{name: name, link: newLink(t)}
		var leafRemotes []string
		for i := range hub.Len() {
			addr := strings.TrimPrefix(hub.Node(i).LeafURL, "nats-leaf://")
			leafRemotes = append(leafRemotes, "nats-leaf://"+st.link.relay(addr))
		}
		leaf := natstest.StartCluster(t, 1, natstest.WithClusterName("site-"+name), natstest.AsLeafOf(leafRemotes...))
		st.edge = s.newProc("e-"+name, bins.edge)
		st.edge.natsURLs = leaf.URLs()
		st.edge.s3Endpoint = st.link.relay(s.s3.Endpoint)
		st.edge.natsExtra = natsExtra
		s.edges = append(s.edges, st.edge)
		sites = append(sites, st)
	}
	s.startAll()
	t.Logf("multi-site up: core %v, s3 %s, upstream %s, site a edge %s, site b edge %s",
		hub.URLs(), s.s3.Endpoint, s.up.addr, sites[0].edge.addr, sites[1].edge.addr)
	return s, sites
}

// TestMultiSiteLinkCut: site a loses its link to the centre (NATS and S3
// alike) for a while. Its edge answers 4xx, each reply within the job's
// deadline, and takes mail again by itself once the link is back; site b
// goes on delivering throughout. No message is lost or delivered twice.
func TestMultiSiteLinkCut(t *testing.T) {
	s, sites := newMultiSite(t)
	a, b := sites[0], sites[1]
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	la := (&load{prefix: "site-a", addrs: []string{a.edge.addr}, sessions: 3}).start(ctx)
	lb := (&load{prefix: "site-b", addrs: []string{b.edge.addr}, sessions: 3}).start(ctx)
	defer la.finish()
	defer lb.finish()
	for _, l := range []*load{la, lb} {
		if err := waitOK(l, time.Time{}, 10, 60*time.Second); err != nil {
			t.Fatalf("%s before the cut: %v", l.prefix, err)
		}
	}

	// fault restores the link at to.
	from, to := fault(t, la, 5, 2*multiSiteTiming.jobTimeout, a.link.cut, a.link.restore)
	ra, rb := la.finish(), lb.finish()
	t.Logf("link a cut from %s to %s", from.Format("15:04:05.000"), to.Format("15:04:05.000"))

	var firstAfter time.Time
	for _, r := range ra {
		if r.code == 250 && !r.start.Before(to) && (firstAfter.IsZero() || r.end.Before(firstAfter)) {
			firstAfter = r.end
		}
	}
	report(t, fmt.Sprintf("site a: first 250 (to a message begun after) %v after its link was restored",
		firstAfter.Sub(to).Round(10*time.Millisecond)))

	in := window(ra, from, to)
	t.Logf("site a during the cut:%s", replies(in))
	checkFaultWindow(t, in)
	checkReplyDeadline(t, ra, multiSiteTiming.jobTimeout)
	for _, r := range window(rb, from, to) {
		if r.code != 250 {
			t.Errorf("site b, untouched by the cut, answered %s", r)
		}
	}
	all := append(ra, rb...)
	checkInvariants(t, all, s.up.Transactions())
	checkNoPerm(t, all)
	s.checkAlive()
	s.logSummary()
}

// link is a site's connection to the centre: TCP relays, one per address
// of the centre, that cut can break (open connections reset, new ones
// closed at once, as through a dead WAN line) and restore mend.
type link struct {
	t     *testing.T
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	lns   []net.Listener
	wg    sync.WaitGroup
}

func newLink(t *testing.T) *link {
	l := &link{t: t, conns: map[net.Conn]struct{}{}}
	t.Cleanup(l.close)
	return l
}

// relay listens on a loopback port that forwards to target while the
// link is up, and returns that port's address.
func (l *link) relay(target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.lns = append(l.lns, ln)
	l.mu.Unlock()
	l.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.wg.Go(func() { l.forward(c, target) })
		}
	})
	return ln.Addr().String()
}

func (l *link) forward(c net.Conn, target string) {
	l.mu.Lock()
	down := l.down
	l.mu.Unlock()
	if down {
		c.Close()
		return
	}
	b, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	l.conns[c], l.conns[b] = struct{}{}, struct{}{}
	l.mu.Unlock()
	splice(c, b)
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, b)
	l.mu.Unlock()
}

// cut breaks every connection through the link and refuses new ones.
func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not a polite close
		}
		c.Close()
	}
}

// restore lets connections through again.
func (l *link) restore() {
	l.mu.Lock()
	l.down = false
	l.mu.Unlock()
}

func (l *link) close() {
	l.cut()
	l.mu.Lock()
	for _, ln := range l.lns {
		ln.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// The example's files stay what this test runs: nats-server -t accepts
// each NATS file (its certificate paths pointed at generated ones), the
// edges' and the worker's files load, and they name the JetStream domain
// the core's files give, with no default_js_domain left on the leaves.
func TestMultiSiteExampleFiles(t *testing.T) {
	bin, err := natstest.FindServer()
	if err != nil {
		if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	const dir = "../../deploy/examples/multisite"
	tmp := t.TempDir()
	tf, err := testcert.GenerateTLS(filepath.Join(tmp, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	paths := strings.NewReplacer(
		"/etc/nats/certs/server.pem", tf.ServerCert,
		"/etc/nats/certs/server-key.pem", tf.ServerKey,
		"/etc/nats/certs/ca.pem", tf.CA,
		"/etc/sluice/nats-ca.pem", tf.CA,
	)
	rewrite := func(name string) (string, string) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		text := paths.Replace(string(b))
		p := filepath.Join(tmp, strings.ReplaceAll(name, "/", "-"))
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p, text
	}
	domain := regexp.MustCompile(`(?m)^\s*domain:\s*(\S+)`)
	var domains []string
	for _, name := range []string{"core-1.conf", "core-2.conf", "core-3.conf", "leaf-site-a.conf", "leaf-site-b.conf"} {
		p, text := rewrite("nats/" + name)
		out, err := exec.Command(bin, "-t", "-c", p).CombinedOutput()
		if err != nil {
			t.Errorf("nats-server -t %s: %v\n%s", name, err, out)
		}
		if m := domain.FindStringSubmatch(text); m != nil {
			domains = append(domains, m[1])
		}
		if strings.Contains(text, "\ndefault_js_domain") {
			t.Errorf("%s still maps the JetStream domain with default_js_domain", name)
		}
	}
	if len(domains) != 3 || domains[0] != domains[1] || domains[1] != domains[2] {
		t.Fatalf("the core's JetStream domains: %q, want one for each of the 3 nodes", domains)
	}
	for _, f := range []struct {
		name string
		role config.Role
	}{{"edge-site-a.conf", config.Edge}, {"edge-site-b.conf", config.Edge}, {"worker.conf", config.Worker}} {
		p, _ := rewrite(f.name)
		c, err := config.Load(f.role, []string{"-f", p}, nil)
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		if c.NATS.Domain != domains[0] {
			t.Errorf("%s: nats.domain %q, want the core's %q", f.name, c.NATS.Domain, domains[0])
		}
		for _, w := range c.Warnings {
			// The example's filter lives on the worker hosts, not here.
			if !strings.HasPrefix(w, "FilterCommand: /usr/local/lib/sluice/filters/") {
				t.Errorf("%s: warning %q", f.name, w)
			}
		}
	}
}
