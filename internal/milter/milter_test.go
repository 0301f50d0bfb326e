package milter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/sluice-mail/sluice/internal/filter"
	"github.com/sluice-mail/sluice/internal/miltertest"
)

const message = "Received: from client\r\n\tby mx; Mon, 2 Jan 2006 15:04:05 +0000\r\n" +
	"From: Alice <alice@example.com>\r\nSubject:tight\r\nX-Delete-Me: 1\r\n\r\n" +
	"Hello Bob,\r\n.a dotted line\r\nBye.\r\n"

func testEnv() filter.Env {
	sender := "alice@example.com"
	return filter.Env{Sender: &sender, Recipients: []string{"bob@example.com", "carol@example.com"},
		Client: "192.0.2.1", Helo: "client.example.net", MessageID: "id123"}
}

func newChain(t *testing.T, cfg Config) *Chain {
	t.Helper()
	cfg.Hostname = "mx.example.org"
	cfg.TempDir = t.TempDir()
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = 5 * time.Second
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func run(t *testing.T, c *Chain, msg string) (filter.Result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := c.Run(ctx, testEnv(), strings.NewReader(msg), &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Unchanged {
		// What a worker then delivers: the input.
		if out.Len() != 0 || res.Action != filter.Accept {
			t.Fatalf("unchanged, but %v and %d bytes written", res.Action, out.Len())
		}
		return res, msg
	}
	return res, out.String()
}

// The transaction reaches the milter as an MTA sends it, and its header
// changes are applied: added, inserted, changed, deleted; the fields it
// did not touch and the body stay byte for byte.
func TestChainReplaysAndModifies(t *testing.T) {
	st := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if err := m.AddHeader("X-Milter", "added"); err != nil {
			return nil, err
		}
		if err := m.InsertHeader(0, "X-First", "inserted at the top"); err != nil {
			return nil, err
		}
		if err := m.ChangeHeader(1, "subject", "changed"); err != nil {
			return nil, err
		}
		if err := m.ChangeHeader(1, "X-Delete-Me", ""); err != nil {
			return nil, err
		}
		return milter.RespAccept, nil
	}}
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, st)}})
	res, out := run(t, c, message)
	if res.Action != filter.Accept || res.OutputSize != int64(len(out)) {
		t.Fatalf("result %+v, output %d bytes", res, len(out))
	}
	want := "X-First: inserted at the top\r\n" +
		"Received: from client\r\n\tby mx; Mon, 2 Jan 2006 15:04:05 +0000\r\n" +
		"From: Alice <alice@example.com>\r\nSubject: changed\r\nX-Milter: added\r\n\r\n" +
		"Hello Bob,\r\n.a dotted line\r\nBye.\r\n"
	if out != want {
		t.Errorf("delivered:\n%q\nwant:\n%q", out, want)
	}
	seen := strings.Join(st.Lines(), "\n")
	for _, w := range []string{
		"connect [192.0.2.1] tcp4 192.0.2.1", "macro j=mx.example.org", "macro {daemon_name}=sluice",
		"helo client.example.net", "mail <alice@example.com>", "rcpt <bob@example.com>", "rcpt <carol@example.com>",
		"header Received: from client\n\tby mx; Mon, 2 Jan 2006 15:04:05 +0000", "header Subject: tight", "macro i=id123",
	} {
		if !strings.Contains(seen, w) {
			t.Errorf("the milter was not told %q; it saw:\n%s", w, seen)
		}
	}
	if got := st.Body(); got != "Hello Bob,\r\n.a dotted line\r\nBye.\r\n" {
		t.Errorf("the milter got the body %q", got)
	}
}

