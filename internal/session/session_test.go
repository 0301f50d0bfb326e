package session

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
	"github.com/sluice-mail/sluice/internal/testproc"
	"github.com/sluice-mail/sluice/internal/upstream"
)

// memPipeline is a Pipeline in memory: decide gives the verdict on each
// message, and the filtered copy is what decide's verdict names.
type memPipeline struct {
	decide   func(e *Envelope, body []byte) (*Verdict, error)
	filtered string // the filter's output, delivered for a Filtered verdict

	mu       sync.Mutex
	finished int
}

func (p *memPipeline) Filter(ctx context.Context, e *Envelope, body io.Reader) (*Message, error) {
	m := &Message{ID: "M1", Received: time.Now()}
	b, err := io.ReadAll(body) // a test body: small
	m.Size = int64(len(b))
	if err != nil {
		return m, err
	}
	m.Verdict, err = p.decide(e, b)
	return m, err
}

func (p *memPipeline) Open(ctx context.Context, m *Message) (io.ReadCloser, error) {
	if m.Verdict.Filtered {
		return io.NopCloser(strings.NewReader(p.filtered)), nil
	}
	return nil, errors.New("memPipeline keeps no body; deliver Filtered verdicts")
}

func (p *memPipeline) Finish(*Message) {
	p.mu.Lock()
	p.finished++
	p.mu.Unlock()
}

// verdict is a memPipeline decision that always answers v.
func verdict(v Verdict) func(*Envelope, []byte) (*Verdict, error) {
	return func(*Envelope, []byte) (*Verdict, error) { return &v, nil }
}

// bed serves sessions on a loopback listener, each relayed to a real
// recording upstream, with the summary lines and outcomes kept.
type bed struct {
	up    *smtptest.Server
	ln    net.Listener
	cfg   *Config
	logs  testproc.Output
	kinds chan Kind

	mu       sync.Mutex
	sessions []*Session
	wg       sync.WaitGroup
}

func newBed(t testing.TB, upCfg smtptest.Config, cfg Config, pipe Pipeline) *bed {
	t.Helper()
	b := &bed{up: smtptest.NewServer(t, upCfg), kinds: make(chan Kind, 16)}
	if cfg.Hostname == "" {
		cfg.Hostname = "edge.test"
	}
	if cfg.TimeOut == 0 {
		cfg.TimeOut = time.Minute
	}
	cfg.OnMessage = func(k Kind) { b.kinds <- k }
	b.cfg = &cfg
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.ln = ln
	log := slog.New(slog.NewJSONHandler(&b.logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				u, err := upstream.Dial(ctx, "tcp", b.up.Addr(), cfg.TimeOut)
				if err != nil {
					u = nil
				}
				s := New(b.cfg, pipe, log, "C1", c, u)
				b.mu.Lock()
				b.sessions = append(b.sessions, s)
				b.mu.Unlock()
				s.Serve(ctx)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, s := range b.sessions {
			s.Stop()
		}
		b.mu.Unlock()
		cancel()
		b.wg.Wait()
	})
	return b
}

