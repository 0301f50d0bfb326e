package interop

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/testcert"
)

// tlsEdge starts the edge with a test certificate, tls.required and an
// implicit-TLS listener, in front of smtp-sink, with a filter that puts
// the TLS facts it was given into a header.
func tlsEdge(t *testing.T) (e *edgeProc, implicit string, f testcert.TLSFiles, sink *smtpSink) {
	t.Helper()
	sink = startSMTPSink(t)
	f, err := testcert.GenerateTLS(filepath.Join(t.TempDir(), "tls"))
	if err != nil {
		t.Fatal(err)
	}
	implicit = "127.0.0.1:" + freePort(t)
	e = startEdge(t, "OutAddress: "+sink.addr+"\n"+
		`FilterCommand: printf 'X-TLS: %s %s\n' "$TLS_VERSION" "$TLS_CIPHER"; cat`+"\n"+
		"tls.cert_file: "+f.ServerCert+"\ntls.key_file: "+f.ServerKey+"\ntls.required: on\n"+
		"tls.implicit_listen: "+implicit+"\n")
	e.waitPort(t, implicit)
	return e, implicit, f, sink
}

var tlsHeader = regexp.MustCompile(`^TLSv1\.[23] TLS_[A-Z0-9_]+$`)

// Issue 8: swaks with STARTTLS, the certificate verified against the
// test CA, and over the implicit-TLS listener; the filter gets the TLS
// facts; a client in clear cannot send mail when TLS is required.
func TestSwaksTLS(t *testing.T) {
	e, implicit, f, sink := tlsEdge(t)

	r := swaks(t, e.addr, nil, "--tls", "--tls-verify", "--tls-ca-path", f.CA, "--h-Subject", "over starttls")
	checkSwaksOK(t, r)
	if !strings.Contains(r.stdout, "<-  220 2.0.0 Ready to start TLS") {
		t.Errorf("no STARTTLS in the transcript:\n%s", r.stdout)
	}
	r = swaks(t, implicit, nil, "--tls-on-connect", "--tls-verify", "--tls-ca-path", f.CA, "--h-Subject", "over implicit tls")
	checkSwaksOK(t, r)

	ms := sink.waitMessages(t, 2)
	if len(ms) != 2 {
		t.Fatalf("smtp-sink got %d messages, want 2", len(ms))
	}
	for _, m := range ms {
		if got := m.header("X-TLS"); !tlsHeader.MatchString(got) {
			t.Errorf("%s: the filter saw TLS %q", m.header("Subject"), got)
		}
	}

	r = swaks(t, e.addr, nil, "--h-Subject", "in clear")
	if r.code == 0 || !strings.Contains(r.stdout, "530 5.7.0 Must issue a STARTTLS command first") {
		t.Errorf("mail in clear with tls.required: exit %d\n%s", r.code, r.stdout)
	}
	if n := len(sink.messages(t)); n != 2 {
		t.Errorf("smtp-sink has %d messages after the refused one, want 2", n)
	}
}

// Issue 8: openssl s_client's STARTTLS, verified against the test CA:
// TLS 1.2 or later, and after it an EHLO reply without STARTTLS.
func TestOpenSSLStartTLS(t *testing.T) {
	e, _, f, _ := tlsEdge(t)
	bin := tool(t, "openssl", "openssl")
	r := runCommand(t, "", []byte("EHLO client.example.org\nQUIT\n"), bin, "s_client", "-starttls", "smtp",
		"-connect", e.addr, "-CAfile", f.CA, "-verify_return_error", "-crlf", "-ign_eof")
	if r.code != 0 {
		t.Fatalf("openssl s_client exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	out := r.stdout + r.stderr
	if !strings.Contains(out, "Verify return code: 0 (ok)") {
		t.Errorf("certificate not verified:\n%s", out)
	}
	if !regexp.MustCompile(`Protocol\s*:\s*TLSv1\.[23]`).MatchString(out) {
		t.Errorf("no TLS 1.2 or 1.3:\n%s", out)
	}
	if !strings.Contains(r.stdout, "250 ") || strings.Contains(r.stdout, "STARTTLS") {
		t.Errorf("EHLO inside TLS:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "221") {
		t.Errorf("no reply to QUIT:\n%s", r.stdout)
	}
}