// Two milters in order: the second sees what the first added; a
// replacement body is delivered.
func TestChainInOrderAndReplaceBody(t *testing.T) {
	first := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if err := m.AddHeader("X-Spam-Flag", "NO"); err != nil {
			return nil, err
		}
		return milter.RespAccept, m.ReplaceBody(strings.NewReader("new body\nsecond line\n"))
	}}
	second := &miltertest.Peer{}
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, first), miltertest.Start(t, second)}})
	res, out := run(t, c, message)
	if res.Action != filter.Accept {
		t.Fatalf("result %+v", res)
	}
	if !strings.HasSuffix(out, "X-Spam-Flag: NO\r\n\r\nnew body\r\nsecond line\r\n") {
		t.Errorf("delivered:\n%q", out)
	}
	if !strings.Contains(strings.Join(second.Lines(), "\n"), "header X-Spam-Flag: NO") {
		t.Errorf("the second milter did not see the first one's header: %v", second.Lines())
	}
	if got := second.Body(); got != "new body\r\nsecond line\r\n" {
		t.Errorf("the second milter got the body %q", got)
	}
}

// A file as input (the store's copy, a FilterCommand's output) is read
// in place, wherever it was positioned: the first milter reads the body
// from it, the second the body the first put in its place, and the file
// is left as it was.
func TestChainReadsAFileInPlace(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "in")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("not part of the message" + message); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(int64(len("not part of the message")), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	first := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		return milter.RespAccept, m.ReplaceBody(strings.NewReader("replaced\r\n"))
	}}
	second := &miltertest.Peer{}
	tmp := t.TempDir()
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, first), miltertest.Start(t, second)}})
	c.cfg.TempDir = tmp
	var out bytes.Buffer
	res, err := c.Run(context.Background(), testEnv(), f, &out)
	if err != nil || res.Action != filter.Accept || res.Unchanged {
		t.Fatalf("result %+v, %v", res, err)
	}
	body := message[strings.Index(message, "\r\n\r\n")+4:]
	if got := first.Body(); got != body {
		t.Errorf("the first milter got the body %q, want %q", got, body)
	}
	if got := second.Body(); got != "replaced\r\n" {
		t.Errorf("the second milter got the body %q", got)
	}
	if want := message[:strings.Index(message, "\r\n\r\n")+4] + "replaced\r\n"; out.String() != want {
		t.Errorf("delivered %q, want %q", out.String(), want)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in TempDirectory: %v", left)
	}
	if all, _ := os.ReadFile(f.Name()); string(all) != "not part of the message"+message {
		t.Error("the input file was changed")
	}
}

// Each outcome maps onto the filter contract, wherever the milter
// decides.
func TestChainOutcomes(t *testing.T) {
	custom, err := milter.RejectWithCodeAndReason(554, "5.7.1 spam, go away")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		st     *miltertest.Peer
		action filter.Action
		reply  string
		status string
	}{
		{"reject at RCPT with its own reply", &miltertest.Peer{Rcpt: func(r string) *milter.Response {
			if r == "carol@example.com" {
				return custom
			}
			return nil
		}}, filter.Reject, "554 5.7.1 spam, go away", "REJECTED"},
		{"reject at the end", &miltertest.Peer{EOM: func(milter.Modifier) (*milter.Response, error) { return milter.RespReject, nil }},
			filter.Reject, "550 5.7.1 Command rejected", "REJECTED"},
		{"tempfail at a header", &miltertest.Peer{Header: func(string) *milter.Response { return milter.RespTempFail }},
			filter.Reject, "451 4.7.1 Service unavailable - try again later", "TEMPFAILED"},
		{"discard", &miltertest.Peer{EOM: func(milter.Modifier) (*milter.Response, error) { return milter.RespDiscard, nil }},
			filter.Drop, "250 2.0.0 Ok: queued as discarded", "DISCARDED"},
		{"quarantine", &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
			return milter.RespAccept, m.Quarantine("looks odd")
		}}, filter.Drop, "250 2.0.0 Ok: queued (quarantined)", "QUARANTINED"},
		{"accept at connect", &miltertest.Peer{Connect: milter.RespAccept}, filter.Accept, "", "FILTERED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChain(t, Config{Milters: []string{miltertest.Start(t, tc.st)}})
			res, out := run(t, c, message)
			if res.Action != tc.action || res.Reply != tc.reply || res.Status != tc.status {
				t.Errorf("got %v %q %q (%s), want %v %q %q", res.Action, res.Reply, res.Status, res.Detail, tc.action, tc.reply, tc.status)
			}
			if tc.action == filter.Accept && out != message {
				t.Errorf("delivered %q, want the message unchanged", out)
			}
			if tc.status == "QUARANTINED" && !strings.Contains(res.Detail, "looks odd") {
				t.Errorf("quarantine reason missing from %q", res.Detail)
			}
		})
	}
}

