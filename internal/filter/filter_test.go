package filter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// hangGuard bounds every Run so that a bug shows up as a failure, not a
// stuck test binary.
const hangGuard = 30 * time.Second

// localErrorRe is what every TempFail reply must look like: proxsmtpd's
// text, no enhanced status code, optional words in parentheses.
var localErrorRe = regexp.MustCompile(`^451 Local Error( \([^()]*\))?$`)

func run(t *testing.T, spec Spec, env Env, in string) (Result, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if spec.TempDir == "" {
		spec.TempDir = t.TempDir()
	}
	var out bytes.Buffer
	res, err := Run(ctx, spec, env, strings.NewReader(in), &out)
	return res, out.String(), err
}

func ptr(s string) *string { return &s }

func stdEnv() Env {
	return Env{
		Sender:     ptr("alice@example.com"),
		Recipients: []string{"bob@example.com"},
		Client:     "127.0.0.1",
		Server:     "127.0.0.1",
	}
}

const msg = "Subject: test\r\n\r\nhello\r\n"

func assertTempFail(t *testing.T, res Result) {
	t.Helper()
	if res.Action != TempFail {
		t.Fatalf("Action = %v, want TempFail (%+v)", res.Action, res)
	}
	if !localErrorRe.MatchString(res.Reply) {
		t.Errorf("Reply = %q, want 451 Local Error without enhanced code", res.Reply)
	}
	if res.Status != "FILTER-ERROR" {
		t.Errorf("Status = %q, want FILTER-ERROR", res.Status)
	}
}