// session is the n-th session the bed served (from 0), once it exists.
func (b *bed) session(t *testing.T, n int) *Session {
	t.Helper()
	for range 500 {
		b.mu.Lock()
		if len(b.sessions) > n {
			s := b.sessions[n]
			b.mu.Unlock()
			return s
		}
		b.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no session %d", n)
	return nil
}

// dial opens a client and reads the greeting.
func (b *bed) dial(t testing.TB) *smtptest.Client {
	c := smtptest.Dial(t, b.ln.Addr().String())
	c.ExpectLine("220 edge.test ESMTP")
	return c
}

// send runs one transaction from sender up to the message's final dot;
// the reply to it is the client's to read.
func send(t testing.TB, c *smtptest.Client, sender, message string) {
	t.Helper()
	c.CmdExpect("EHLO client.test", 250)
	c.CmdExpect("MAIL FROM:<"+sender+">", 250)
	c.CmdExpect("RCPT TO:<bob@example.com>", 250)
	c.CmdExpect("DATA", 354)
	c.Write([]byte(message + ".\r\n"))
}

// kind waits for the outcome of the next DATA attempt.
func (b *bed) kind(t testing.TB) Kind {
	t.Helper()
	select {
	case k := <-b.kinds:
		return k
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome reported")
		return -1
	}
}

// status is the status of the last summary line logged, "" for none.
func (b *bed) status(t *testing.T) (string, bool) {
	t.Helper()
	var status string
	found := false
	for line := range strings.SplitSeq(strings.TrimSpace(b.logs.String()), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "message" {
			continue
		}
		s, _ := rec["status"].(string)
		status, found = s, true
	}
	return status, found
}

const message = "Subject: test\r\n\r\nhello\r\n"

// Every way a DATA attempt ends, through the Pipeline seam against a real
// upstream: the client's reply, what the upstream got, the outcome and
// the summary line's status.
func TestOutcomes(t *testing.T) {
	filtered := "Subject: test\r\nX-Filtered: yes\r\n\r\nhello\r\n"
	cases := []struct {
		name      string
		up        smtptest.Config
		cfg       Config
		decide    func(*Envelope, []byte) (*Verdict, error)
		body      string
		reply     string // the client's reply to the final dot; "" = the upstream's queued reply
		kind      Kind
		status    string
		delivered bool // the upstream got a terminated message
		rset      bool // the upstream's transaction was reset
		ends      bool // the session ends after the reply
	}{
		{name: "accept", decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}),
			kind: Delivered, status: "FILTERED", delivered: true},
		{name: "accept without a filter's status", decide: verdict(Verdict{Action: ActionAccept, Filtered: true}),
			kind: Delivered, status: "", delivered: true},
		{name: "reject", decide: verdict(Verdict{Action: ActionReject, Reply: "550 5.7.1 no thanks", Status: "550 5.7.1 no thanks"}),
			reply: "550 5.7.1 no thanks", kind: Rejected, status: "550 5.7.1 no thanks", rset: true},
		{name: "reject with a 4xx", decide: verdict(Verdict{Action: ActionReject, Reply: "451 4.7.1 later", Status: "451 4.7.1 later"}),
			reply: "451 4.7.1 later", kind: TempFailed, status: "451 4.7.1 later", rset: true},
		{name: "drop", decide: verdict(Verdict{Action: ActionDrop, Reply: "250 2.0.0 gone", Status: "250 2.0.0 gone"}),
			reply: "250 2.0.0 gone", kind: Dropped, status: "250 2.0.0 gone", rset: true},
		{name: "tempfail", decide: verdict(Verdict{Action: ActionTempFail, Reply: "451 Local Error (filter timed out)", Status: "FILTER-ERROR"}),
			reply: "451 Local Error (filter timed out)", kind: TempFailed, status: "FILTER-ERROR", rset: true},
		{name: "a drop with a 5xx is malformed", decide: verdict(Verdict{Action: ActionDrop, Reply: "550 no"}),
			reply: replyBadVerdict, kind: TempFailed, status: "FILTER-ERROR", rset: true},
		{name: "no action is malformed", decide: verdict(Verdict{Reply: "550 no"}),
			reply: replyBadVerdict, kind: TempFailed, status: "FILTER-ERROR", rset: true},
		{name: "a continuation line is malformed", decide: verdict(Verdict{Action: ActionReject, Reply: "550-no"}),
			reply: replyBadVerdict, kind: TempFailed, status: "FILTER-ERROR", rset: true},
		{name: "infrastructure failure", decide: func(*Envelope, []byte) (*Verdict, error) { return nil, errors.New("store down") },
			reply: replyTempFail, kind: TempFailed, status: "FILTER-ERROR", rset: true},
		{name: "upstream refuses the message", up: smtptest.Config{DataFinal: []string{"554 5.7.1 upstream: no"}},
			decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}),
			reply:  "554 5.7.1 upstream: no", kind: UpstreamRefused, status: "UPSTREAM-REFUSED", delivered: true},
		{name: "upstream refuses DATA", up: smtptest.Config{Rules: []smtptest.Rule{{Match: "^DATA$", Reply: []string{"451 4.3.0 upstream: busy"}}}},
			decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}),
			reply:  "451 4.3.0 upstream: busy", kind: UpstreamRefused, status: "UPSTREAM-REFUSED"},
		{name: "upstream answers DATA oddly", up: smtptest.Config{Rules: []smtptest.Rule{{Match: "^DATA$", Reply: []string{"250 2.0.0 upstream: what"}}}},
			decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}),
			reply:  replyLocalError, kind: UpstreamError, status: "UPSTREAM-ERROR", ends: true},
		{name: "too big", cfg: Config{MaxMessageSize: 10}, decide: verdict(Verdict{Action: ActionAccept}),
			reply: replyTooBig, kind: TooBig, status: "TOO-BIG", rset: true},
		{name: "NUL byte", cfg: Config{RejectNUL: true}, decide: verdict(Verdict{Action: ActionAccept}),
			body: "Subject: x\r\n\r\nnul\x00here\r\n", reply: replyNUL, kind: NULByte, status: "NUL-BYTE", rset: true},
		{name: "bare LF", cfg: Config{RejectBare: true}, decide: verdict(Verdict{Action: ActionAccept}),
			body: "Subject: x\r\n\r\nbare\nLF\r\n", reply: replyBare, kind: BareLineEnding, status: "BARE-LINE-ENDING", rset: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pipe := &memPipeline{decide: c.decide, filtered: filtered}
			b := newBed(t, c.up, c.cfg, pipe)
			cl := b.dial(t)
			body := c.body
			if body == "" {
				body = message
			}
			send(t, cl, "alice@example.com", body)
			rep := cl.Read()
			want := c.reply
			if want == "" {
				want = smtptest.Queued(1, 1)
			}
			if rep.Line() != want {
				t.Errorf("reply %q, want %q", rep.String(), want)
			}
			if k := b.kind(t); k != c.kind {
				t.Errorf("outcome %v, want %v", k, c.kind)
			}
			if c.ends {
				cl.ExpectEOF(time.Minute)
			} else {
				cl.CmdExpect("QUIT", 221)
			}
			b.up.WaitClosed(t.Context())
			if status, ok := b.status(t); !ok || status != c.status {
				t.Errorf("summary status %q (logged %v), want %q", status, ok, c.status)
			}
			msgs := b.up.Messages()
			if got := len(msgs) == 1; got != c.delivered {
				t.Errorf("delivered %v, want %v: %+v", got, c.delivered, msgs)
			}
			if c.delivered && string(msgs[0].Data) != filtered {
				t.Errorf("delivered %q, want the filtered copy", msgs[0].Data)
			}
			sessions := b.up.Sessions()
			rset := len(sessions) == 1 && strings.Contains(strings.Join(sessions[0].Commands, ""), "RSET\r\n")
			if rset != c.rset {
				t.Errorf("RSET sent %v, want %v: %q", rset, c.rset, sessions[0].Commands)
			}
			pipe.mu.Lock()
			finished := pipe.finished
			pipe.mu.Unlock()
			if finished != 1 {
				t.Errorf("Finish called %d times", finished)
			}
		})
	}
}

