package interop

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lines splits a program's output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestCLIVersion: proxsmtpd's -v prints the version and the configuration
// file it would read, and exits 0 without reading it.
func TestCLIVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		conf string
	}{
		{[]string{"-v"}, "/etc/proxsmtpd.conf"},
		{[]string{"-v", "-f", "/nonexistent/sluice.conf"}, "/nonexistent/sluice.conf"},
	} {
		r := runCommand(t, t.TempDir(), nil, append([]string{edgeBin}, tc.args...)...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("edge %v: exit %d, stderr %q; want 0 and nothing", tc.args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "version "+testVersion) || !strings.Contains(r.stdout, tc.conf) {
			t.Errorf("edge %v printed %q, want the version %q and the file %s", tc.args, r.stdout, testVersion, tc.conf)
		}
	}
}

// Issue 9: built without -ldflags (go build, go install from a checkout),
// the version is the commit the build recorded; the start-up log names
// the version too.
func TestCLIVersionFromBuildInfo(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	rev := runCommand(t, moduleRoot, nil, git, "rev-parse", "--short=12", "HEAD")
	if rev.code != 0 {
		t.Skipf("not a git checkout: %s", rev.stderr)
	}
	bin := filepath.Join(t.TempDir(), "edge")
	if r := runCommand(t, moduleRoot, nil, "go", "build", "-buildvcs=true", "-o", bin, "./cmd/edge"); r.code != 0 {
		t.Fatalf("go build: %s", r.stderr)
	}
	r := runCommand(t, t.TempDir(), nil, bin, "-v")
	// Go stamps a pseudo-version with the commit (v0.0.0-DATE-REV[+dirty]).
	if want := strings.TrimSpace(rev.stdout); !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "version dev)") {
		t.Errorf("edge -v printed %q, want a version naming commit %s", r.stdout, want)
	}
	e := startEdge(t, "OutAddress: 127.0.0.1:1\n")
	waitFor(t, func() bool { return strings.Contains(e.stderr.String(), "version="+testVersion) },
		"the start-up log to name the version")
}

// TestCLIBadConfigLine: one bad line stops the edge at start-up with exit
// status 2 and one line naming the setting and the file.
func TestCLIBadConfigLine(t *testing.T) {
	for _, tc := range []struct{ line, setting string }{
		{"MaxConnections: 1", "MaxConnections"},
		{"FilterType: sideways", "FilterType"},
		{"TimeOut: soon", "TimeOut"},
		{"Listen: 127.0.0.1:99999", "Listen"},
		{"nats.replicas: 9", "nats.replicas"},
		{"max_message_size: lots", "max_message_size"},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "bad.conf")
			text := "Listen: 127.0.0.1:" + freePort(t) + "\nOutAddress: 127.0.0.1:25\nFilterCommand: cat\n" + tc.line + "\n"
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runCommand(t, dir, nil, edgeBin, "-f", conf, "--data-dir", filepath.Join(dir, "data"))
			if r.code != 2 {
				t.Errorf("exit status %d, want 2", r.code)
			}
			got := lines(r.stderr)
			if len(got) != 1 || !strings.Contains(got[0], tc.setting) || !strings.Contains(got[0], conf) {
				t.Errorf("stderr:\n%s\nwant one line naming %s and %s", r.stderr, tc.setting, conf)
			}
		})
	}
}

// TestCLIMissingConfig: as proxsmtpd, a missing file is a warning; the
// missing OutAddress is then the error.
func TestCLIMissingConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "missing.conf")
	r := runCommand(t, dir, nil, edgeBin, "-f", conf, "--data-dir", filepath.Join(dir, "data"))
	if r.code != 2 {
		t.Errorf("exit status %d, want 2", r.code)
	}
	got := lines(r.stderr)
	if len(got) != 2 ||
		!strings.Contains(got[0], "configuration file not found") || !strings.Contains(got[0], conf) ||
		!strings.Contains(got[1], "no OutAddress specified.") {
		t.Errorf("stderr:\n%s\nwant \"configuration file not found: %s\" then \"no OutAddress specified.\"", r.stderr, conf)
	}
}

