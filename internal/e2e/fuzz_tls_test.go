package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/testcert"
	"github.com/sluice-mail/sluice/internal/wire"
)

// FuzzSessionSTARTTLS is FuzzSession across STARTTLS (issue 8): an edge
// with a certificate, the client's clear-text bytes (plain, followed by
// STARTTLS), the handshake when the edge answered 220 to it, then the
// bytes sent inside TLS (secure) and a half-close. On top of FuzzSession's
// invariants, over both parts:
//
//   - STARTTLS never reaches the upstream;
//   - inside TLS the session starts over: a MAIL before a new EHLO or
//     HELO is refused;
//   - after its 220 to STARTTLS the edge says nothing more in clear (the
//     handshake would fail): commands pipelined behind a STARTTLS get
//     554 and the connection's end, never a 220.
func FuzzSessionSTARTTLS(f *testing.F) {
	txn := "MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n" + msg1 + ".\r\n"
	seeds := [][2]string{
		{"EHLO client.example\r\n", "EHLO client.example\r\n" + txn + "QUIT\r\n"},
		{"EHLO client.example\r\n", txn + "QUIT\r\n"},
		{"EHLO client.example\r\nMAIL FROM:<a@b>\r\n", "MAIL FROM:<a@b>\r\nEHLO again\r\n" + txn},
		{"EHLO client.example\r\n" + authPlain + "\r\n", "EHLO x\r\n" + authPlain + "\r\n" + txn},
		{"EHLO client.example\r\n", "EHLO x\r\nSTARTTLS\r\nQUIT\r\n"},
		{"HELO client.example\r\n", "HELO y\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + smuggle + ".\r\n"},
		{"", "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf a mess"},
		{"EHLO client.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "EHLO x\r\n"},
		{"EHLO client.example\r\nNOOP\r\nRSET\r\n", "NOOP\r\r\nNOOP\x00\nEHLO\r\n\r\n"},
		{"EHLO client.example\r\nSTARTTLS\r\nMAIL FROM:<injected@example.org>\r\n", txn},
		{"EHLO client.example\r\nSTARTTLS\r\n", txn},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	dir := f.TempDir()
	tf, err := testcert.GenerateTLS(filepath.Join(dir, "tls"))
	if err != nil {
		f.Fatal(err)
	}
	ca, err := os.ReadFile(tf.CA)
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	h := startEdge(f, smtptest.Config{Extensions: allExts, MultiLine: true, Timeout: 10 * time.Second}, quietLogs(),
		"FilterCommand: cat", "XClient: on", "Skip: authenticated", "Header: X-Fuzz: %i",
		"max_message_size: 4096", "TimeOut: 5", "retention: 0", "reject_early_talkers: off",
		"tls.cert_file: "+tf.ServerCert, "tls.key_file: "+tf.ServerKey)
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	f.Fuzz(func(t *testing.T, plain, secure []byte) {
		if len(plain)+len(secure) > 32<<10 {
			t.Skip("long inputs cost more than they find")
		}
		before := h.up.Accepted()
		clear := append(append([]byte(nil), plain...), "STARTTLS\r\n"...)
		outClear, outTLS, upgraded := starttlsConversation(t, h.addr, clear, secure, tc)
		checkReplies(t, append(append([]byte(nil), clear...), secure...), append(append([]byte(nil), outClear...), outTLS...))
		if upgraded {
			checkStartsOver(t, secure, outTLS)
		} else if len(outTLS) > 0 {
			t.Errorf("replies inside TLS without a handshake: %q", outTLS)
		}

		checkUpstream(t, h, before, append(append([]byte(nil), clear...), secure...))
		h.up.Clear()
	})
}

// starttlsConversation sends clear, waits for the reply to its final
// STARTTLS, and when it is 220 shakes hands and sends secure inside TLS;
// then it half-closes and reads until the edge closes. It returns what
// the edge said in clear and inside TLS.
func starttlsConversation(t *testing.T, addr string, clear, secure []byte, tc *tls.Config) (outClear, outTLS []byte, upgraded bool) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Write(clear)
	}()
	// Read byte by byte until the STARTTLS reply (nothing of the TLS
	// handshake may be consumed here), the edge closes, or it goes quiet.
	var buf bytes.Buffer
	one := make([]byte, 1)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(one)
		buf.Write(one[:n])
		if bytes.HasSuffix(buf.Bytes(), []byte("\r\n220 2.0.0 Ready to start TLS\r\n")) {
			upgraded = true
			break
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // waiting for more: the edge is, say, in DATA
			}
			return buf.Bytes(), nil, false // closed
		}
	}
	if !upgraded {
		_ = c.(*net.TCPConn).CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		rest, err := io.ReadAll(c)
		if err != nil && !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("the edge did not close the connection: %v (got %q)", err, rest)
		}
		return append(buf.Bytes(), rest...), nil, false
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	tlsConn := tls.Client(c, tc)
	if err := tlsConn.Handshake(); err != nil {
		t.Fatalf("handshake after 220: %v", err)
	}
	go func() {
		_, _ = tlsConn.Write(secure)
		_ = tlsConn.CloseWrite()
	}()
	out, err := io.ReadAll(tlsConn)
	if err != nil && !strings.Contains(err.Error(), "connection reset") && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("the edge did not close the TLS connection: %v (got %q)", err, out)
	}
	return buf.Bytes(), out, true
}

// checkStartsOver: inside TLS nothing said in clear counts (RFC 3207
// 4.2), so a MAIL as the client's first line there is refused (503, or
// 500 for a malformed line), never accepted.
func checkStartsOver(t *testing.T, secure, out []byte) {
	t.Helper()
	i := bytes.IndexByte(secure, '\n')
	if i < 0 {
		return
	}
	first := wire.ParseCommand(string(bytes.TrimSuffix(secure[:i], []byte("\r"))))
	if first.Verb != "MAIL" {
		return
	}
	replies := smtptest.Lines(out)
	if len(replies) == 0 || !strings.HasPrefix(replies[0], "5") {
		t.Errorf("MAIL first inside TLS got %q, want 503 (a new EHLO first)", replies)
	}
}
