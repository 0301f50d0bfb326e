package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 8: TransparentProxy, between network namespaces the test creates
// and deletes again. A client (192.0.2.2) sends to an MX (198.51.100.2:25)
// through a router; the router's nftables rules send port 25 to the edge
// on the router, which delivers where the client meant to go. Nothing of
// it leaves those namespaces: the addresses are documentation ranges on
// veth pairs between them.
//
//	cli 192.0.2.2 --- 192.0.2.1 rtr (edge :10025, nftables) 198.51.100.1 --- 198.51.100.2 srv (smtp-sink :25)

const (
	tpClient = "192.0.2.2"
	tpRouter = "192.0.2.1"
	tpOut    = "198.51.100.1" // the router's side towards the MX
	tpMX     = "198.51.100.2"
)

// TransparentProxy client: netfilter REDIRECT; the edge finds the original
// destination (SO_ORIGINAL_DST) and connects there from its own address.
// A client that connects to the edge directly is a loop, refused as
// proxsmtpd does.
func TestTransparentProxyClient(t *testing.T) {
	n := newTransparentNet(t)
	n.rtr.nft(t, `
table ip sluice_test {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "r0" tcp dport 25 redirect to :10025
	}
}`)
	sink, e := n.start(t, "client")

	n.deliver(t, sink, "transparent client", tpOut) // from the edge's address
	if !strings.Contains(e.stderr.String(), "the OutAddress option will be ignored when TransparentProxy is enabled") {
		t.Errorf("no warning that OutAddress is ignored:\n%s", e.stderr.String())
	}

	// Straight to the edge: its original destination is the edge itself.
	r := n.swaks(t, tpRouter+":10025", "--h-Subject", "loop")
	if r.code == 0 {
		t.Errorf("a direct connection to the edge was relayed:\n%s", r.stdout)
	}
	if lines := serverLines(r.stdout); len(lines) == 0 || !strings.HasPrefix(lines[0], "421 ") {
		t.Errorf("a direct connection got %q, want a 421", lines)
	}
	waitFor(t, func() bool { return strings.Contains(e.stderr.String(), "loop detected in transparent proxying") },
		"the edge's log to say: loop detected in transparent proxying")
	if ms := sink.messages(t); len(ms) != 1 {
		t.Errorf("smtp-sink has %d messages after the loop, want 1", len(ms))
	}
}

