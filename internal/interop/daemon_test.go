package interop

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Issue 9: proxsmtpd's process model. Without -d the edge detaches once
// it serves: the command returns 0 with the port already accepting and
// the pid file naming the daemon, which holds none of the starter's
// streams (a caller reading them to the end returns), leads a session of
// its own, is named as the file it was started by (killproc's --name,
// through a symbolic link too) and logs to syslog with facility mail. A
// start-up failure is the command's exit status and stderr.
func TestDaemonize(t *testing.T) {
	logs := listenSyslog(t)
	sink := startSMTPSink(t)
	dir := t.TempDir()
	// Started as "proxsmtpd", a symbolic link to the edge, as on a
	// Debian machine where the edge replaced proxsmtpd.
	bin := filepath.Join(dir, "proxsmtpd")
	if err := os.Symlink(edgeBin, bin); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + freePort(t)
	pidFile := filepath.Join(dir, "run", "proxsmtpd.pid")
	if err := os.Mkdir(filepath.Dir(pidFile), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "proxsmtpd.conf")
	text := "Listen: " + addr + "\nOutAddress: " + sink.addr + "\nFilterCommand: cat\n" +
		"data_dir: " + filepath.Join(dir, "data") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	r := runDetaching(t, dir, bin, "-f", conf, "-p", pidFile)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	// Serving before the command returned: no waiting here.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the command returned, but nothing accepts on %s: %v", addr, err)
	}
	c.Close()
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("no pid file when the command returned: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file holds %q", raw)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if comm := procComm(t, pid); comm != "proxsmtpd" {
		t.Errorf("the daemon's process name is %q, want proxsmtpd (killproc --name)", comm)
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("the daemon is in session %d, want its own (%d)", sid, pid)
	}
	for fd := range 3 {
		if target, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + itoa(fd)); target != os.DevNull {
			t.Errorf("the daemon's fd %d is %q, want /dev/null", fd, target)
		}
	}
	if fds, _ := os.ReadDir("/proc/" + itoa(pid) + "/fd"); len(fds) > 0 {
		for _, f := range fds {
			target, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + f.Name())
			if strings.HasPrefix(target, "pipe:") {
				t.Errorf("the daemon holds a pipe on fd %s (the ready pipe, or one it inherited)", f.Name())
			}
		}
	}

	checkSwaksOK(t, swaks(t, addr, nil, "--h-Subject", "to the daemon"))
	if ms := sink.waitMessages(t, 1); ms[0].header("Subject") != "to the daemon" {
		t.Errorf("delivered Subject %q", ms[0].header("Subject"))
	}

	// A second one on the same port fails, and says so where it was
	// started.
	r = runDetaching(t, dir, bin, "-f", conf, "-p", filepath.Join(dir, "run", "second.pid"))
	if r.code == 0 || !strings.Contains(r.stderr, "start-up failed") || !strings.Contains(r.stderr, "(Listen)") {
		t.Errorf("second daemon on a busy port: exit %d, stderr:\n%s\nwant non-zero and the start-up failure naming Listen", r.code, r.stderr)
	}

	// SIGTERM, as killproc and systemctl stop send: it drains, ends and
	// removes its pid file.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return syscall.Kill(pid, 0) != nil }, "the daemon to end after SIGTERM")
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after the daemon ended: %v", err)
	}

	if logs == nil {
		t.Log("syslog not checked: needs root and no syslog daemon on /dev/log")
		return
	}
	lines := logs.lines()
	var listening, mail bool
	for _, l := range lines {
		if strings.Contains(l, "proxsmtpd["+itoa(pid)+"]:") && strings.Contains(l, "edge listening") {
			listening = true
			// <PRI> = facility*8 + severity: mail (2), info (6).
			mail = strings.HasPrefix(l, "<22>")
		}
	}
	if !listening || !mail {
		t.Errorf("syslog: want \"edge listening\" from proxsmtpd[%d] at mail.info (<22>), got:\n%s", pid, strings.Join(lines, "\n"))
	}
}

// runDetaching runs a command that should return while what it started
// goes on; reading its output to the end must not wait for that.
func runDetaching(t *testing.T, dir string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A daemon holding the command's stdout or stderr would make Wait
	// wait for it: that is a failure, not a hang.
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.Is(err, exec.ErrWaitDelay):
		t.Fatalf("%s returned, but its stdout or stderr stayed open (held by the daemon)", argv[0])
	case ctx.Err() != nil:
		t.Fatalf("%s did not return within %s; stderr:\n%s", argv[0], runTimeout, stderr.String())
	case err != nil && !errors.As(err, &ee):
		t.Fatalf("running %s: %v", argv[0], err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

func procComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// syslogListener stands where a syslog daemon would: the datagram socket
// /dev/log, which is where the edge's log/syslog writer sends.
type syslogListener struct {
	mu  sync.Mutex
	got []string
}

func (s *syslogListener) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// listenSyslog receives what is sent to /dev/log for the rest of the
// test, or returns nil where it cannot stand there: not root, or a
// syslog daemon already listening (the machine's own log then has it).
func listenSyslog(t *testing.T) *syslogListener {
	const path = "/dev/log"
	if !isRoot() {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Logf("cannot listen on %s: %v", path, err)
		return nil
	}
	s := &syslogListener{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close() // removes the socket file
		<-done
		_ = os.Remove(path)
	})
	return s
}
