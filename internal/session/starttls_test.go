package session

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/testcert"
)

// tlsConfigs makes a server configuration for the edge and a client one
// that trusts it.
func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	f, err := testcert.GenerateTLS(filepath.Join(t.TempDir(), "tls"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// envelopes is a memPipeline decision that keeps each envelope and
// drops the message.
func envelopes(got chan<- *Envelope) func(*Envelope, []byte) (*Verdict, error) {
	return func(e *Envelope, _ []byte) (*Verdict, error) {
		got <- e
		return &Verdict{Action: ActionDrop, Reply: "250 2.0.0 dropped", Status: "250 2.0.0 dropped"}, nil
	}
}

// Issue 8: the edge offers STARTTLS and performs it itself; AUTH waits
// for it; after it the client starts over with EHLO and its TLS facts
// reach the pipeline.
func TestStartTLS(t *testing.T) {
	server, client := tlsConfigs(t)
	got := make(chan *Envelope, 1)
	up := smtptest.Config{Extensions: []string{"PIPELINING", "SIZE 10240000", "AUTH PLAIN LOGIN", "STARTTLS", "8BITMIME"}}
	b := newBed(t, up, Config{TLS: server, TLSRequired: true}, &memPipeline{decide: envelopes(got)})
	cl := b.dial(t)

	ehlo := cl.Cmd("EHLO client.test")
	if last := ehlo.Lines[len(ehlo.Lines)-1]; last != "250 STARTTLS" {
		t.Errorf("EHLO reply %q: STARTTLS is not the edge's last extension", ehlo.Lines)
	}
	if slices.ContainsFunc(ehlo.Lines, func(l string) bool { return strings.Contains(l, "AUTH") }) {
		t.Errorf("AUTH offered before TLS: %q", ehlo.Lines)
	}
	cl.CmdLine("AUTH PLAIN AGFsaWNlAHNlY3JldA==", replyNeedTLS)
	cl.CmdLine("MAIL FROM:<alice@example.com>", replyNeedTLS)
	cl.CmdLine("STARTTLS extra", replyTLSSyntax)
	cl.CmdLine("STARTTLS", replyStartTLS)
	st := cl.StartTLS(client)
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x", st.Version)
	}

	// A new start: MAIL needs a greeting again (the upstream's own 503).
	ehlo = cl.Cmd("EHLO client.test")
	if slices.Contains(ehlo.Lines, "250 STARTTLS") || slices.Contains(ehlo.Lines, "250-STARTTLS") {
		t.Errorf("STARTTLS offered again: %q", ehlo.Lines)
	}
	if !slices.ContainsFunc(ehlo.Lines, func(l string) bool { return strings.Contains(l, "AUTH PLAIN LOGIN") }) {
		t.Errorf("AUTH not offered after TLS: %q", ehlo.Lines)
	}
	cl.CmdLine("STARTTLS", replyTLSActive)
	send(t, cl, "alice@example.com", message)
	cl.ExpectLine("250 2.0.0 dropped")
	select {
	case e := <-got:
		want := TLSInfo{Version: strings.Replace(tls.VersionName(st.Version), "TLS 1.", "TLSv1.", 1), Cipher: tls.CipherSuiteName(st.CipherSuite)}
		if e.TLS == nil || *e.TLS != want {
			t.Errorf("envelope TLS %+v, want %+v", e.TLS, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message reached the pipeline")
	}
	cl.CmdExpect("QUIT", 221)
	// The upstream saw every EHLO of the client's, never its STARTTLS.
	ss, _ := b.up.WaitClosed(t.Context())
	if cmds := strings.Join(ss[0].Commands, ""); strings.Contains(cmds, "STARTTLS") || strings.Count(cmds, "EHLO") != 3 {
		t.Errorf("upstream commands %q", ss[0].Commands)
	}
}

// Issue 8 (CVE-2011-0411): commands sent in clear behind STARTTLS are
// discarded, answered as a protocol error, and never run.
func TestStartTLSPipelinedCommands(t *testing.T) {
	server, _ := tlsConfigs(t)
	b := newBed(t, smtptest.Config{}, Config{TLS: server}, &memPipeline{decide: verdict(Verdict{Action: ActionAccept})})
	cl := b.dial(t)
	cl.CmdExpect("EHLO client.test", 250)
	cl.Write([]byte("STARTTLS\r\nMAIL FROM:<mallory@example.com>\r\n"))
	cl.ExpectLine(replyTLSPipelined)
	cl.ExpectEOF(time.Minute)
	ss, _ := b.up.WaitClosed(t.Context())
	if cmds := strings.Join(ss[0].Commands, ""); strings.Contains(cmds, "MAIL") {
		t.Errorf("the injected command reached the upstream: %q", ss[0].Commands)
	}
}

// Without a certificate, STARTTLS is neither offered nor accepted, as
// before.
func TestNoTLSWithoutCertificate(t *testing.T) {
	b := newBed(t, smtptest.Config{Extensions: []string{"STARTTLS", "AUTH PLAIN"}}, Config{}, &memPipeline{decide: verdict(Verdict{Action: ActionAccept})})
	cl := b.dial(t)
	ehlo := cl.Cmd("EHLO client.test")
	if slices.ContainsFunc(ehlo.Lines, func(l string) bool { return strings.Contains(l, "STARTTLS") }) {
		t.Errorf("STARTTLS offered without a certificate: %q", ehlo.Lines)
	}
	if !slices.ContainsFunc(ehlo.Lines, func(l string) bool { return strings.Contains(l, "AUTH") }) {
		t.Errorf("AUTH hidden without TLS configured: %q", ehlo.Lines)
	}
	cl.CmdLine("STARTTLS", replyNotImpl)
}

// Skip: authenticated keeps working where AUTH waits for TLS: an
// authenticated client's message goes straight to the upstream.
func TestSkipAuthenticatedAfterTLS(t *testing.T) {
	server, client := tlsConfigs(t)
	up := smtptest.Config{Extensions: []string{"AUTH PLAIN", "8BITMIME"}}
	pipe := &memPipeline{decide: func(*Envelope, []byte) (*Verdict, error) {
		t.Error("an authenticated client's message was filtered")
		return &Verdict{Action: ActionAccept}, nil
	}}
	b := newBed(t, up, Config{TLS: server, SkipAuthenticated: true}, pipe)
	cl := b.dial(t)
	cl.CmdExpect("EHLO client.test", 250)
	cl.CmdLine("STARTTLS", replyStartTLS)
	cl.StartTLS(client)
	cl.CmdExpect("EHLO client.test", 250)
	cl.CmdExpect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 235)
	cl.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	cl.CmdExpect("RCPT TO:<bob@example.com>", 250)
	cl.CmdExpect("DATA", 354) // the upstream's own
	cl.Write([]byte(message + ".\r\n"))
	cl.ExpectLine(smtptest.Queued(1, 1))
	if k := b.kind(t); k != Skipped {
		t.Errorf("outcome %v, want skipped", k)
	}
	cl.CmdExpect("QUIT", 221)
}
