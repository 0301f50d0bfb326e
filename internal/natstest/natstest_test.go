package natstest

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"nats-server: v2.15.2\n", "2.15.2", true},
		{"nats-server: v2.9.10", "2.9.10", true},
		{"nats-server: 2.10.0-beta.1\n", "2.10.0-beta.1", true},
		{"nats-server: v2.15.2\nextra line", "2.15.2", true},
		{"", "", false},
		{"nats-server v2.15.2", "", false},
		{"gnatsd: v1.4.1", "", false},
		{"nats-server: vx.y", "", false},
		{"nats-server: v2..1", "", false},
		{"nats-server: v2.15.2 something", "", false},
	} {
		got, ok := parseVersion(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseVersion(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"nats-server: v2.15.2\n", "nats-server: v2.9.10", "nats-server:", ":", "nats-server: v.\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := parseVersion(s)
		if !ok {
			if v != "" {
				t.Fatalf("not ok but version %q", v)
			}
			return
		}
		if v == "" || strings.ContainsAny(v, " \t\r\n") || v[0] < '0' || v[0] > '9' {
			t.Fatalf("bad version %q from %q", v, s)
		}
		if !strings.Contains(s, "nats-server") {
			t.Fatalf("version %q from %q, which does not name nats-server", v, s)
		}
	})
}

// refused reports whether nothing listens at url's address any more.
func refused(url string) bool {
	_, hostport, _ := strings.Cut(url, "://")
	c, err := net.DialTimeout("tcp", hostport, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.Timeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func numRoutes(t *testing.T, nd *Node) int {
	t.Helper()
	resp, err := http.Get(nd.MonitorURL + "/routez")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rz struct {
		NumRoutes int `json:"num_routes"`
		Routes    []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rz); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range rz.Routes {
		names[r.RemoteName] = true
	}
	return len(names) // route pooling opens several connections per peer
}

func TestClusterLifecycle(t *testing.T) {
	c := StartCluster(t, 3)
	if c.Len() != 3 || len(c.URLs()) != 3 {
		t.Fatalf("%d nodes, %d URLs", c.Len(), len(c.URLs()))
	}
	for i := range 3 {
		nd := c.Node(i)
		nc := connect(t, nd.ClientURL)
		if got := nc.ConnectedServerName(); got != nd.Name {
			t.Errorf("node %d answers as %q, want %q", i, got, nd.Name)
		}
		if c.Index(nd.Name) != i {
			t.Errorf("Index(%q) = %d", nd.Name, c.Index(nd.Name))
		}
		if err := c.WaitHealthy(i, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for numRoutes(t, nd) != 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := numRoutes(t, nd); n != 2 {
			t.Errorf("node %d has routes to %d peers, want 2", i, n)
		}
	}

	url, pid := c.Node(1).ClientURL, c.PID(1)
	c.Kill(1)
	if c.Running(1) || c.PID(1) != 0 {
		t.Error("node 1 still reported running after Kill")
	}
	if !refused(url) {
		t.Error("node 1 still accepts connections after Kill")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Kill: %v, want ESRCH", pid, err)
	}
	c.Restart(1)
	if c.Node(1).ClientURL != url {
		t.Errorf("restarted node URL %s, was %s", c.Node(1).ClientURL, url)
	}
	if c.PID(1) == pid || c.PID(1) == 0 {
		t.Errorf("restarted node PID %d (was %d)", c.PID(1), pid)
	}
	connect(t, url)
	if err := c.WaitHealthy(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	c.StopAll()
	for i, u := range c.URLs() {
		if c.Running(i) || !refused(u) {
			t.Errorf("node %d still up after StopAll", i)
		}
	}
	c.StartAll()
	for i, u := range c.URLs() {
		connect(t, u)
		if err := c.WaitHealthy(i, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCleanupStopsEveryProcess(t *testing.T) {
	var pids []int
	t.Run("cluster", func(t *testing.T) {
		c := StartCluster(t, 2)
		for i := range c.Len() {
			pids = append(pids, c.PID(i))
		}
	})
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}
	for _, pid := range pids {
		if pid == 0 {
			t.Fatal("a node had no PID")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d after the test ended: %v, want ESRCH", pid, err)
		}
	}
}

func TestAuth(t *testing.T) {
	t.Run("user", func(t *testing.T) {
		c := StartCluster(t, 1, WithUser("sluice", "s3cret"))
		connect(t, c.URLs()[0], nats.UserInfo("sluice", "s3cret"))
		if _, err := nats.Connect(c.URLs()[0], nats.UserInfo("sluice", "wrong")); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("wrong password: %v, want an authorization error", err)
		}
	})
	t.Run("token", func(t *testing.T) {
		c := StartCluster(t, 1, WithToken("tok-123"))
		connect(t, c.URLs()[0], nats.Token("tok-123"))
		if _, err := nats.Connect(c.URLs()[0]); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("no token: %v, want an authorization error", err)
		}
	})
	t.Run("nkey", func(t *testing.T) {
		c := StartCluster(t, 1, WithNKey())
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeedFile())
		if err != nil {
			t.Fatal(err)
		}
		connect(t, c.URLs()[0], opt)
		if fi, err := os.Stat(c.NKeySeedFile()); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("seed file: %v %v", fi, err)
		}
		if _, err := nats.Connect(c.URLs()[0]); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("no nkey: %v, want an authorization error", err)
		}
	})
	t.Run("tls", func(t *testing.T) {
		c := StartCluster(t, 1, WithTLS())
		f := c.TLS()
		if !strings.HasPrefix(c.URLs()[0], "tls://") {
			t.Errorf("URL %s", c.URLs()[0])
		}
		connect(t, c.URLs()[0], nats.RootCAs(f.CA), nats.ClientCert(f.ClientCert, f.ClientKey))
		if _, err := nats.Connect(c.URLs()[0], nats.RootCAs(f.CA), nats.Timeout(5*time.Second)); err == nil {
			t.Error("connected without a client certificate")
		}
	})
}