// A milter that cannot be used takes milter_default_action, whatever
// went wrong: refused, silent past the command timeout, garbage, gone
// in the middle of the body.
func TestChainDefaultAction(t *testing.T) {
	refused := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "inet:" + addr
	}
	slow := func(t *testing.T) string { return miltertest.Start(t, &miltertest.Peer{Sleep: 2 * time.Second}) }
	garbage := func(t *testing.T) string {
		return rawPeer(t, func(c net.Conn) { _, _ = c.Write([]byte("\x00\x00\x00\x05Zjunk garbage")) })
	}
	goneMidBody := func(t *testing.T) string {
		return miltertest.Start(t, &miltertest.Peer{EOM: func(milter.Modifier) (*milter.Response, error) {
			return nil, errors.New("the milter dies")
		}})
	}
	empty := func(t *testing.T) string {
		// A packet of length 0, which makes the library panic.
		return rawPeer(t, func(c net.Conn) { _, _ = c.Write([]byte("\x00\x00\x00\x00")) })
	}
	for _, fault := range []struct {
		name string
		addr func(*testing.T) string
	}{{"refused", refused}, {"timeout", slow}, {"garbage", garbage}, {"empty packet", empty}, {"gone", goneMidBody}} {
		for _, def := range []struct {
			action string
			want   filter.Action
			reply  string
		}{
			{DefaultTempFail, filter.TempFail, "451 4.7.1 Service unavailable - try again later"},
			{DefaultAccept, filter.Accept, ""},
			{DefaultReject, filter.Reject, "550 5.5.0 Service unavailable"},
		} {
			t.Run(fault.name+"/"+def.action, func(t *testing.T) {
				c := newChain(t, Config{Milters: []string{fault.addr(t)}, DefaultAction: def.action,
					CommandTimeout: 300 * time.Millisecond})
				res, out := run(t, c, message)
				if res.Action != def.want || res.Reply != def.reply {
					t.Errorf("got %v %q (%s), want %v %q", res.Action, res.Reply, res.Detail, def.want, def.reply)
				}
				if def.want == filter.Accept && out != message {
					t.Errorf("delivered %q, want the message unchanged", out)
				}
			})
		}
	}
}

