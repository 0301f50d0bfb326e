// Package miltertest is a scriptable milter for tests and benchmarks:
// a real github.com/d--j/go-milter server on loopback that answers as
// the test says and records what the MTA side told it.
package miltertest

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"
)

// peer is one session of a Peer.
type peer struct {
	milter.NoOpMilter
	p *Peer
}

// Peer is a scriptable milter: a real go-milter server on loopback
// (Start) whose answers the test sets, and which records what it was
// told. The zero Peer continues every step and accepts at the end.
type Peer struct {
	Connect *milter.Response                                  // the answer to connect; nil: continue
	Rcpt    func(rcpt string) *milter.Response                // nil answer: continue
	Header  func(name string) *milter.Response                // nil answer: continue
	EOM     func(m milter.Modifier) (*milter.Response, error) // nil: accept
	Sleep   time.Duration                                     // before answering the end of the header

	mu    sync.Mutex
	conns int      // connections accepted
	seen  []string // "connect [192.0.2.1] tcp4 192.0.2.1", "helo ...", "mail <...>", "rcpt <...>", "header N: V", "macro j=..."
	body  bytes.Buffer
}

func (s *Peer) log(line string) {
	s.mu.Lock()
	s.seen = append(s.seen, line)
	s.mu.Unlock()
}

// Lines is what the milter was told, in order.
func (s *Peer) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (p *peer) Connect(host, family string, port uint16, addr string, m milter.Modifier) (*milter.Response, error) {
	p.p.log("connect " + host + " " + family + " " + addr)
	for _, name := range []milter.MacroName{milter.MacroMTAFQDN, milter.MacroDaemonName} {
		p.p.log("macro " + string(name) + "=" + m.Get(name))
	}
	if p.p.Connect != nil {
		return p.p.Connect, nil
	}
	return milter.RespContinue, nil
}

func (p *peer) Helo(name string, m milter.Modifier) (*milter.Response, error) {
	p.p.log("helo " + name)
	return milter.RespContinue, nil
}

func (p *peer) MailFrom(from, args string, m milter.Modifier) (*milter.Response, error) {
	p.p.log("mail <" + from + ">")
	return milter.RespContinue, nil
}

func (p *peer) RcptTo(rcpt, args string, m milter.Modifier) (*milter.Response, error) {
	p.p.log("rcpt <" + rcpt + ">")
	if p.p.Rcpt != nil {
		if r := p.p.Rcpt(rcpt); r != nil {
			return r, nil
		}
	}
	return milter.RespContinue, nil
}

func (p *peer) Header(name, value string, m milter.Modifier) (*milter.Response, error) {
	p.p.log("header " + name + ": " + value)
	if p.p.Header != nil {
		if r := p.p.Header(name); r != nil {
			return r, nil
		}
	}
	return milter.RespContinue, nil
}

func (p *peer) Headers(m milter.Modifier) (*milter.Response, error) {
	time.Sleep(p.p.Sleep)
	return milter.RespContinue, nil
}

func (p *peer) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	p.p.mu.Lock()
	p.p.body.Write(chunk)
	p.p.mu.Unlock()
	return milter.RespContinue, nil
}

func (p *peer) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	p.p.log("macro i=" + m.Get(milter.MacroQueueId))
	if p.p.EOM != nil {
		return p.p.EOM(m)
	}
	return milter.RespAccept, nil
}

// Start serves st on a loopback port until the test ends and returns its
// address, "inet:127.0.0.1:PORT".
func Start(t testing.TB, st *Peer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, ln, st)
}

// Serve is Start on a listener of the caller's (a milter that comes
// back on the address it had).
func Serve(t testing.TB, ln net.Listener, st *Peer) string {
	t.Helper()
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return &peer{p: st} }),
		milter.WithAction(milter.OptAddHeader|milter.OptChangeHeader|milter.OptChangeBody|milter.OptQuarantine|
			milter.OptChangeFrom|milter.OptAddRcpt|milter.OptRemoveRcpt),
		milter.WithMacroRequest(milter.StageConnect, []milter.MacroName{milter.MacroMTAFQDN, milter.MacroDaemonName}),
		milter.WithMacroRequest(milter.StageEOM, []milter.MacroName{milter.MacroQueueId}),
	)
	go func() { _ = srv.Serve(countingListener{ln, st}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "inet:" + ln.Addr().String()
}

// Body is the body the milter received, over all messages.
func (s *Peer) Body() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body.String()
}

// Conns is the number of connections the milter accepted.
func (s *Peer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

type countingListener struct {
	net.Listener
	p *Peer
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.p.mu.Lock()
		l.p.conns++
		l.p.mu.Unlock()
	}
	return c, err
}