// FilterType reject refuses DATA itself, resets the upstream's
// transaction and says REJECTED.
func TestRejectAllOutcome(t *testing.T) {
	pipe := &memPipeline{decide: verdict(Verdict{Action: ActionAccept})}
	b := newBed(t, smtptest.Config{}, Config{RejectAll: true, FilterReject: "530 Email Rejected"}, pipe)
	cl := b.dial(t)
	cl.CmdExpect("EHLO client.test", 250)
	cl.CmdLine("DATA", "530 Email Rejected")
	if k := b.kind(t); k != Rejected {
		t.Errorf("outcome %v", k)
	}
	cl.CmdExpect("QUIT", 221)
	if status, _ := b.status(t); status != "REJECTED" {
		t.Errorf("status %q", status)
	}
}

// Every outcome has a name of its own for the metrics.
func TestKindNames(t *testing.T) {
	seen := map[string]Kind{}
	for _, k := range Kinds() {
		name := k.String()
		if name == "" || name == "unknown" {
			t.Errorf("kind %d has no name", int(k))
		}
		if other, dup := seen[name]; dup {
			t.Errorf("kinds %d and %d are both %q", int(other), int(k), name)
		}
		seen[name] = k
	}
	if len(seen) != int(Skipped)+1 {
		t.Errorf("%d names for %d kinds", len(seen), int(Skipped)+1)
	}
}