// TestCLISIGTERMIdleSession: SIGTERM while a client sits idle after EHLO:
// the client gets a 421 (not a silent close) and the edge exits 0.
func TestCLISIGTERMIdleSession(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\n")

	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(stopTimeout))
	br := bufio.NewReader(c)
	readReply := func() string {
		t.Helper()
		var last string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v (after %q)", err, last)
			}
			last = strings.TrimRight(l, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	if got := readReply(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting %q", got)
	}
	if _, err := c.Write([]byte("EHLO client.example.org\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readReply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("EHLO reply ends with %q", got)
	}

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := readReply(); !strings.HasPrefix(got, "421 ") {
		t.Errorf("after SIGTERM the idle client got %q, want a 421", got)
	}
	if l, err := br.ReadString('\n'); err == nil {
		t.Errorf("after the 421 the edge still talks: %q", l)
	}
	code, ok := e.wait(stopTimeout)
	if !ok {
		t.Fatalf("edge still running %s after SIGTERM", stopTimeout)
	}
	if code != 0 {
		t.Errorf("edge exit status %d after SIGTERM, want 0", code)
	}
}

// TestCLIPidFile: -p writes the pid file once the edge listens, and the
// file is removed on exit.
func TestCLIPidFile(t *testing.T) {
	sink := startSMTPSink(t)
	e := newEdge(t, "OutAddress: "+sink.addr+"\n")
	pidFile := filepath.Join(e.dir, "edge.pid")
	e.start(t, "-p", pidFile)

	deadline := time.Now().Add(startTimeout)
	var content []byte
	for {
		var err error
		content, err = os.ReadFile(pidFile)
		if err == nil && strings.HasSuffix(string(content), "\n") {
			break
		}
		if code, exited := e.wait(0); exited {
			t.Fatalf("edge exited (status %d) without writing %s", code, pidFile)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid file after %s: %v", startTimeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Written after listening: whoever waits for the file can connect.
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Errorf("pid file present but the edge does not accept connections: %v", err)
	} else {
		c.Close()
	}
	if got, want := string(content), strconv.Itoa(e.pid())+"\n"; got != want {
		t.Errorf("pid file holds %q, want %q", got, want)
	}

	if code := e.stop(t); code != 0 {
		t.Errorf("edge exit status %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file still there after exit: %v", err)
	}
}

// Issue 9: the edge says at start-up what it stores and for how long, and
// how to store nothing (retention: 0).
func TestCLIStartupSaysWhatIsKept(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"", "kept for 168h0m0s (retention) for replay; retention: 0 keeps nothing beyond the transaction"},
		{"retention: 0\n", "messages are stored only for their transaction (retention: 0)"},
	} {
		e := startEdge(t, "OutAddress: 127.0.0.1:1\n"+tc.conf)
		waitFor(t, func() bool { return strings.Contains(e.stderr.String(), tc.want) }, "the edge to say: "+tc.want)
		e.stop(t)
	}
}

// Issue 9: with log_format json the summary line's recipients are one
// list, durations are numbers of milliseconds (the unit in the key), and
// the worker names its action.
func TestCLIJSONLogLines(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\nlog_format: json\n")
	checkSwaksOK(t, swaks(t, e.addr, nil, "--to", "bob@example.com,carol@example.com"))
	var summary, filtered map[string]any
	waitFor(t, func() bool {
		for _, l := range strings.Split(e.stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			switch m["msg"] {
			case "message":
				summary = m
			case "filtered":
				filtered = m
			}
		}
		return summary != nil && filtered != nil
	}, "the message and filtered lines")
	if to, ok := summary["to"].([]any); !ok || len(to) != 2 || to[0] != "bob@example.com" || to[1] != "carol@example.com" {
		t.Errorf("summary line's to: %#v", summary["to"])
	}
	for _, m := range []map[string]any{summary, filtered} {
		if _, ok := m["duration_ms"].(float64); !ok {
			t.Errorf("%s line's duration_ms: %#v", m["msg"], m["duration_ms"])
		}
	}
	if filtered["action"] != "accept" {
		t.Errorf("filtered line's action: %#v", filtered["action"])
	}
}

// Issue 9: a FilterCommand whose program is missing is named at start-up,
// and each message it fails is a WARN line with the reason (and a 451).
func TestCLIMissingFilterProgram(t *testing.T) {
	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: /nonexistent/sluice-filter --scan\n")
	waitFor(t, func() bool {
		return strings.Contains(e.stderr.String(), "level=WARN msg=\"FilterCommand: /nonexistent/sluice-filter: no such file")
	}, "a start-up warning naming the program")
	r := swaks(t, e.addr, nil)
	if lines := serverLines(r.stdout); len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-2], "451 ") {
		t.Errorf("swaks saw %q, want a 451 to the message", lines)
	}
	waitFor(t, func() bool {
		for _, l := range strings.Split(e.stderr.String(), "\n") {
			if strings.Contains(l, "level=WARN msg=filtered") && strings.Contains(l, "not found") {
				return true
			}
		}
		return false
	}, "a WARN line with the reason for the message")
}

// Issue 9: under systemd's Type=notify the edge says READY=1 once it
// accepts connections and STOPPING=1 when it drains (sd_notify's
// datagrams on $NOTIFY_SOCKET).
func TestCLISystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := newEdge(t, "OutAddress: 127.0.0.1:1\n")
	e.process = startProcess(t, "edge", e.dir, "env", "NOTIFY_SOCKET="+sock,
		edgeBin, "-d", "3", "-f", e.conf, "--data-dir", filepath.Join(e.dir, "data"))
	read := func() string {
		buf := make([]byte, 4096)
		_ = ln.SetReadDeadline(time.Now().Add(startTimeout))
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, e.stderr.String())
		}
		return string(buf[:n])
	}
	if got := read(); !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// Ready means listening.
	c, err := net.DialTimeout("tcp", e.addr, time.Second)
	if err != nil {
		t.Fatalf("READY=1 but not listening: %v", err)
	}
	c.Close()
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	if got := read(); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("on SIGTERM %q, want STOPPING=1", got)
	}
}
