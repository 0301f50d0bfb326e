package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/miltertest"
)

// BenchmarkCost (issue 10, targets 2 and 3) is the table, side by
// side in one run: Postfix's smtp-source, one connection per message, 20
// sessions, 10 KiB messages, into each path in turn, b.N messages each:
//
//	wire           smtp-source straight to the sink (the bare exchange)
//	edge_nofilter  the edge binary, embedded default, no FilterCommand
//	edge_cat       the same with FilterCommand cat
//	edge_milter    the same with an accept-all milter (a go-milter server in
//	               this process, so its CPU is not in the edge's) instead
//	proxsmtpd_cat  Debian's proxsmtpd with cat, when installed
//
// For each: msgs/s, and CPU ms per message of the server process and the
// children it waited for (utime+stime+cutime+cstime from /proc: the
// edge's embedded NATS server, workers and filters; proxsmtpd's filters).
// Then the spawn limit (`sh -c cat` on 10 KiB in two parallel loops) and
// the ratios the targets name: edge_cat's CPU per message against
// proxsmtpd's (at most 0.8) and edge_cat's rate against the spawn limit
// (at least 0.5); edge_nofilter's CPU (at most 0.5 ms) and rate (at least
// 1,000 msgs/s).
func BenchmarkCost(b *testing.B) {
	for unit, v := range cost(b, b.N) {
		b.ReportMetric(v, unit)
	}
}

// TestCostPaths runs BenchmarkCost's paths on a few messages, so that
// `make test` keeps them working: every path delivers every message, and
// the CPU of each server process is counted.
func TestCostPaths(t *testing.T) {
	m := cost(t, 5)
	for _, unit := range []string{"wire-msgs/s", "edge_nofilter-msgs/s", "edge_cat-msgs/s", "edge_milter-msgs/s", "edge_cat-of-spawn-limit"} {
		if m[unit] <= 0 {
			t.Errorf("%s: %v", unit, m[unit])
		}
	}
	// Five messages with a filter each cost more than one clock tick.
	if m["edge_cat-cpu-ms/msg"] <= 0 {
		t.Errorf("edge_cat-cpu-ms/msg: %v", m["edge_cat-cpu-ms/msg"])
	}
}

// cost sends n messages through each path in turn and returns the
// metrics BenchmarkCost reports, by unit.
func cost(tb testing.TB, n int) map[string]float64 {
	source := postfixTool(tb, "smtp-source")
	s := startSink(tb)
	edgeBin := buildEdge(tb)
	type path struct {
		name string
		addr string
		pid  int // the process whose CPU is counted; 0 for none
	}
	paths := []path{{name: "wire", addr: s.addr}}
	addr, pid := startEdgeProcess(tb, edgeBin, s.addr, "")
	paths = append(paths, path{"edge_nofilter", addr, pid})
	addr, pid = startEdgeProcess(tb, edgeBin, s.addr, "cat")
	paths = append(paths, path{"edge_cat", addr, pid})
	addr, pid = startEdgeProcess(tb, edgeBin, s.addr, "", "filter.milters: "+miltertest.Start(tb, &miltertest.Peer{}))
	paths = append(paths, path{"edge_milter", addr, pid})
	if _, err := os.Stat(proxsmtpdPath); err == nil {
		addr, pid = startProxsmtpdProcess(tb, s.addr)
		paths = append(paths, path{"proxsmtpd_cat", addr, pid})
	} else {
		tb.Logf("proxsmtpd_cat skipped: %s not installed", proxsmtpdPath)
	}

	m := map[string]float64{}
	for _, p := range paths {
		before := s.msgs.Load()
		cpu0 := processCPU(tb, p.pid)
		start := time.Now()
		out, err := exec.Command(source, "-s", "20", "-m", strconv.Itoa(n), "-l", strconv.Itoa(messageSize),
			"-f", sender, "-t", recipient, p.addr).CombinedOutput()
		elapsed := time.Since(start)
		if err != nil {
			tb.Fatalf("%s: smtp-source: %v\n%s", p.name, err, out)
		}
		if got := s.msgs.Load() - before; got != int64(n) {
			tb.Fatalf("%s: the sink received %d messages of %d\n%s", p.name, got, n, out)
		}
		m[p.name+"-msgs/s"] = float64(n) / elapsed.Seconds()
		if p.pid != 0 {
			m[p.name+"-cpu-ms/msg"] = (processCPU(tb, p.pid) - cpu0).Seconds() * 1000 / float64(n)
		}
	}
	spawn := spawnRate(tb, 2, 200, message(messageSize))
	m["spawn-runs/s"] = spawn
	m["edge_cat-of-spawn-limit"] = m["edge_cat-msgs/s"] / spawn
	m["edge_milter-over-cat"] = m["edge_milter-msgs/s"] / m["edge_cat-msgs/s"]
	m["edge_milter-of-nofilter"] = m["edge_milter-msgs/s"] / m["edge_nofilter-msgs/s"]
	if p := m["proxsmtpd_cat-cpu-ms/msg"]; p > 0 {
		m["edge_cat-cpu-vs-proxsmtpd"] = m["edge_cat-cpu-ms/msg"] / p
	}
	return m
}