// A milter that is down is not waited on by every message: after the
// first failed connection its messages take the default action at once,
// while the chain tries it again with backoff; once it listens again the
// retries find it and messages go through it, without a message having
// to fail first.
func TestChainDownMilterBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Down: it accepts and hangs up at once (counted), so every
	// attempt to use it shows.
	var tries atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tries.Add(1)
			conn.Close()
		}
	}()
	addr := "inet:" + ln.Addr().String()
	logs := &syncBuffer{}
	c := newChain(t, Config{Milters: []string{addr}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	res, _ := run(t, c, message)
	if res.Action != filter.TempFail || !strings.Contains(res.Detail, addr) {
		t.Fatalf("first message: %+v, want the default action naming the milter", res)
	}
	for i := range 20 {
		res, _ := run(t, c, message)
		if res.Action != filter.TempFail || !strings.Contains(res.Detail, "down for") {
			t.Fatalf("message %d while down: %+v, want the default action saying it is down", i+2, res)
		}
	}
	// 21 messages, and the retries of the first second or so: far
	// fewer tries than messages.
	if n := tries.Load(); n > 5 {
		t.Errorf("the milter was tried %d times for 21 messages while down", n)
	}
	if err := c.Ready(context.Background()); err == nil {
		t.Error("Ready passed with the milter down")
	}

	// It comes back on the same address: the retries find it.
	ln.Close()
	ln2, err := net.Listen("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	st := &miltertest.Peer{}
	miltertest.Serve(t, ln2, st)
	deadline := time.Now().Add(30 * time.Second)
	for c.health[0].check() != nil || !strings.Contains(logs.String(), "milter reachable again") {
		if time.Now().After(deadline) {
			t.Fatalf("still down 30 s after the milter came back: %v", c.health[0].check())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Conns() == 0 {
		t.Error("up again without a connection to the milter")
	}
	if res, _ := run(t, c, message); res.Action != filter.Accept {
		t.Errorf("after it came back: %+v", res)
	}
	for _, want := range []string{"milter unreachable", "milter reachable again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, logs.String())
		}
	}
}

// syncBuffer is a log the chain's goroutines write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rawPeer accepts connections and hands each to serve.
func rawPeer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.ReadFull(c, make([]byte, 4))
				serve(c)
			}()
		}
	}()
	return "inet:" + ln.Addr().String()
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"inet:127.0.0.1:8891":     "tcp 127.0.0.1:8891",
		"inet:8891@127.0.0.1":     "tcp 127.0.0.1:8891",
		"inet:[::1]:11332":        "tcp [::1]:11332",
		"inet6:[::1]:11332":       "tcp [::1]:11332",
		"unix:/run/opendkim.sock": "unix /run/opendkim.sock",
		"local:/run/x.sock":       "unix /run/x.sock",
	} {
		n, a, err := ParseAddress(in)
		if err != nil || n+" "+a != want {
			t.Errorf("%q: %q %q %v, want %q", in, n, a, err, want)
		}
	}
	for _, bad := range []string{"", "inet:", "inet:localhost", "tcp:127.0.0.1:1", "127.0.0.1:8891"} {
		if _, _, err := ParseAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Connections are kept and used again (QUIT_NC) up to MaxIdle per
// milter, also after a reject; one the milter dropped while idle is
// replaced without failing the message.
func TestChainReusesConnections(t *testing.T) {
	st := &miltertest.Peer{Rcpt: func(r string) *milter.Response {
		if r == "reject@example.com" {
			return milter.RespReject
		}
		return nil
	}}
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, st)}, MaxIdle: 2})
	defer c.Close()
	for i := range 3 {
		if res, _ := run(t, c, message); res.Action != filter.Accept {
			t.Fatalf("message %d: %+v", i, res)
		}
	}
	env := testEnv()
	env.Recipients = []string{"reject@example.com"}
	var out bytes.Buffer
	if res, err := c.Run(context.Background(), env, strings.NewReader(message), &out); err != nil || res.Action != filter.Reject {
		t.Fatalf("reject: %+v %v", res, err)
	}
	if res, _ := run(t, c, message); res.Action != filter.Accept {
		t.Fatalf("after the reject: %+v", res)
	}
	if n := st.Conns(); n != 1 {
		t.Errorf("5 messages one after another took %d connections, want 1", n)
	}
	if got := strings.Count(strings.Join(st.Lines(), "\n"), "macro i=id123"); got != 4 {
		t.Errorf("the milter saw %d ends of message, want 4", got)
	}

	// The idle connection dies (the milter restarted): the next message
	// goes through on a new one.
	for conn := c.pools[0].get(); conn != nil; conn = c.pools[0].get() {
		conn.conn.Close()
		c.pools[0].put(conn)
		break
	}
	if res, _ := run(t, c, message); res.Action != filter.Accept {
		t.Fatalf("after the idle connection died: %+v", res)
	}
	if n := st.Conns(); n != 2 {
		t.Errorf("%d connections, want a second one after the first died", n)
	}
}

