package interop

import (
	"bytes"
	"net/mail"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// smtpSink is Postfix's smtp-sink, dumping every message it accepts to a
// file of its own in dir.
type smtpSink struct {
	addr string
	dir  string
	p    *process
}

// startSMTPSink runs `smtp-sink [-u USER] -d DIR/%M. 127.0.0.1:PORT 100`
// in the background; extra options go before -d.
func startSMTPSink(t *testing.T, extra ...string) *smtpSink {
	t.Helper()
	s := launchSMTPSink(t, nil, "127.0.0.1:"+freePort(t), extra...)
	s.p.waitPort(t, s.addr)
	return s
}

// launchSMTPSink starts smtp-sink on addr, its command line after
// prefix (`ip netns exec NS`, say), without waiting for it to listen.
func launchSMTPSink(t *testing.T, prefix []string, addr string, extra ...string) *smtpSink {
	t.Helper()
	bin := tool(t, "smtp-sink", "postfix")
	s := &smtpSink{addr: addr, dir: t.TempDir()}
	argv := append(slices.Clone(prefix), bin)
	if isRoot() {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "-u", u.Username)
	}
	argv = append(argv, extra...)
	argv = append(argv, "-d", filepath.Join(s.dir, "%M."), s.addr, "100")
	s.p = startProcess(t, "smtp-sink", s.dir, argv...)
	return s
}

// dump is one message as smtp-sink stored it: its own X-Client-Addr,
// X-Mail-Args, X-Rcpt-Args and Received lines, then the message.
type dump struct {
	name string
	raw  []byte
	msg  *mail.Message // headers of both parts; Body is the message body
}

func (d dump) header(name string) string { return d.msg.Header.Get(name) }

func (d dump) body() string {
	var b bytes.Buffer
	_, _ = b.ReadFrom(d.msg.Body)
	return b.String()
}

// messages reads every dump so far, by file name.
func (s *smtpSink) messages(t *testing.T) []dump {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []dump
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("smtp-sink dump %s: %v\n%s", e.Name(), err, raw)
		}
		out = append(out, dump{name: e.Name(), raw: raw, msg: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// waitMessages waits until at least n dumps exist and returns them all.
// By the time a client had its 250 the sink has written the file, so the
// wait only covers a slow machine.
func (s *smtpSink) waitMessages(t *testing.T, n int) []dump {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		ms := s.messages(t)
		if len(ms) >= n {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink has %d messages, want %d", len(ms), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// edgeProc is the edge binary on its embedded default (no NATS URL:
// embedded NATS, local store, in-process workers).
type edgeProc struct {
	*process
	addr string
	dir  string
	conf string
}

// startEdge writes conf (see newEdge) and runs the edge until it listens.
func startEdge(t *testing.T, conf string, args ...string) *edgeProc {
	t.Helper()
	e := newEdge(t, conf)
	e.start(t, args...)
	e.waitPort(t, e.addr)
	return e
}

// newEdge writes conf (proxsmtpd.conf lines) after a Listen line on a
// free port and a TempDirectory of its own; later lines of conf win, as
// in proxsmtpd.
func newEdge(t *testing.T, conf string) *edgeProc {
	t.Helper()
	e := &edgeProc{addr: "127.0.0.1:" + freePort(t), dir: t.TempDir()}
	tmp := filepath.Join(e.dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	e.conf = filepath.Join(e.dir, "edge.conf")
	text := "Listen: " + e.addr + "\nTempDirectory: " + tmp + "\n" + conf
	if err := os.WriteFile(e.conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs `edge -d 3 -f CONF --data-dir DIR args...` in the background.
func (e *edgeProc) start(t *testing.T, args ...string) {
	t.Helper()
	argv := append([]string{edgeBin, "-d", "3", "-f", e.conf, "--data-dir", filepath.Join(e.dir, "data")}, args...)
	e.process = startProcess(t, "edge", e.dir, argv...)
}

// swaks sends one message to addr from alice@example.com to
// bob@example.com; args add to or override that.
func swaks(t *testing.T, addr string, stdin []byte, args ...string) result {
	t.Helper()
	bin := tool(t, "swaks", "swaks")
	argv := append([]string{bin, "--server", addr, "--timeout", "60",
		"--helo", "client.example.org", "--from", "alice@example.com", "--to", "bob@example.com"}, args...)
	return runCommand(t, "", stdin, argv...)
}

// serverLines is what the server said in a swaks transcript ("<-  250 ok"
// and "<** 550 no" lines, without the arrows).
func serverLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "<-  ") || strings.HasPrefix(l, "<** ") {
			lines = append(lines, strings.TrimRight(l[4:], "\r"))
		}
	}
	return lines
}

// ehloKeywords are the extensions in the EHLO reply of a swaks transcript.
func ehloKeywords(out string) []string {
	var kws []string
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, " -> EHLO ") {
			continue
		}
		for _, r := range lines[i+2:] { // skip the greeting line of the reply
			if !strings.HasPrefix(r, "<-  250") {
				break
			}
			if len(r) <= 8 {
				continue
			}
			if f := strings.Fields(r[8:]); len(f) > 0 {
				kws = append(kws, strings.ToUpper(f[0]))
			}
		}
		break
	}
	return kws
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
