package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/logging"
)

// proxsmtpdPath is Debian's proxsmtpd (package proxsmtp). Only some
// machines have it; its benchmarks are skipped elsewhere.
const proxsmtpdPath = "/usr/sbin/proxsmtpd"

const (
	sender    = "alice@example.com"
	recipient = "bob@example.com"
)

// sink is the upstream every path delivers to: a go-smtp server that
// reads each message to its end and counts it.
type sink struct {
	addr  string
	msgs  atomic.Int64
	bytes atomic.Int64
}

func startSink(tb testing.TB) *sink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &sink{addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s}, nil
	}))
	srv.Domain = "sink.bench.example"
	srv.MaxMessageBytes = 256 << 20
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return s
}

type sinkSession struct{ s *sink }

func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }

func (ss *sinkSession) Data(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	ss.s.bytes.Add(n)
	ss.s.msgs.Add(1)
	return nil
}

// target is one path from the client to the sink.
type target struct {
	name string
	addr string
	skip string // why this path cannot run here; "" when it can
}

// startTargets starts the sink and every path to it:
//
//	a_direct         the client talks to the sink itself
//	b_edge_cat       the edge, in this process, embedded default, FilterCommand cat (pipe)
//	c_edge_nofilter  the same edge setup without FilterCommand
//	d_proxsmtpd_cat  Debian's proxsmtpd with cat, when installed
func startTargets(tb testing.TB) (*sink, []target) {
	tb.Helper()
	s := startSink(tb)
	ts := []target{
		{name: "a_direct", addr: s.addr},
		{name: "b_edge_cat", addr: startEdge(tb, s.addr, "cat")},
		{name: "c_edge_nofilter", addr: startEdge(tb, s.addr, "")},
	}
	d := target{name: "d_proxsmtpd_cat"}
	if _, err := os.Stat(proxsmtpdPath); err != nil {
		d.skip = proxsmtpdPath + " not installed (apt-get install proxsmtp)"
	} else {
		d.addr = startProxsmtpd(tb, s.addr)
	}
	return s, append(ts, d)
}

// startEdge runs an edge in this process as cmd/edge does, from a
// proxsmtpd.conf, on the embedded default (no NATS URL: embedded NATS,
// local store, in-process workers). It logs at the default level to
// io.Discard, so log formatting is counted but not the terminal.
func startEdge(tb testing.TB, sinkAddr, filterCommand string) string {
	tb.Helper()
	dir := tb.TempDir()
	conf := fmt.Sprintf("Listen: 127.0.0.1:%d\nOutAddress: %s\nTempDirectory: %s\n", freePort(tb), sinkAddr, dir)
	if filterCommand != "" {
		conf += "FilterCommand: " + filterCommand + "\n"
	}
	path := filepath.Join(dir, "edge.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(config.Edge, []string{"-f", path, "--data-dir", filepath.Join(dir, "data")}, nil)
	if err != nil {
		tb.Fatalf("edge configuration: %v", err)
	}
	e, err := edge.Start(context.Background(), cfg, logging.New(io.Discard, cfg.LogLevel(), string(cfg.LogFormat)))
	if err != nil {
		tb.Fatalf("starting the edge: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e.Addr().String()
}

// startProxsmtpd runs Debian's proxsmtpd in the foreground (-d) with cat,
// logging per message as the edge does (-d 3), to /dev/null.
func startProxsmtpd(tb testing.TB, sinkAddr string) string {
	tb.Helper()
	addr, _ := startProxsmtpdProcess(tb, sinkAddr)
	return addr
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dial opens one SMTP session and says EHLO.
func dial(tb testing.TB, addr string) *smtp.Client {
	tb.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		tb.Fatalf("dial %s: %v", addr, err)
	}
	if err := c.Hello("client.bench.example"); err != nil {
		tb.Fatalf("EHLO to %s: %v", addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// send is one transaction on an open session: MAIL, RCPT, DATA, the
// message, and the final reply.
func send(c *smtp.Client, msg []byte) error {
	return c.SendMail(sender, []string{recipient}, bytes.NewReader(msg))
}

// message is a typical text message of about size bytes: headers, then
// 72-character CRLF lines, a few of them starting with a dot.
func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\n" +
		"Subject: quarterly report\r\nMessage-ID: <bench@example.com>\r\n" +
		"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := 0; b.Len() < size-80; i++ {
		if i%40 == 39 {
			b.WriteString(".a line that starts with a dot, stuffed on the wire\r\n")
			continue
		}
		fmt.Fprintf(&b, "%04d The quick brown fox jumps over the lazy dog, again and again.\r\n", i)
	}
	return b.Bytes()
}