func TestNoCommandPassesThrough(t *testing.T) {
	res, out, err := run(t, Spec{}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || res.Status != "" || res.Reply != "" {
		t.Errorf("result = %+v, want Accept with no status", res)
	}
	if out != msg || res.OutputSize != int64(len(msg)) {
		t.Errorf("out = %q (size %d), want the message unchanged", out, res.OutputSize)
	}
}

// sink hashes and counts what it receives and signals every write.
type sink struct {
	n      atomic.Int64
	hash   hash.Hash
	notify chan struct{}
}

func newSink() *sink { return &sink{hash: sha256.New(), notify: make(chan struct{}, 1)} }

func (s *sink) Write(p []byte) (int, error) {
	s.hash.Write(p)
	s.n.Add(int64(len(p)))
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// lockstep hands out size bytes of text, but never runs more than slack
// bytes ahead of what has reached out: a Run that held the whole output
// back before writing it would stall it, and fail.
type lockstep struct {
	size, sent, slack int64
	out               *sink
	hash              hash.Hash
}

func (l *lockstep) Read(p []byte) (int, error) {
	if l.sent >= l.size {
		return 0, io.EOF
	}
	timeout := time.After(hangGuard / 2)
	for l.sent-l.out.n.Load() > l.slack {
		select {
		case <-l.out.notify:
		case <-timeout:
			return 0, fmt.Errorf("output is not streamed: %d bytes in, %d out", l.sent, l.out.n.Load())
		}
	}
	n := min(int64(len(p)), l.size-l.sent, 16<<10)
	for i := range p[:n] {
		k := l.sent + int64(i)
		p[i] = byte('a' + k%26)
		if k%80 == 78 {
			p[i] = '\r'
		} else if k%80 == 79 {
			p[i] = '\n'
		}
	}
	l.hash.Write(p[:n])
	l.sent += n
	return int(n), nil
}

func TestPipeStreamsLargeMessage(t *testing.T) {
	const size = 8 << 20
	out := newSink()
	in := &lockstep{size: size, slack: 1 << 20, out: out, hash: sha256.New()}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := Run(ctx, Spec{Command: "cat", TempDir: t.TempDir()}, stdEnv(), in, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || res.Status != "FILTERED" || res.ExitCode != 0 {
		t.Fatalf("result = %+v, want Accept FILTERED exit 0", res)
	}
	if res.OutputSize != size || out.n.Load() != size {
		t.Errorf("OutputSize = %d, sink got %d, want %d", res.OutputSize, out.n.Load(), size)
	}
	if !bytes.Equal(out.hash.Sum(nil), in.hash.Sum(nil)) {
		t.Error("output differs from input")
	}
}

func TestFileMode(t *testing.T) {
	spool := t.TempDir()
	side := t.TempDir()
	// Records what the filter saw, then edits the file: in place (same
	// inode) or by replacing it with a new file.
	record := fmt.Sprintf(`stat -c %%a "$EMAIL" > %[1]s/mode; printf %%s "$EMAIL" > %[1]s/path; `+
		`readlink /proc/self/fd/0 > %[1]s/stdin; cp "$EMAIL" %[1]s/content; `, side)
	tests := []struct {
		name, cmd, want string
	}{
		{"unchanged", record + "true", msg},
		{"in place", record + `{ printf 'X-Scanned: yes\r\n'; cat ` + side + `/content; } > "$EMAIL"`,
			"X-Scanned: yes\r\n" + msg},
		{"replaced", record + `{ printf 'X-New: 1\r\n'; cat "$EMAIL"; } > "$EMAIL.new" && mv "$EMAIL.new" "$EMAIL"`,
			"X-New: 1\r\n" + msg},
		{"stdout not delivered", record + `echo this-goes-to-the-process-stdout`, msg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := run(t, Spec{Command: tt.cmd, Mode: File, TempDir: spool}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != Accept || res.Status != "FILTERED" {
				t.Fatalf("result = %+v, want Accept", res)
			}
			if out != tt.want || res.OutputSize != int64(len(tt.want)) {
				t.Errorf("out = %q (size %d), want %q", out, res.OutputSize, tt.want)
			}
			read := func(name string) string {
				b, err := os.ReadFile(filepath.Join(side, name))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
			if m := read("mode"); m != "600" {
				t.Errorf("spool file mode %s, want 600", m)
			}
			path := read("path")
			if filepath.Dir(path) != spool || !strings.HasPrefix(filepath.Base(path), "sluice.") {
				t.Errorf("EMAIL = %q, want %s/sluice.*", path, spool)
			}
			if got := read("stdin"); got != os.DevNull {
				t.Errorf("stdin is %q, want %s", got, os.DevNull)
			}
			if got := read("content"); got != strings.TrimSpace(msg) {
				t.Errorf("filter saw %q, want the message", got)
			}
			assertEmptyDir(t, spool)
		})
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left in %s: %s", dir, e.Name())
	}
}

func TestFileModeReject(t *testing.T) {
	spool := t.TempDir()
	res, out, err := run(t, Spec{Command: `echo "550 5.7.1 file says no" >&2; exit 1`, Mode: File, TempDir: spool}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Reject || res.Reply != "550 5.7.1 file says no" || res.ExitCode != 1 {
		t.Errorf("result = %+v, want Reject 550 5.7.1 file says no", res)
	}
	if out != "" {
		t.Errorf("out = %q, want nothing", out)
	}
	assertEmptyDir(t, spool)
}

func TestFileModeFilterRemovesFile(t *testing.T) {
	res, out, err := run(t, Spec{Command: `rm "$EMAIL"`, Mode: File}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	assertTempFail(t, res)
	if out != "" {
		t.Errorf("out = %q, want nothing", out)
	}
}

func TestFileModeNoTempDir(t *testing.T) {
	mark := filepath.Join(t.TempDir(), "ran")
	missing := filepath.Join(t.TempDir(), "missing")
	res, out, err := run(t, Spec{Command: "touch " + mark, Mode: File, TempDir: missing}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	assertTempFail(t, res)
	if !strings.Contains(res.Detail, "spool") || !strings.Contains(res.Detail, "missing") {
		t.Errorf("Detail = %q, want it to say the spool file could not be created", res.Detail)
	}
	if out != "" {
		t.Errorf("out = %q", out)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Error("the filter ran without a spool file")
	}
}

// readEnv returns the environment the shell was started with, as the
// filter's dump wrote it (NUL-separated, from /proc).
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := m[k]; dup {
			t.Errorf("variable %s set twice", k)
		}
		m[k] = v
	}
	return m
}

func TestEnvironment(t *testing.T) {
	// From the parent: these must not leak to the filter.
	for _, v := range []string{"SENDER", "RECIPIENTS", "CLIENT", "SERVER", "REMOTE", "REMOTE_HELO", "EMAIL"} {
		t.Setenv(v, "leak")
	}
	// sluice's own settings and credentials: these must not reach it either.
	secrets := map[string]string{
		"SLUICE_STORE_S3_SECRET_KEY": "s3-secret-from-sluice-setting",
		"SLUICE_NATS_PASSWORD":       "nats-password-from-sluice-setting",
		"AWS_SECRET_ACCESS_KEY":      "aws-secret-from-the-environment",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("FILTER_TEST_INHERITED", "kept")
	spool := t.TempDir()

	inherited := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !isOwnVar(kv) && !strings.HasPrefix(k, "SLUICE_") && !strings.HasPrefix(k, "AWS_") {
			inherited[k] = v
		}
	}
	if inherited["FILTER_TEST_INHERITED"] != "kept" {
		t.Fatal("test setup: variable not in os.Environ")
	}

	tests := []struct {
		name string
		mode Mode
		env  Env
		want map[string]string // the filter's own variables; "EMAIL" "*" = any spool path
	}{
		{"all set", Pipe, Env{
			Sender: ptr("alice@example.com"), Recipients: []string{"bob@example.com", "carol@example.com"},
			Client: "127.0.0.1", Server: "127.0.0.2", Remote: ptr("192.0.2.10"), RemoteHelo: ptr("remote-helo.example"),
		}, map[string]string{
			"SENDER": "alice@example.com", "RECIPIENTS": "bob@example.com\ncarol@example.com",
			"CLIENT": "127.0.0.1", "SERVER": "127.0.0.2", "REMOTE": "192.0.2.10", "REMOTE_HELO": "remote-helo.example",
			"TMPDIR": spool,
		}},
		{"none applies", Pipe, Env{Client: "127.0.0.1"}, map[string]string{
			"CLIENT": "127.0.0.1", "TMPDIR": spool,
		}},
		{"null sender, empty recipient list", Pipe, Env{Sender: ptr("<>"), Recipients: []string{}, Client: "::1", Server: "127.0.0.1"},
			map[string]string{"SENDER": "<>", "CLIENT": "::1", "SERVER": "127.0.0.1", "TMPDIR": spool}},
		{"control characters dropped", Pipe, Env{
			Sender: ptr("a\r\nb@example.com"), Recipients: []string{"x\ny@example.com", "z\x00@example.com\x7f"},
			Client: "127.0.0.1\t", Remote: ptr("192.0.2.14\r\n"), RemoteHelo: ptr("helo\x1b[31m"),
		}, map[string]string{
			"SENDER": "ab@example.com", "RECIPIENTS": "xy@example.com\nz@example.com",
			"CLIENT": "127.0.0.1", "REMOTE": "192.0.2.14", "REMOTE_HELO": "helo[31m", "TMPDIR": spool,
		}},
		{"file mode", File, stdEnv(), map[string]string{
			"SENDER": "alice@example.com", "RECIPIENTS": "bob@example.com", "CLIENT": "127.0.0.1",
			"SERVER": "127.0.0.1", "TMPDIR": spool, "EMAIL": "*",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dump := filepath.Join(t.TempDir(), "env")
			// /proc/$$/environ is exactly what Run passed to execve.
			res, _, err := run(t, Spec{Command: "cat /proc/$$/environ > " + dump, Mode: tt.mode, TempDir: spool}, tt.env, msg)
			if err != nil || res.Action != Accept {
				t.Fatalf("Run = %+v, %v", res, err)
			}
			got := readEnv(t, dump)
			for k, v := range got {
				for sk, sv := range secrets {
					if k == sk || strings.Contains(v, sv) {
						t.Errorf("the filter got %s=%q, holding %s", k, v, sk)
					}
				}
			}
			for k, v := range inherited {
				if got[k] != v {
					t.Errorf("inherited %s = %q, want %q", k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := inherited[k]; ok {
					continue
				}
				want, ok := tt.want[k]
				switch {
				case !ok:
					t.Errorf("unexpected variable %s=%q", k, v)
				case want == "*" && k == "EMAIL":
					if !strings.HasPrefix(v, spool+"/sluice.") {
						t.Errorf("EMAIL = %q, want a file in %s", v, spool)
					}
				case v != want:
					t.Errorf("%s = %q, want %q", k, v, want)
				}
			}
			for k := range tt.want {
				if _, ok := got[k]; !ok {
					t.Errorf("%s missing", k)
				}
			}
		})
	}
}

// TestExitStatus is the verdict of behaviour.md#filtering, proxsmtpd's
// exit-status rules (the compat harness's b scenarios) with sluice's
// corrections: crashes, signals and missing commands are 451,
// only 2xx/4xx/5xx plus a space is a code.
// Issue 6, item 9: recipients that do not fit one environment string (E2BIG
// past 128 KiB on Linux) reach the filter through RECIPIENTS_FILE, all of
// them, in both modes; RECIPIENTS keeps those that fit.
func TestRecipientsFile(t *testing.T) {
	var rcpts []string
	for i := 0; i < 1000; i++ {
		rcpts = append(rcpts, fmt.Sprintf("r%04d-%s@example.com", i, strings.Repeat("x", 230)))
	}
	for _, mode := range []Mode{Pipe, File} {
		dir := t.TempDir()
		env := stdEnv()
		env.Recipients = rcpts
		cmd := `printf %s "$RECIPIENTS" > ` + dir + `/env; cp "$RECIPIENTS_FILE" ` + dir + `/file; stat -c %a "$RECIPIENTS_FILE" > ` + dir + `/mode; cat`
		if mode == File {
			cmd = strings.TrimSuffix(cmd, "; cat")
		}
		res, _, err := run(t, Spec{Command: cmd, Mode: mode}, env, msg)
		if err != nil || res.Action != Accept {
			t.Fatalf("mode %v: %+v, %v", mode, res, err)
		}
		inEnv, _ := os.ReadFile(filepath.Join(dir, "env"))
		first := strings.Split(string(inEnv), "\n")
		if len(inEnv) > maxRecipientsVar || len(first) < 300 || len(first) >= len(rcpts) || first[len(first)-1] != rcpts[len(first)-1] {
			t.Errorf("mode %v: RECIPIENTS holds %d bytes, %d recipients", mode, len(inEnv), len(first))
		}
		file, _ := os.ReadFile(filepath.Join(dir, "file"))
		if string(file) != strings.Join(rcpts, "\n")+"\n" {
			t.Errorf("mode %v: RECIPIENTS_FILE holds %d bytes, want every recipient", mode, len(file))
		}
		if m, _ := os.ReadFile(filepath.Join(dir, "mode")); strings.TrimSpace(string(m)) != "600" {
			t.Errorf("mode %v: RECIPIENTS_FILE mode %q", mode, m)
		}
	}
	// A few recipients: no file, RECIPIENTS_FILE unset (the contract as
	// proxsmtpd has it).
	res, out, err := run(t, Spec{Command: `printf %s "${RECIPIENTS_FILE-unset}"`}, stdEnv(), msg)
	if err != nil || res.Action != Accept || out != "unset" {
		t.Errorf("few recipients: %+v %q %v", res, out, err)
	}
}

func TestExitStatus(t *testing.T) {
	noexec := filepath.Join(t.TempDir(), "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 404)
	tests := []struct {
		name, cmd string
		action    Action // TempFail: 451 Local Error
		reply     string
		status    string
		exit      int
		out       string
	}{
		{"b01 code", `printf '550 Bad Email\n' >&2; exit 1`, Reject, "550 Bad Email", "550 Bad Email", 1, ""},
		{"b02 text", `printf 'virus found\n' >&2; exit 1`, Reject, "550 Content Rejected; virus found", "virus found", 1, ""},
		{"b03 no stderr", `exit 1`, Reject, "550 Content Rejected; Content Rejected", "Content Rejected", 1, ""},
		{"b04 tempfail code", `printf '451 4.7.1 Try again later\n' >&2; exit 1`, Reject, "451 4.7.1 Try again later", "451 4.7.1 Try again later", 1, ""},
		{"b05 250 drops", `printf '250 dropped\n' >&2; exit 1`, Drop, "250 dropped", "250 dropped", 1, ""},
		{"b06 last non-blank line", `printf 'first line\n550 5.7.1 middle\n  last words here  \n\n \n' >&2; exit 1`,
			Reject, "550 Content Rejected; last words here", "last words here", 1, ""},
		{"b07 exit 0 ignores stderr", `cat; printf '550 nope\n' >&2`, Accept, "", "FILTERED", 0, msg},
		{"b08 no newline", `printf '554 5.7.1 Spam detected' >&2; exit 2`, Reject, "554 5.7.1 Spam detected", "554 5.7.1 Spam detected", 2, ""},
		{"b09 filter killed by SIGKILL", `sh -c 'kill -9 $$'`, TempFail, "", "", 137, ""},
		{"b11 command not found", `/nonexistent/oracle-filter`, TempFail, "", "", 127, ""},
		{"b12 continuation is text", `printf '550-5.7.1 looks like continuation\n' >&2; exit 1`,
			Reject, "550 Content Rejected; 550-5.7.1 looks like continuation", "550-5.7.1 looks like continuation", 1, ""},
		{"b13 cut at 255", `printf '550 ` + long + `\n' >&2; exit 1`, Reject, ("550 " + long)[:255], ("550 " + long)[:255], 1, ""},
		{"3xx is text", `printf '354 go ahead\n' >&2; exit 1`, Reject, "550 Content Rejected; 354 go ahead", "354 go ahead", 1, ""},
		{"code alone", `printf '421\n' >&2; exit 1`, Reject, "421", "421", 1, ""},
		{"blank stderr", `printf '  \n\t\n' >&2; exit 3`, Reject, "550 Content Rejected; Content Rejected", "Content Rejected", 3, ""},
		{"control characters removed", `printf '550 5.7.1 bad\033[0m\rthing\n' >&2; exit 1`, Reject, "550 5.7.1 bad[0mthing", "550 5.7.1 bad[0mthing", 1, ""},
		{"exit 127", `exit 127`, TempFail, "", "", 127, ""},
		{"exit 126 not executable", noexec, TempFail, "", "", 126, ""},
		{"SIGSEGV", `sh -c 'kill -SEGV $$'`, TempFail, "", "", 139, ""},
		{"shell killed", `kill -9 $$`, TempFail, "", "", -1, ""},
		{"exit 128 is a status", `printf 'odd\n' >&2; exit 128`, Reject, "550 Content Rejected; odd", "odd", 128, ""},
		{"exit 193 is a status", `printf 'odd\n' >&2; exit 193`, Reject, "550 Content Rejected; odd", "odd", 193, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := run(t, Spec{Command: tt.cmd}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.action == TempFail {
				assertTempFail(t, res)
			} else {
				if res.Action != tt.action || res.Reply != tt.reply || res.Status != tt.status {
					t.Errorf("got %v %q status %q, want %v %q status %q", res.Action, res.Reply, res.Status, tt.action, tt.reply, tt.status)
				}
			}
			if res.ExitCode != tt.exit {
				t.Errorf("ExitCode = %d, want %d (%s)", res.ExitCode, tt.exit, res.Detail)
			}
			if tt.action == Accept && out != tt.out {
				t.Errorf("out = %q, want %q", out, tt.out)
			}
			if res.Detail == "" {
				t.Error("no Detail")
			}
		})
	}
}

func TestDetailNamesTheFailure(t *testing.T) {
	res, _, _ := run(t, Spec{Command: "/nonexistent/oracle-filter"}, stdEnv(), msg)
	if !strings.Contains(res.Detail, "127") || !strings.Contains(res.Detail, "not found") {
		t.Errorf("Detail = %q, want exit status 127 and the shell's message", res.Detail)
	}
	res, _, _ = run(t, Spec{Command: `sh -c 'kill -9 $$'`}, stdEnv(), msg)
	if !strings.Contains(res.Detail, "signal 9") {
		t.Errorf("Detail = %q, want signal 9", res.Detail)
	}
}

func TestLargeStderrKeepsLastLine(t *testing.T) {
	// 200 KiB of noise, then the answer: only a bounded tail is kept.
	res, _, err := run(t, Spec{Command: `head -c 204800 /dev/zero | tr '\0' 'n' >&2; printf '\n550 5.7.1 final answer\n' >&2; exit 1`}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Reject || res.Reply != "550 5.7.1 final answer" {
		t.Errorf("result = %+v", res)
	}
}

func TestFilterClosesStdinEarly(t *testing.T) {
	// behaviour.md#filtering: the filter stops reading a large message; its output is
	// delivered and that is not an error.
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB, far beyond the pipe buffer
	for _, cmd := range []string{"head -c 100", "exec 0<&-; printf short"} {
		t.Run(cmd, func(t *testing.T) {
			res, out, err := run(t, Spec{Command: cmd}, stdEnv(), big)
			if err != nil {
				t.Fatal(err)
			}
			if res.Action != Accept {
				t.Fatalf("result = %+v, want Accept", res)
			}
			want := big[:100]
			if strings.HasPrefix(cmd, "exec") {
				want = "short"
			}
			if out != want {
				t.Errorf("out = %q, want %q", out, want)
			}
		})
	}
}

// gone reports whether pid has ended (absent, or a zombie waiting for a
// parent that is not us).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

func waitGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if gone(pid) {
			return
		}
	}
	t.Errorf("process %d is still running", pid)
	_ = syscallKill(pid)
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	begin := time.Now()
	dir := t.TempDir()
	mark := filepath.Join(dir, "mark")
	pid := filepath.Join(dir, "pid")
	tests := []struct {
		name, cmd string
		pidFile   string
	}{
		// e03: the real program is a child of sh and must die with it.
		{"grandchild", fmt.Sprintf(`sh -c 'sleep 3; touch %s'`, mark), ""},
		{"background child", fmt.Sprintf(`sleep 60 & echo $! > %s; wait $!; touch %s`, pid, mark), pid},
		// TERM is ignored by the shell and inherited by sleep: only SIGKILL works.
		{"ignores SIGTERM", fmt.Sprintf(`trap '' TERM; sleep 60 & echo $! > %s; wait $!; touch %s`, pid, mark), pid},
		// e02: a filter that keeps writing is still timed out (total deadline).
		{"trickling stderr", fmt.Sprintf(`echo $$ > %s; while :; do printf ' ' >&2; sleep 0.1; done`, pid), pid},
		{"reading nothing", fmt.Sprintf(`echo $$ > %s; sleep 60 <&-`, pid), pid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(pid)
			start := time.Now()
			res, out, err := run(t, Spec{Command: tt.cmd, Timeout: 300 * time.Millisecond, KillGrace: 300 * time.Millisecond},
				stdEnv(), strings.Repeat("x", 1<<20))
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			assertTempFail(t, res)
			if res.Reply != "451 Local Error (filter timed out)" || !strings.Contains(res.Detail, "timed out after 300ms") {
				t.Errorf("Reply %q Detail %q, want a timeout", res.Reply, res.Detail)
			}
			if out != "" {
				t.Errorf("out = %q", out)
			}
			if tt.pidFile != "" {
				waitGone(t, tt.pidFile)
			}
			// Generous: only says Run did not wait for the filter's sleep.
			if took > 20*time.Second {
				t.Errorf("Run took %s", took)
			}
		})
	}
	// The grandchild's sleep 3 would have touched the mark by now.
	time.Sleep(time.Until(begin.Add(4 * time.Second)))
	if _, err := os.Stat(mark); err == nil {
		t.Error("a filter process ran to its end after the timeout")
	}
}

// Issue 9: as proxsmtpd, the filter's output is read until the pipes
// close, also after the shell exited: a background job that holds them
// for a while (notify-admin &) delays the verdict but does not fail it;
// only one that holds them past FilterTimeout does, as a timeout, and
// ends with the run.
func TestBackgroundChildHoldingPipes(t *testing.T) {
	res, out, err := run(t, Spec{Command: `cat; (sleep 0.3; echo "X-Late: yes") &`, Timeout: 20 * time.Second}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || out != msg+"X-Late: yes\n" {
		t.Errorf("Run = %+v, %q; want Accept with the background job's output", res, out)
	}
	res, _, err = run(t, Spec{Command: `cat; (sleep 0.3; echo late >&2) >/dev/null &`, Timeout: 20 * time.Second}, stdEnv(), msg)
	if err != nil || res.Action != Accept {
		t.Errorf("stderr held a while: Run = %+v, %v; want Accept", res, err)
	}

	dir := t.TempDir()
	pid := filepath.Join(dir, "pid")
	tests := []struct{ name, cmd string }{
		{"holds stdout", fmt.Sprintf(`cat; sleep 60 & echo $! > %s`, pid)},
		{"holds stderr", fmt.Sprintf(`cat; sleep 60 >/dev/null & echo $! > %s`, pid)},
		// Left its own session and process group: Run still returns.
		{"setsid holds stdout", fmt.Sprintf(`cat; setsid sleep 60 & echo $! > %s`, pid)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(pid)
			res, _, err := run(t, Spec{Command: tt.cmd, Timeout: 500 * time.Millisecond, KillGrace: 300 * time.Millisecond}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Reply != "451 Local Error (filter timed out)" {
				t.Errorf("Reply %q Detail %q, want a timeout", res.Reply, res.Detail)
			}
			// Outside the group too: the subreaper ends it.
			waitGone(t, pid)
		})
	}
}

func TestBackgroundChildDetached(t *testing.T) {
	// A background process that let go of the pipes does not hold up the
	// result; with the subreaper (the test binary is one) it ends with
	// the run, where proxsmtpd left it running.
	skipWithoutSubreaper(t)
	pid := filepath.Join(t.TempDir(), "pid")
	res, out, err := run(t, Spec{Command: fmt.Sprintf(`cat; sleep 60 >/dev/null 2>&1 & echo $! > %s`, pid)}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != Accept || out != msg {
		t.Errorf("result = %+v out %q, want Accept", res, out)
	}
	waitGone(t, pid)
}

func TestContextCancel(t *testing.T) {
	pid := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	var out bytes.Buffer
	res, err := Run(ctx, Spec{Command: fmt.Sprintf(`echo $$ > %s; sleep 60`, pid), KillGrace: 300 * time.Millisecond, TempDir: t.TempDir()},
		stdEnv(), strings.NewReader(msg), &out)
	if err != nil {
		t.Fatal(err)
	}
	assertTempFail(t, res)
	if !strings.Contains(res.Detail, "canceled") {
		t.Errorf("Detail = %q", res.Detail)
	}
	waitGone(t, pid)

	// Already canceled: the filter does not run at all.
	mark := filepath.Join(t.TempDir(), "mark")
	res, err = Run(ctx, Spec{Command: "touch " + mark}, stdEnv(), strings.NewReader(msg), &out)
	if err != nil {
		t.Fatal(err)
	}
	assertTempFail(t, res)
	if _, err := os.Stat(mark); err == nil {
		t.Error("the filter ran after cancellation")
	}
}

// failingReader gives some data, then fails like a broken store.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("store: connection reset")
	}
	n := min(len(p), f.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	f.n -= n
	return n, nil
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("store: disk full") }

func TestStoreFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	for _, mode := range []Mode{Pipe, File} {
		for _, cmd := range []string{"", "cat"} {
			name := fmt.Sprintf("mode %d %q", mode, cmd)
			t.Run(name+" read", func(t *testing.T) {
				var out bytes.Buffer
				res, err := Run(ctx, Spec{Command: cmd, Mode: mode, TempDir: t.TempDir()}, stdEnv(), &failingReader{n: 100 << 10}, &out)
				if err == nil || !strings.Contains(err.Error(), "connection reset") {
					t.Fatalf("err = %v, want the read error", err)
				}
				if res.Action == Accept {
					t.Errorf("result = %+v, must not accept", res)
				}
			})
			t.Run(name+" write", func(t *testing.T) {
				res, err := Run(ctx, Spec{Command: cmd, Mode: mode, TempDir: t.TempDir()}, stdEnv(), strings.NewReader(msg), failingWriter{})
				if err == nil || !strings.Contains(err.Error(), "disk full") {
					t.Fatalf("err = %v, want the write error", err)
				}
				if res.Action == Accept {
					t.Errorf("result = %+v, must not accept", res)
				}
			})
		}
	}
}

func TestUnknownMode(t *testing.T) {
	res, _, err := run(t, Spec{Command: "cat", Mode: Mode(7)}, stdEnv(), msg)
	if err != nil {
		t.Fatal(err)
	}
	assertTempFail(t, res)
}

// stallingReader gives some data, then blocks until release is closed and
// fails: a store that hangs past the filter's deadline, then breaks.
type stallingReader struct {
	sent    bool
	release chan struct{}
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if !s.sent {
		s.sent = true
		return copy(p, msg), nil
	}
	<-s.release
	return 0, errors.New("store: stalled")
}

func TestReadErrorAfterTimeout(t *testing.T) {
	in := &stallingReader{release: make(chan struct{})}
	time.AfterFunc(time.Second, func() { close(in.release) })
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, Spec{Command: "cat", Timeout: 200 * time.Millisecond, KillGrace: 200 * time.Millisecond, TempDir: t.TempDir()},
		stdEnv(), in, &out)
	if err == nil || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("err = %v, want the store's error", err)
	}
	assertTempFail(t, res)
}