// Ready names a milter that cannot be reached, and passes once every one
// answers.
func TestChainReady(t *testing.T) {
	up := miltertest.Start(t, &miltertest.Peer{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "inet:" + ln.Addr().String()
	ln.Close()
	c := newChain(t, Config{Milters: []string{up, down}, ConnectTimeout: time.Second})
	err = c.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), down) || strings.Contains(err.Error(), up) {
		t.Errorf("Ready: %v, want an error naming %s only", err, down)
	}
	if err := newChain(t, Config{Milters: []string{up}}).Ready(context.Background()); err != nil {
		t.Errorf("Ready with the milter up: %v", err)
	}
}

// Envelope changes: the sender changed, a recipient added and one
// deleted; the next milter is told the new envelope; deleting every
// recipient drops the message.
func TestChainEnvelope(t *testing.T) {
	first := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if err := m.ChangeFrom("<bounces@example.com>", ""); err != nil {
			return nil, err
		}
		if err := m.AddRecipient("<archive@example.com>", ""); err != nil {
			return nil, err
		}
		return milter.RespAccept, m.DeleteRecipient("<Carol@example.com>")
	}}
	second := &miltertest.Peer{}
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, first), miltertest.Start(t, second)}})
	res, _ := run(t, c, message)
	want := &filter.Envelope{Sender: "bounces@example.com", Recipients: []string{"bob@example.com", "archive@example.com"}}
	if res.Action != filter.Accept || res.Envelope == nil || res.Envelope.Sender != want.Sender ||
		strings.Join(res.Envelope.Recipients, ",") != strings.Join(want.Recipients, ",") {
		t.Errorf("result %+v, envelope %+v, want %+v", res, res.Envelope, want)
	}
	seen := strings.Join(second.Lines(), "\n")
	for _, w := range []string{"mail <bounces@example.com>", "rcpt <bob@example.com>", "rcpt <archive@example.com>"} {
		if !strings.Contains(seen, w) {
			t.Errorf("the second milter was not told %q:\n%s", w, seen)
		}
	}
	if strings.Contains(seen, "carol") {
		t.Errorf("the second milter was told the deleted recipient:\n%s", seen)
	}

	// No change: no envelope in the result.
	if res, _ := run(t, newChain(t, Config{Milters: []string{miltertest.Start(t, &miltertest.Peer{})}}), message); res.Envelope != nil {
		t.Errorf("unchanged envelope reported: %+v", res.Envelope)
	}

	none := &miltertest.Peer{EOM: func(m milter.Modifier) (*milter.Response, error) {
		if err := m.DeleteRecipient("<bob@example.com>"); err != nil {
			return nil, err
		}
		return milter.RespAccept, m.DeleteRecipient("<carol@example.com>")
	}}
	res, _ = run(t, newChain(t, Config{Milters: []string{miltertest.Start(t, none)}}), message)
	if res.Action != filter.Drop || res.Status != "DISCARDED" {
		t.Errorf("every recipient deleted: %+v", res)
	}
}

// The library's own warnings reach the chain's logger, not the standard
// log package's stderr: a discard at connect, which it ignores.
func TestChainLibraryWarningsLogged(t *testing.T) {
	logs := &syncBuffer{}
	st := &miltertest.Peer{Connect: milter.RespDiscard}
	c := newChain(t, Config{Milters: []string{miltertest.Start(t, st)},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	res, _ := run(t, c, message)
	t.Logf("result %v %q", res.Action, res.Reply)
	if !strings.Contains(logs.String(), "milter library: Connect got a discard action") {
		t.Errorf("the library's warning is not in the chain's log:\n%s", logs.String())
	}
}
