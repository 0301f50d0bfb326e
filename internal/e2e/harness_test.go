package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/edge"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// The edge's host name in every test, so its own greeting and EHLO line
// can be asserted exactly.
const edgeHost = "edge.test"

// Messages of the compat harness (compat/scenarios.py).
var (
	msg1 = "From: Alice <alice@example.com>\r\n" +
		"To: Bob <bob@example.com>\r\n" +
		"Subject: oracle test\r\n" +
		"Message-ID: <oracle-1@example.com>\r\n" +
		"\r\n" +
		"Hello Bob.\r\n" +
		"Bye.\r\n"
	msg2 = "From: Carol <carol@example.com>\r\n" +
		"To: Dave <dave@example.com>\r\n" +
		"Subject: second message\r\n" +
		"\r\n" +
		"Second body.\r\n"
	// smuggle ends its first message with <CRLF>.<LF> (behaviour.md#data/i07).
	smuggle = "Subject: legit\r\n\r\nlegit body\r\n.\n" +
		"MAIL FROM:<mallory@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nsmuggled body\r\n"
)

// Upstream extension lists of the compat scenarios.
var (
	allExts = []string{"PIPELINING", "SIZE 10240000", "STARTTLS", "AUTH PLAIN LOGIN", "CHUNKING",
		"BINARYMIME", "CHECKPOINT", "XCLIENT NAME ADDR PROTO HELO",
		"XFORWARD NAME ADDR PROTO HELO", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
		"SMTPUTF8", "XEXCH50"}
	xclientExts = []string{"SIZE 10240000", "XCLIENT NAME ADDR PROTO HELO", "ENHANCEDSTATUSCODES", "8BITMIME"}
	xfwdExts    = []string{"SIZE 10240000", "XFORWARD NAME ADDR PROTO HELO", "ENHANCEDSTATUSCODES", "8BITMIME"}
	authExts    = []string{"SIZE 10240000", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME"}
)

// Upstream command lines, as the recording upstream receives them.
const (
	cEHLO = "EHLO client.example\r\n"
	cMAIL = "MAIL FROM:<alice@example.com>\r\n"
	cRCPT = "RCPT TO:<bob@example.com>\r\n"
	cDATA = "DATA\r\n"
	cRSET = "RSET\r\n"
	cNOOP = "NOOP\r\n"
	cQUIT = "QUIT\r\n"
)

// harness is one running edge with its upstream, filter dumps and logs.
type harness struct {
	up      *smtptest.Server
	upCfg   smtptest.Config
	e       *edge.Edge
	cfg     *config.Config
	addr    string
	tempDir string // TempDirectory
	dataDir string
	logs    *logSink

	stopOnce sync.Once
}

// start writes a proxsmtpd.conf with Listen, OutAddress (the recording
// upstream), TempDirectory, TimeOut and hostname, followed by conf
// ("Name: value" lines; a repeated name wins, as in proxsmtpd), and starts
// the edge in process. The edge is shut down when the test ends.
func start(t testing.TB, upCfg smtptest.Config, conf ...string) *harness {
	t.Helper()
	return startEdge(t, upCfg, newLogSink(t), conf...)
}

// startEdge is start with the log going to logs.
func startEdge(t testing.TB, upCfg smtptest.Config, logs *logSink, conf ...string) *harness {
	t.Helper()
	h := &harness{upCfg: upCfg, tempDir: t.TempDir(), dataDir: t.TempDir()}
	h.up = smtptest.NewServer(t, upCfg)
	lines := []string{
		"# written by internal/e2e",
		"Listen: 127.0.0.1:10025",
		"OutAddress: " + h.up.Addr(),
		"TempDirectory: " + h.tempDir,
		"TimeOut: 10",
		"hostname: " + edgeHost,
	}
	lines = append(lines, conf...)
	file := filepath.Join(t.TempDir(), "proxsmtpd.conf")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Edge, []string{"-f", file, "--data-dir", h.dataDir}, nil)
	if err != nil {
		t.Fatalf("config.Load: %v\n%s", err, strings.Join(lines, "\n"))
	}
	cfg.Listen.Port = 0 // Load refuses port 0, as proxsmtpd does
	h.cfg = cfg
	h.logs = logs
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := edge.Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("edge.Start: %v", err)
	}
	h.e = e
	h.addr = e.Addr().String()
	t.Cleanup(func() {
		h.shutdown(5 * time.Second)
		h.logs.close()
	})
	return h
}

// shutdown shuts the edge down (once), giving open sessions drain.
func (h *harness) shutdown(drain time.Duration) {
	h.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		h.e.Shutdown(ctx)
	})
}