// TransparentProxy full: TPROXY diverts port 25 to the edge's
// IP_TRANSPARENT listener, and the edge's own connection to the MX leaves
// from the client's address, so the MX sees the client.
func TestTransparentProxyFull(t *testing.T) {
	n := newTransparentNet(t)
	n.rtr.nft(t, `
table ip sluice_test {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp socket transparent 1 meta mark set 1 accept
		iifname "r0" tcp dport 25 tproxy to :10025 meta mark set 1 accept
	}
}`)
	// Marked packets (to the client's address, for the edge's socket) are
	// delivered locally.
	n.rtr.ip(t, "rule", "add", "fwmark", "1", "lookup", "100")
	n.rtr.ip(t, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	sink, _ := n.start(t, "full")

	n.deliver(t, sink, "transparent full", tpClient) // from the client's own address
}

// transparentNet is the three namespaces and their links.
type transparentNet struct {
	cli, rtr, srv *netns
}

func newTransparentNet(t *testing.T) *transparentNet {
	t.Helper()
	tool(t, "nft", "nftables")
	tool(t, "ip", "iproute2")
	if !isRoot() {
		if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
			t.Fatal("network namespaces need root, and SLUICE_REQUIRE_TOOLS=1")
		}
		t.Skip("network namespaces need root")
	}
	n := &transparentNet{cli: newNetns(t, "cli"), rtr: newNetns(t, "rtr"), srv: newNetns(t, "srv")}
	n.cli.ip(t, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", n.rtr.name)
	n.srv.ip(t, "link", "add", "s0", "type", "veth", "peer", "name", "r1", "netns", n.rtr.name)
	for _, l := range []struct {
		ns        *netns
		dev, addr string
	}{{n.cli, "c0", tpClient}, {n.rtr, "r0", tpRouter}, {n.rtr, "r1", tpOut}, {n.srv, "s0", tpMX}} {
		l.ns.ip(t, "addr", "add", l.addr+"/24", "dev", l.dev)
		l.ns.ip(t, "link", "set", l.dev, "up")
	}
	n.cli.ip(t, "route", "add", "default", "via", tpRouter)
	n.srv.ip(t, "route", "add", "default", "via", tpOut)
	n.rtr.sh(t, "echo 1 > /proc/sys/net/ipv4/ip_forward; for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done")
	return n
}

// start runs smtp-sink on the MX and the edge on the router with
// TransparentProxy mode and a filter that shows the client's address.
func (n *transparentNet) start(t *testing.T, mode string) (*smtpSink, *edgeProc) {
	t.Helper()
	sink := launchSMTPSink(t, n.srv.exec(), tpMX+":25")
	n.srv.waitPort(t, sink.p, tpMX+":25")
	e := newEdge(t, "OutAddress: 127.0.0.1:1\n"+
		"TransparentProxy: "+mode+"\n"+
		`FilterCommand: printf 'X-Client: %s\n' "$CLIENT"; cat`+"\n"+
		"Listen: 0.0.0.0:10025\n")
	argv := append(n.rtr.exec(), edgeBin, "-d", "3", "-f", e.conf, "--data-dir", filepath.Join(e.dir, "data"))
	e.process = startProcess(t, "edge", e.dir, argv...)
	n.rtr.waitPort(t, e.process, "127.0.0.1:10025")
	return sink, e
}

// deliver sends a message from the client to the MX's port 25 through the
// router: it reaches smtp-sink from the address from, and the filter saw
// the client's own.
func (n *transparentNet) deliver(t *testing.T, sink *smtpSink, subject, from string) {
	t.Helper()
	checkSwaksOK(t, n.swaks(t, tpMX+":25", "--h-Subject", subject))
	ms := sink.waitMessages(t, 1)
	if got := ms[0].header("X-Client"); got != tpClient {
		t.Errorf("the filter's CLIENT is %q, want the client's %s", got, tpClient)
	}
	if got := ms[0].header("X-Client-Addr"); got != from {
		t.Errorf("smtp-sink saw the connection come from %q, want %s", got, from)
	}
}

// swaks sends from the client's namespace.
func (n *transparentNet) swaks(t *testing.T, addr string, args ...string) result {
	t.Helper()
	bin := tool(t, "swaks", "swaks")
	argv := append(n.cli.exec(), bin, "--server", addr, "--timeout", "60",
		"--helo", "client.example.org", "--from", "alice@example.com", "--to", "bob@example.com")
	return runCommand(t, "", nil, append(argv, args...)...)
}

// netns is a network namespace of the test's own (`ip netns add`),
// deleted when the test ends, with its loopback up.
type netns struct{ name string }

func newNetns(t *testing.T, role string) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("sluice-%d-%s", os.Getpid(), role)}
	if r := runCommand(t, "", nil, "ip", "netns", "add", n.name); r.code != 0 {
		t.Fatalf("ip netns add %s: %s", n.name, r.stderr)
	}
	t.Cleanup(func() { runCommand(t, "", nil, "ip", "netns", "del", n.name) })
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// exec is the command prefix that runs a program inside the namespace.
func (n *netns) exec() []string { return []string{"ip", "netns", "exec", n.name} }

// ip runs `ip -n NAME args...`, failing the test if it fails.
func (n *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	n.must(t, append([]string{"ip", "-n", n.name}, args...)...)
}

// sh runs a shell script inside the namespace.
func (n *netns) sh(t *testing.T, script string) {
	t.Helper()
	n.must(t, append(n.exec(), "sh", "-c", script)...)
}

// nft loads a ruleset inside the namespace.
func (n *netns) nft(t *testing.T, ruleset string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(ruleset+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.must(t, append(n.exec(), tool(t, "nft", "nftables"), "-f", f)...)
}

func (n *netns) must(t *testing.T, argv ...string) {
	t.Helper()
	if r := runCommand(t, "", nil, argv...); r.code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
}

// waitPort waits until addr accepts connections inside the namespace,
// failing early if p, which should listen there, exited.
func (n *netns) waitPort(t *testing.T, p *process, addr string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	probe := append(n.exec(), "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port)
	deadline := time.Now().Add(startTimeout)
	for runCommand(t, "", nil, probe...).code != 0 {
		if code, exited := p.wait(0); exited {
			t.Fatalf("%s exited (status %d) before listening on %s", p.name, code, addr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: nothing listening on %s in %s after %s", p.name, addr, n.name, startTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
