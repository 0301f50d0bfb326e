package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/postfixtest"
	"github.com/sluice-mail/sluice/internal/testcert"
)

// Issue 8: a real Postfix smtpd that requires TLS as the upstream, its
// certificate verified against the test CA: swaks in clear to the edge,
// the edge in TLS to Postfix, which queues the message and logs the TLS
// session.
func TestUpstreamTLSToPostfix(t *testing.T) {
	dir := t.TempDir()
	f, err := testcert.GenerateTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	// Postfix reads them as its own user, not root.
	for _, p := range []string{dir, filepath.Dir(f.CA), f.ServerCert, f.ServerKey, f.CA} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pf := postfixtest.Start(t,
		"smtpd_tls_security_level = encrypt",
		"smtpd_tls_cert_file = "+f.ServerCert,
		"smtpd_tls_key_file = "+f.ServerKey,
		"smtpd_tls_loglevel = 1",
	)
	e := startEdge(t, "OutAddress: "+pf.Addr()+"\nFilterCommand: cat\n"+
		"upstream.tls: required\nupstream.tls_ca_file: "+f.CA+"\n")
	r := swaks(t, e.addr, nil, "--to", "user@"+postfixtest.LocalDomain, "--h-Subject", "through tls")
	checkSwaksOK(t, r)

	var queued []postfixtest.Message
	for deadline := time.Now().Add(30 * time.Second); len(queued) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if queued, err = pf.Messages(); err != nil {
			t.Fatal(err)
		}
	}
	if len(queued) != 1 || queued[0].Sender != "alice@example.com" {
		t.Fatalf("Postfix queued %v, want alice's message", queued)
	}
	log := pf.LogTail()
	if !strings.Contains(log, "TLS connection established from") {
		t.Errorf("Postfix logged no TLS session:\n%s", log)
	}
	t.Logf("Postfix: %s", firstLine(log, "TLS connection established"))

	// The same edge without the CA: the check fails, the sender gets a
	// 421 that names nothing internal, and Postfix queues nothing more.
	bad := startEdge(t, "OutAddress: "+pf.Addr()+"\nFilterCommand: cat\nupstream.tls: required\n")
	r = swaks(t, bad.addr, nil, "--to", "user@"+postfixtest.LocalDomain)
	if !strings.Contains(r.stdout, "421 4.7.0") || strings.Contains(r.stdout, "x509") {
		t.Errorf("unverified upstream: swaks got\n%s", r.stdout)
	}
	if !strings.Contains(bad.stderr.String(), "TLS to the upstream failed") {
		t.Errorf("the edge logged no reason:\n%s", bad.stderr.String())
	}
}

// firstLine is the first line of s that contains sub, "" for none.
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// Issue 8: a real Postfix as the sending MTA, with
// smtp_tls_security_level = encrypt and the test CA, relays a message
// through the edge (tls.required on, so nothing passes in clear) to
// smtp-sink. Postfix logs the TLS session and status=sent; the filter
// sees the TLS facts.
func TestPostfixSendsThroughEdgeWithTLS(t *testing.T) {
	dir, err := os.MkdirTemp("", "sluice-interop-tls-") // Postfix's user reads the CA
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f, err := testcert.GenerateTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Dir(f.CA), f.CA} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\n"+
		`FilterCommand: printf 'X-TLS: %s %s\n' "$TLS_VERSION" "$TLS_CIPHER"; cat`+"\n"+
		"tls.cert_file: "+f.ServerCert+"\ntls.key_file: "+f.ServerKey+"\ntls.required: on\n")
	pf := postfixtest.StartSender(t, "["+strings.Replace(e.addr, ":", "]:", 1),
		"smtp_tls_security_level = encrypt",
		"smtp_tls_CAfile = "+f.CA,
		"smtp_tls_loglevel = 1",
	)
	r := swaks(t, pf.Addr(), nil, "--to", "bob@"+postfixtest.OutsideDomain, "--h-Subject", "postfix through the edge")
	checkSwaksOK(t, r)

	// Postfix delivers after swaks had its 250; once it logs status=sent
	// the edge had smtp-sink's 250, and smtp-sink had written the message.
	var log string
	waitFor(t, func() bool { log = pf.LogTail(); return strings.Contains(log, "status=") },
		"Postfix to log what became of the message")
	if !strings.Contains(log, "status=sent") {
		t.Fatalf("Postfix did not deliver through the edge:\n%s", log)
	}
	ms := sink.waitMessages(t, 1)
	if got := ms[0].header("X-TLS"); !strings.HasPrefix(got, "TLS") || !strings.Contains(got, "_") {
		t.Errorf("the filter's TLS_VERSION and TLS_CIPHER: %q", got)
	}
	if got := ms[0].header("Subject"); got != "postfix through the edge" {
		t.Errorf("smtp-sink got Subject %q", got)
	}
	if !strings.Contains(log, "Trusted TLS connection established to") {
		t.Errorf("Postfix logged no verified TLS session to the edge:\n%s", log)
	}
	t.Logf("Postfix: %s", firstLine(log, "TLS connection established to"))
	t.Logf("Postfix: %s", firstLine(log, "status=sent"))
}