// Issue 7: Stop ends a session whose upstream never greets at once, not
// after TimeOut (which was 21 s for TimeOut: 20).
func TestStopInterruptsASilentUpstream(t *testing.T) {
	pipe := &memPipeline{decide: verdict(Verdict{Action: ActionAccept})}
	b := newBed(t, smtptest.Config{Silent: true}, Config{TimeOut: 10 * time.Minute}, pipe)
	cl := smtptest.Dial(t, b.ln.Addr().String())
	s := b.session(t, 0)
	s.Stop()
	rep, err := cl.ReadReplyWithin(time.Minute)
	if err != nil {
		t.Fatalf("no reply after Stop: %v", err)
	}
	if want := s.closingReply(closeShutdown); rep.Line() != want {
		t.Errorf("reply %q, want %q", rep.String(), want)
	}
	cl.ExpectEOF(time.Minute)
}

// Stop leaves alone the one wait that decides whether a message was
// delivered: the upstream's reply to its final dot. The client gets that
// reply, never a 4xx for a message the upstream took.
func TestStopWaitsForTheReplyToASentMessage(t *testing.T) {
	pipe := &memPipeline{decide: verdict(Verdict{Action: ActionAccept, Status: "FILTERED", Filtered: true}), filtered: message}
	b := newBed(t, smtptest.Config{DataFinalDelay: time.Second}, Config{}, pipe)
	cl := b.dial(t)
	send(t, cl, "alice@example.com", message)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The upstream has the final dot once it records the message as
	// terminated; its reply is due a second later.
	if err := b.up.WaitFor(ctx, func(ss []smtptest.Session) bool {
		return len(ss) == 1 && len(ss[0].Transactions) == 1 && ss[0].Transactions[0].Terminated
	}); err != nil {
		t.Fatal(err)
	}
	b.session(t, 0).Stop()
	cl.ExpectLine(smtptest.Queued(1, 1))
	if k := b.kind(t); k != Delivered {
		t.Errorf("outcome %v", k)
	}
}

// Issue 7: a panic in one session answers that client 421, is counted,
// and leaves every other session serving.
func TestPanicEndsOnlyItsSession(t *testing.T) {
	pipe := &memPipeline{decide: func(e *Envelope, _ []byte) (*Verdict, error) {
		if *e.Sender == "boom@example.com" {
			var v *Verdict
			_ = v.Status // a nil dereference, as a bug would make
		}
		return &Verdict{Action: ActionDrop, Reply: "250 2.0.0 dropped", Status: "250 2.0.0 dropped"}, nil
	}}
	panics := make(chan struct{}, 1)
	b := newBed(t, smtptest.Config{}, Config{OnPanic: func() { panics <- struct{}{} }}, pipe)
	other := b.dial(t)
	other.CmdExpect("EHLO other.test", 250)

	cl := b.dial(t)
	send(t, cl, "boom@example.com", message)
	cl.ExpectLine("421 4.3.0 edge.test Error: internal error")
	cl.ExpectEOF(time.Minute)
	select {
	case <-panics:
	case <-time.After(10 * time.Second):
		t.Fatal("OnPanic not called")
	}
	if logs := b.logs.String(); !strings.Contains(logs, "session panicked") || !strings.Contains(logs, "runtime/debug.Stack") {
		t.Errorf("no panic with its stack in the log:\n%s", logs)
	}

	other.CmdExpect("MAIL FROM:<alice@example.com>", 250)
	other.CmdExpect("RCPT TO:<bob@example.com>", 250)
	other.CmdExpect("DATA", 354)
	other.Write([]byte(message + ".\r\n"))
	other.ExpectLine("250 2.0.0 dropped")
	other.CmdExpect("QUIT", 221)
}