// dial connects a client and expects the edge's own 220 greeting.
func (h *harness) dial(t testing.TB) *smtptest.Client {
	t.Helper()
	c := h.dialRaw(t)
	c.ExpectLine("220 " + edgeHost + " ESMTP")
	return c
}

// dialRaw connects a client without reading anything.
func (h *harness) dialRaw(t testing.TB) *smtptest.Client {
	t.Helper()
	return smtptest.Dial(t, h.addr)
}

// hello dials and says EHLO client.example.
func (h *harness) hello(t testing.TB) *smtptest.Client {
	t.Helper()
	c := h.dial(t)
	c.CmdExpect("EHLO client.example", 250)
	return c
}

// mark is where a harness stood before a case that shares it with others.
type mark struct{ sessions, runs, logs int }

// mark notes the upstream sessions, filter runs (of f, may be nil) and
// message log lines so far; the *Since methods return what came after.
func (h *harness) mark(t testing.TB, f *filterScript) mark {
	m := mark{sessions: len(h.up.Sessions()), logs: len(h.logs.messageLines())}
	if f != nil {
		m.runs = len(f.runs(t))
	}
	return m
}

// sessions waits until the upstream has closed every session and
// returns them.
func (h *harness) sessions(t testing.TB) []smtptest.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ss, err := h.up.WaitClosed(ctx)
	if err != nil {
		t.Fatalf("upstream sessions still open: %v", describeSessions(ss))
	}
	return ss
}

// sessionsSince is sessions after m.
func (h *harness) sessionsSince(t testing.TB, m mark) []smtptest.Session {
	t.Helper()
	return h.sessions(t)[m.sessions:]
}

// commands waits for the upstream's sessions to end and checks that there
// is exactly one, which received exactly want.
func (h *harness) commands(t testing.TB, want ...string) smtptest.Session {
	t.Helper()
	return h.commandsSince(t, mark{}, want...)
}

// commandsSince is commands for the sessions after m.
func (h *harness) commandsSince(t testing.TB, m mark, want ...string) smtptest.Session {
	t.Helper()
	ss := h.sessionsSince(t, m)
	if len(ss) != 1 {
		t.Fatalf("upstream had %d sessions, expected 1: %v", len(ss), describeSessions(ss))
	}
	eqLines(t, "upstream commands", ss[0].Commands, want)
	return ss[0]
}

func describeSessions(ss []smtptest.Session) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "\n  #%d closed=%v end=%q commands=%q", s.Index, s.Closed, s.End, s.Commands)
		for _, t := range s.Transactions {
			fmt.Fprintf(&b, "\n     txn mail=%q rcpts=%q terminated=%v data=%q", t.Mail, t.Rcpts, t.Terminated, clip(string(t.Data)))
		}
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// delivered waits for the upstream sessions to end and checks that
// exactly these messages were delivered (mail, rcpts, data; nil Data is
// not checked), in order, and that no transaction was left unterminated.
func (h *harness) delivered(t testing.TB, want ...smtptest.Transaction) []smtptest.Transaction {
	t.Helper()
	return h.deliveredSince(t, mark{}, want...)
}

// deliveredSince is delivered for the sessions after m.
func (h *harness) deliveredSince(t testing.TB, m mark, want ...smtptest.Transaction) []smtptest.Transaction {
	t.Helper()
	ss := h.sessionsSince(t, m)
	var got []smtptest.Transaction
	for _, s := range ss {
		got = append(got, s.Transactions...)
	}
	if len(got) != len(want) {
		t.Fatalf("upstream received %d messages, expected %d: %v", len(got), len(want), describeSessions(ss))
	}
	for i, g := range got {
		w := want[i]
		if !g.Terminated {
			t.Errorf("message %d: never terminated: %v", i+1, describeSessions(ss))
		}
		if g.Mail != w.Mail || !slices.Equal(g.Rcpts, w.Rcpts) {
			t.Errorf("message %d: envelope %q %q, expected %q %q", i+1, g.Mail, g.Rcpts, w.Mail, w.Rcpts)
		}
		if w.Data != nil && !bytes.Equal(g.Data, w.Data) {
			t.Errorf("message %d: data\n got %q\nwant %q", i+1, g.Data, w.Data)
		}
		checkWireData(t, g.Data)
	}
	return got
}

// checkWireData: behaviour.md#data, whatever the test: no bare CR or LF ever
// reaches the upstream, and non-empty content ends with CRLF.
func checkWireData(t testing.TB, d []byte) {
	t.Helper()
	if i := bareIndex(d); i >= 0 {
		t.Errorf("upstream data has a bare CR or LF at %d: %q", i, d)
	}
	if len(d) > 0 && !bytes.HasSuffix(d, []byte("\r\n")) {
		t.Errorf("upstream data does not end with CRLF: %q", d)
	}
}

