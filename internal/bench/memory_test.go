package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// BenchmarkMemory (issue 10, target 5): the edge binary on its embedded
// default (edge, NATS and workers in one process, so the target's "edge
// and worker each" is held by the two together), FilterCommand cat:
//
//	idle-rss-MiB             VmRSS once it listens
//	100MiB-hwm-over-idle-MiB VmHWM after one 100 MiB message went through
//	                         cat to the sink, less the idle RSS (target:
//	                         under 64)
//	2000sessions-rss-MiB     VmRSS with 2,000 client sessions open after
//	                         EHLO, each with its upstream connection
//	                         (target: under 200)
func BenchmarkMemory(b *testing.B) {
	// 2,000 sessions here, 2,000 at the sink, and the edge's 4,000
	// (inherited): more descriptors than the usual 1,024.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 16384 {
		lim.Cur = min(16384, lim.Max)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	s := startSink(b)
	bin := buildEdge(b)
	dir := b.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(b))
	conf := fmt.Sprintf("Listen: %s\nOutAddress: %s\nTempDirectory: %s\nFilterCommand: cat\nMaxConnections: 2100\n"+
		"max_message_size: 200MiB\n", addr, s.addr, dir)
	pid := startServer(b, dir, conf, addr, bin, "-d", "3", "--data-dir", dir+"/data")
	idle := procStatusMiB(b, pid, "VmRSS")
	b.ReportMetric(idle, "idle-rss-MiB")

	const big = 100 << 20
	before := s.bytes.Load()
	c := dial(b, addr)
	if err := c.Mail(sender, nil); err != nil {
		b.Fatal(err)
	}
	if err := c.Rcpt(recipient, nil); err != nil {
		b.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(w, io.LimitReader(&lines{}, big)); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatalf("100 MiB message: %v", err)
	}
	if got := s.bytes.Load() - before; got < big {
		b.Fatalf("the sink received %d bytes of the 100 MiB message", got)
	}
	b.ReportMetric(procStatusMiB(b, pid, "VmHWM")-idle, "100MiB-hwm-over-idle-MiB")

	const n = 2000
	clients := make([]*smtp.Client, 0, n)
	for range n {
		clients = append(clients, dial(b, addr))
	}
	// Every session is open at the edge and at the sink.
	if c := clients[n-1]; c.Noop() != nil {
		b.Fatal("the last session does not answer")
	}
	b.ReportMetric(procStatusMiB(b, pid, "VmRSS"), "2000sessions-rss-MiB")
}

// lines yields an endless text body of 72-character CRLF lines.
type lines struct{ buf []byte }

func (l *lines) Read(p []byte) (int, error) {
	if len(l.buf) == 0 {
		l.buf = bytes.Repeat([]byte(strings.Repeat("x", 70)+"\r\n"), 1024)
	}
	n := 0
	for n < len(p) {
		n += copy(p[n:], l.buf)
	}
	return n, nil
}

// procStatusMiB reads a "Vm...: N kB" line of /proc/PID/status, in MiB.
func procStatusMiB(tb testing.TB, pid int, key string) float64 {
	tb.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				tb.Fatalf("/proc/%d/status %s: %v", pid, key, err)
			}
			return kb / 1024
		}
	}
	tb.Fatalf("/proc/%d/status has no %s", pid, key)
	return 0
}
