package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// proxyV2 is a PROXY protocol v2 header for a client at src.
func proxyV2(t *testing.T, src string) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(2,
		&net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, &net.TCPAddr{IP: net.ParseIP("192.0.2.25"), Port: 25}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Issue 8: from a trusted load balancer the PROXY header (v1 or v2) names
// the client, and that address is the client everywhere: the filter's
// CLIENT, the per-client limit.
func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "proxy_protocol.trusted: 127.0.0.1/32",
		"max_connections_per_client: 1", "client_limit_exceptions: none")

	for i, tc := range []struct {
		name, client string
		header       []byte
	}{
		{"v1", "198.51.100.7", []byte("PROXY TCP4 198.51.100.7 192.0.2.25 40000 25\r\n")},
		{"v2", "198.51.100.8", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.header == nil {
				tc.header = proxyV2(t, tc.client)
			}
			m := h.mark(t, f)
			c := h.dialRaw(t)
			c.Write(tc.header)
			c.ExpectLine("220 " + edgeHost + " ESMTP")
			c.CmdExpect("EHLO client.example", 250)
			sendAlice(t, c, msg1, strings.ReplaceAll(qd1, "{S}", strconv.Itoa(i+1)))
			c.CmdLine("QUIT", smtptest.ReplyBye)
			if got := f.one(t, m).Env["CLIENT"]; got != tc.client {
				t.Errorf("the filter's CLIENT is %q, want %q", got, tc.client)
			}
		})
	}

	// The per-client limit counts the address in the header.
	first := h.dialRaw(t)
	first.Write(proxyV2(t, "198.51.100.9"))
	first.ExpectLine("220 " + edgeHost + " ESMTP")
	other := h.dialRaw(t)
	other.Write(proxyV2(t, "198.51.100.10"))
	other.ExpectLine("220 " + edgeHost + " ESMTP")
	same := h.dialRaw(t)
	same.Write(proxyV2(t, "198.51.100.9"))
	same.ExpectLine("421 4.7.0 Error: too many connections from 198.51.100.9")
}

// Issue 8: a trusted peer must send a valid header; without one the
// connection is closed before any greeting.
func TestProxyProtocolRequiredFromTrusted(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "proxy_protocol.trusted: 127.0.0.1/32", "TimeOut: 1")
	for name, send := range map[string]string{
		"none":      "",
		"malformed": "PROXY TCP4 not-an-address\r\n",
		"smtp":      "EHLO client.example\r\n",
	} {
		c := h.dialRaw(t)
		if send != "" {
			c.Write([]byte(send))
		}
		if got := c.ReadAll(30 * time.Second); len(got) != 0 {
			t.Errorf("%s: the client got %q, want nothing", name, got)
		}
	}
	if n := len(h.up.Sessions()); n != 0 {
		t.Errorf("the upstream was contacted %d times", n)
	}
}

// Issue 8: from anyone else a PROXY line is a bad command, never passed
// on for the upstream to believe.
func TestProxyLineFromUntrusted(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "FilterCommand: cat", "proxy_protocol.trusted: 192.0.2.0/24")
	c := h.dial(t)
	own(t, c.Cmd("PROXY TCP4 198.51.100.7 192.0.2.25 40000 25"), 502)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cQUIT)
}