// bareIndex is the index of the first CR not followed by LF or LF not
// preceded by CR, or -1.
func bareIndex(d []byte) int {
	for i, c := range d {
		switch c {
		case '\r':
			if i+1 >= len(d) || d[i+1] != '\n' {
				return i
			}
		case '\n':
			if i == 0 || d[i-1] != '\r' {
				return i
			}
		}
	}
	return -1
}

// txn is an expected delivered message from alice to bob.
func txn(data string) smtptest.Transaction {
	return smtptest.Transaction{Mail: "<alice@example.com>", Rcpts: []string{"<bob@example.com>"}, Data: []byte(data)}
}

func eqLines(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// sendMail runs MAIL, RCPT (each expecting 250), DATA (354), the body and
// the terminator, and returns the final reply.
func sendMail(c *smtptest.Client, from string, rcpts []string, body string) smtptest.Reply {
	c.CmdExpect("MAIL FROM:"+from, 250)
	for _, r := range rcpts {
		c.CmdExpect("RCPT TO:"+r, 250)
	}
	c.CmdLine("DATA", "354 Start mail input; end with <CRLF>.<CRLF>")
	c.Write([]byte(body + ".\r\n"))
	return c.Read()
}

// sendAlice sends body from alice to bob and expects final as the
// (single-line) reply to the end of data.
func sendAlice(t testing.TB, c *smtptest.Client, body, final string) {
	t.Helper()
	if rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, body); rep.Line() != final || len(rep.Lines) != 1 {
		t.Fatalf("final reply %q, expected %q", rep.String(), final)
	}
}

// own fails the test if rep was relayed from the upstream: the edge's
// own replies never say "upstream".
func own(t testing.TB, rep smtptest.Reply, code int) {
	t.Helper()
	if rep.Code != code || strings.Contains(rep.String(), "upstream") {
		t.Errorf("got %q, expected the edge's own %d reply", rep.String(), code)
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// ---------------------------------------------------------------- logs

// logSink keeps the edge's log lines for assertions and passes them to
// t.Log until the test is over.
type logSink struct {
	t       testing.TB
	mu      sync.Mutex
	lines   []string
	partial []byte
	closed  bool
	quiet   bool
}

func newLogSink(t testing.TB) *logSink { return &logSink{t: t} }

// quietLogs keeps nothing, for the fuzz target's long-running edge.
func quietLogs() *logSink { return &logSink{quiet: true} }

func (l *logSink) Write(p []byte) (int, error) {
	if l.quiet {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.lines = append(l.lines, line)
		if !l.closed {
			l.t.Log(line)
		}
	}
	return len(p), nil
}

func (l *logSink) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// messageLines returns the per-message summary lines ("msg=message").
func (l *logSink) messageLines() []string {
	return l.messageLinesSince(0)
}

// messageLinesSince returns the summary lines after the first n.
func (l *logSink) messageLinesSince(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, " msg=message ") {
			out = append(out, s)
		}
	}
	if n > len(out) {
		return nil
	}
	return out[n:]
}

// waitMessageLines waits until n summary lines were logged after m; the
// session logs its line around the time it answers, not necessarily
// before.
func (l *logSink) waitMessageLines(t testing.TB, m mark, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := l.messageLinesSince(m.logs)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("%d message log lines, expected %d: %q", len(got), n, got)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *logSink) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

// ------------------------------------------------------------- filters

// filterScript is a /bin/sh filter written to a file: it dumps its
// environment (env -0) and its input (stdin, or $EMAIL in file mode) into
// a fresh directory per run, then runs its tail. Like compat/filter.py.
type filterScript struct {
	Cmd  string // the FilterCommand
	dump string
	tail string // the file a dynamic filter sources after the dump
}

// contract is the filter environment of behaviour.md#filtering.
var contract = []string{"SENDER", "RECIPIENTS", "CLIENT", "SERVER", "REMOTE", "REMOTE_HELO", "TMPDIR", "EMAIL"}

// newFilter writes a dump filter. tail runs after the dump, with $d the
// run's directory and "$d/input" the message it read; `cat "$d/input"`
// echoes it.
func newFilter(t testing.TB, tail string) *filterScript {
	return writeFilter(t, `if [ -n "${EMAIL+x}" ]; then
  cat "$EMAIL" > "$d/input"
  stat -c %a "$EMAIL" > "$d/mode"
else
  cat > "$d/input"
fi
`, tail)
}

// newDynamicFilter writes a dump filter whose tail setTail changes
// between messages, for a table of cases sharing one edge; it starts as
// `cat "$d/input"`.
func newDynamicFilter(t testing.TB) *filterScript {
	t.Helper()
	tail := filepath.Join(t.TempDir(), "tail.sh")
	f := newFilter(t, ". "+tail)
	f.tail = tail
	f.setTail(t, `cat "$d/input"`)
	return f
}