// postfixTool finds one of Postfix's programs, or skips.
func postfixTool(tb testing.TB, name string) string {
	tb.Helper()
	for _, dir := range []string{"", "/usr/sbin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
		tb.Fatalf("%s not found (apt-get install postfix)", name)
	}
	tb.Skipf("%s not found (apt-get install postfix)", name)
	return ""
}

// buildEdge builds cmd/edge once per benchmark.
func buildEdge(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "edge")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/edge")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/edge: %v\n%s", err, out)
	}
	return bin
}

// startEdgeProcess runs the edge binary on its embedded default, in the
// foreground (-d 3, logging to /dev/null), and returns its address and
// pid once it listens.
func startEdgeProcess(tb testing.TB, bin, sinkAddr, filterCommand string, lines ...string) (string, int) {
	tb.Helper()
	dir := tb.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	conf := fmt.Sprintf("Listen: %s\nOutAddress: %s\nTempDirectory: %s\n", addr, sinkAddr, dir)
	if filterCommand != "" {
		conf += "FilterCommand: " + filterCommand + "\n"
	}
	for _, l := range lines {
		conf += l + "\n"
	}
	return addr, startServer(tb, dir, conf, addr, bin, "-d", "3", "--data-dir", filepath.Join(dir, "data"))
}

// startProxsmtpdProcess is startProxsmtpd as a process of its own.
func startProxsmtpdProcess(tb testing.TB, sinkAddr string) (string, int) {
	tb.Helper()
	dir := tb.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	conf := fmt.Sprintf("Listen: %s\nOutAddress: %s\nTempDirectory: %s\nFilterCommand: cat\n", addr, sinkAddr, dir)
	return addr, startServer(tb, dir, conf, addr, proxsmtpdPath, "-d", "3")
}

// startServer writes conf, runs argv with -f CONF until it listens on
// addr, and stops it when the benchmark ends.
func startServer(tb testing.TB, dir, conf, addr string, argv ...string) int {
	tb.Helper()
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(argv[0], append(argv[1:], "-f", path)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 8 << 10}
	done := startProcess(tb, cmd)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return cmd.Process.Pid
		}
		select {
		case <-done:
			tb.Fatalf("%s exited before listening on %s:\n%s", argv[0], addr, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not listening on %s: %v", argv[0], addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProcess starts cmd and stops it (SIGTERM, SIGKILL after 30 s)
// when the benchmark ends; done is closed once it exited.
func startProcess(tb testing.TB, cmd *exec.Cmd) (done chan struct{}) {
	tb.Helper()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", cmd.Path, err)
	}
	done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return done
}

// limitedBuffer keeps the first max bytes written to it (a start-up
// error), and discards the rest of a long-running server's log.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// processCPU is the CPU time of pid and of the children it waited for:
// utime+stime+cutime+cstime of /proc/PID/stat, in clock ticks of 10 ms
// (USER_HZ is 100 on Linux). Zero for pid 0.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name, which may hold spaces: state
	// is the first, utime the 12th.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	var ticks int64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
