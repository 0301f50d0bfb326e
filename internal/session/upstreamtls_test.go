package session

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/testcert"
)

// Issue 8: with upstream TLS, the edge asks the upstream for STARTTLS
// before it greets the client, so that the whole relayed dialog, the
// client's EHLO included, runs inside TLS; failures are a 421 4.7.0 that
// names nothing of the edge's internals.
func TestUpstreamTLS(t *testing.T) {
	server, client := tlsConfigs(t)
	_, otherCA := tlsConfigs(t) // trusts another CA only
	withoutTLS := []string{"PIPELINING", "SIZE 10240000", "8BITMIME"}
	insecure := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	cases := []struct {
		name      string
		up        smtptest.Config
		cfg       Config
		encrypted bool // the upstream's session ran inside TLS
		refused   bool // the client got the 421
	}{
		{"required, verified", smtptest.Config{TLS: server}, Config{UpstreamTLS: client, UpstreamTLSRequired: true}, true, false},
		{"required, unknown CA", smtptest.Config{TLS: server}, Config{UpstreamTLS: otherCA, UpstreamTLSRequired: true}, false, true},
		{"required, not offered", smtptest.Config{TLS: server, Extensions: withoutTLS}, Config{UpstreamTLS: client, UpstreamTLSRequired: true}, false, true},
		{"opportunistic, offered", smtptest.Config{TLS: server}, Config{UpstreamTLS: insecure}, true, false},
		{"opportunistic, not offered", smtptest.Config{Extensions: withoutTLS}, Config{UpstreamTLS: insecure}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pipe := &memPipeline{decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}), filtered: message}
			b := newBed(t, c.up, c.cfg, pipe)
			cl := smtptest.Dial(t, b.ln.Addr().String())
			greeting := cl.Read()
			if c.refused {
				if want := "421 4.7.0 edge.test Error: secure connection to the next hop failed, please try again later"; greeting.Line() != want {
					t.Errorf("greeting %q, want %q", greeting.String(), want)
				}
				cl.ExpectEOF(time.Minute)
				return
			}
			if greeting.Line() != "220 edge.test ESMTP" {
				t.Fatalf("greeting %q", greeting.String())
			}
			ehlo := cl.Cmd("EHLO client.test")
			if strings.Contains(ehlo.String(), "STARTTLS") {
				t.Errorf("the upstream's STARTTLS shown to the client: %q", ehlo.String())
			}
			send(t, cl, "alice@example.com", message)
			cl.ExpectLine(smtptest.Queued(1, 1))
			cl.CmdExpect("QUIT", 221)
			ss, _ := b.up.WaitClosed(t.Context())
			if ss[0].TLS != c.encrypted {
				t.Errorf("upstream session in TLS: %v, want %v (commands %q)", ss[0].TLS, c.encrypted, ss[0].Commands)
			}
			if c.encrypted && (len(ss[0].Commands) < 4 || ss[0].Commands[1] != "STARTTLS\r\n" || ss[0].Commands[3] != "EHLO client.test\r\n") {
				t.Errorf("upstream commands %q: want the edge's EHLO, STARTTLS and EHLO, then the client's EHLO inside TLS", ss[0].Commands)
			}
		})
	}
}

// Mutual TLS: an upstream that requires a client certificate gets the
// edge's.
func TestUpstreamMutualTLS(t *testing.T) {
	f, err := testcert.GenerateTLS(filepath.Join(t.TempDir(), "tls"))
	if err != nil {
		t.Fatal(err)
	}
	load := func(cert, key string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pemCA, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	server := &tls.Config{Certificates: []tls.Certificate{load(f.ServerCert, f.ServerKey)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	for _, withCert := range []bool{true, false} {
		client := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if withCert {
			client.Certificates = []tls.Certificate{load(f.ClientCert, f.ClientKey)}
		}
		b := newBed(t, smtptest.Config{TLS: server}, Config{UpstreamTLS: client, UpstreamTLSRequired: true},
			&memPipeline{decide: verdict(Verdict{Action: ActionAccept})})
		cl := smtptest.Dial(t, b.ln.Addr().String())
		rep := cl.Read()
		if withCert && rep.Line() != "220 edge.test ESMTP" || !withCert && rep.Code != 421 {
			t.Errorf("with a client certificate %v: greeting %q", withCert, rep.String())
		}
	}
}