// setTail sets what a dynamic filter does after its dump.
func (f *filterScript) setTail(t testing.TB, tail string) {
	t.Helper()
	if err := os.WriteFile(f.tail, []byte(tail+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newFilterNoInput writes a dump filter that never reads its input.
func newFilterNoInput(t testing.TB, tail string) *filterScript {
	return writeFilter(t, "", tail)
}

func writeFilter(t testing.TB, read, tail string) *filterScript {
	t.Helper()
	dir := t.TempDir()
	f := &filterScript{dump: filepath.Join(dir, "runs")}
	if err := os.Mkdir(f.dump, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		"d=" + f.dump + "/$(date +%s%N)-$$\n" +
		"mkdir \"$d\"\n" +
		"env -0 > \"$d/env\"\n" +
		read +
		": > \"$d/dumped\"\n" +
		tail + "\n"
	path := filepath.Join(dir, "filter.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	f.Cmd = path
	return f
}

// filterRun is what one run of a dump filter saw.
type filterRun struct {
	Dir   string
	Env   map[string]string
	Input string
	Mode  string // permissions of $EMAIL, file mode only
}

// runsSince returns the runs after m.
func (f *filterScript) runsSince(t testing.TB, m mark) []filterRun {
	t.Helper()
	return f.runs(t)[m.runs:]
}

// runs returns the filter's runs so far, in start order.
func (f *filterScript) runs(t testing.TB) []filterRun {
	t.Helper()
	entries, err := os.ReadDir(f.dump)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		// A run still starting has no "dumped" marker yet.
		if _, err := os.Stat(filepath.Join(f.dump, e.Name(), "dumped")); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []filterRun
	for _, n := range names {
		d := filepath.Join(f.dump, n)
		r := filterRun{Dir: d, Env: map[string]string{}}
		env, _ := os.ReadFile(filepath.Join(d, "env"))
		for _, kv := range strings.Split(string(env), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				r.Env[k] = v
			}
		}
		in, _ := os.ReadFile(filepath.Join(d, "input"))
		r.Input = string(in)
		mode, _ := os.ReadFile(filepath.Join(d, "mode"))
		r.Mode = strings.TrimSpace(string(mode))
		out = append(out, r)
	}
	return out
}

// one checks that the filter ran exactly once (after m) and returns the run.
func (f *filterScript) one(t testing.TB, m mark) filterRun {
	t.Helper()
	rs := f.runsSince(t, m)
	if len(rs) != 1 {
		t.Fatalf("filter ran %d times, expected once", len(rs))
	}
	return rs[0]
}

// baseEnv is a filter environment for alice -> bob on this harness.
func (h *harness) baseEnv() map[string]string {
	return map[string]string{
		"SENDER": "alice@example.com", "RECIPIENTS": "bob@example.com",
		"CLIENT": "127.0.0.1", "SERVER": "127.0.0.1", "TMPDIR": h.tempDir,
	}
}

// shellAdded are variables /bin/sh or env set on their own.
var shellAdded = map[string]bool{"PWD": true, "OLDPWD": true, "SHLVL": true, "_": true}

// checkEnv checks the contract variables of a run against want (absent
// from want = absent from the run; EMAIL is only checked for presence
// when want has it as "*"), and that the edge added nothing else (behaviour.md#filtering).
func checkEnv(t testing.TB, r filterRun, want map[string]string) {
	t.Helper()
	for _, k := range contract {
		w, wok := want[k]
		g, gok := r.Env[k]
		switch {
		case wok && !gok:
			t.Errorf("filter env: %s absent, expected %q", k, w)
		case !wok && gok:
			t.Errorf("filter env: %s=%q, expected absent", k, g)
		case wok && w != "*" && g != w:
			t.Errorf("filter env: %s=%q, expected %q", k, g, w)
		}
		if strings.IndexFunc(g, func(r rune) bool { return r < 0x20 && !(k == "RECIPIENTS" && r == '\n') || r == 0x7f }) >= 0 {
			t.Errorf("filter env: %s=%q holds a control character", k, g)
		}
	}
	base := map[string]bool{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		base[k] = true
	}
	for k := range r.Env {
		if !base[k] && !shellAdded[k] && !slices.Contains(contract, k) {
			t.Errorf("filter env: unexpected variable %s=%q", k, r.Env[k])
		}
	}
}

// waitFile waits up to d for path to exist.
func waitFile(path string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }

// hasAttr reports whether a log line has key=value, quoted or not.
func hasAttr(line, key, value string) bool {
	return strings.Contains(line, " "+key+"="+value+" ") || strings.HasSuffix(line, " "+key+"="+value) ||
		strings.Contains(line, " "+key+"="+strconv.Quote(value))
}
