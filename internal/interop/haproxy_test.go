package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 8: HAProxy in front of the edge with send-proxy-v2. The client's
// own address (swaks from 127.0.0.5), not HAProxy's, reaches the filter
// as CLIENT.
func TestHAProxySendProxyV2(t *testing.T) {
	bin := tool(t, "haproxy", "haproxy")
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\n"+
		`FilterCommand: printf 'X-Client: %s\n' "$CLIENT"; cat`+"\n"+
		"proxy_protocol.trusted: 127.0.0.1/32\n")

	front := "127.0.0.1:" + freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "haproxy.cfg")
	text := strings.Join([]string{
		"defaults",
		"  mode tcp",
		"  timeout connect 5s",
		"  timeout client 60s",
		"  timeout server 60s",
		"frontend smtp",
		"  bind " + front,
		"  default_backend edge",
		"backend edge",
		"  server edge " + e.addr + " send-proxy-v2",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	hp := startProcess(t, "haproxy", dir, bin, "-db", "-f", conf)
	hp.waitPort(t, front)

	r := swaks(t, front, nil, "--local-interface", "127.0.0.5", "--h-Subject", "through haproxy")
	checkSwaksOK(t, r)
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 {
		t.Fatalf("smtp-sink got %d messages, want 1", len(ms))
	}
	if got := ms[0].header("X-Client"); got != "127.0.0.5" {
		t.Errorf("the filter's CLIENT is %q, want the client's 127.0.0.5 (HAProxy is 127.0.0.1)", got)
	}
	if !strings.Contains(e.stderr.String(), `client=127.0.0.5:`) {
		t.Errorf("the edge's log does not name the client:\n%s", e.stderr.String())
	}
}
