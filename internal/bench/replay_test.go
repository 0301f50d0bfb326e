package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/xid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-mail/sluice/internal/blob"
	"github.com/sluice-mail/sluice/internal/natstest"
	"github.com/sluice-mail/sluice/internal/record"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// BenchmarkReplay (issue 12): the replay command on stored 10 KiB
// messages, side by side in one run:
//
//	local-msgs/s   replay here, `sleep 0.05; cat`, --concurrency 2 (the
//	               default)
//	pool-msgs/s    the same replay with --pool on 4 sluice-worker
//	               processes (worker.replay_slots 4, their default) and
//	               one nats-server
//	pool-over-local the ratio (target: at least 3)
//	100k-rss-MiB   the replay process's peak RSS (VmHWM, from its rusage)
//	               over 100,000 stored messages with no filter process
//	               (FilterCommand ''), with --html (target: under 100)
func BenchmarkReplay(b *testing.B) {
	replayBin := buildCmd(b, "replay")
	workerBin := buildCmd(b, "worker")
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,-+\r\n"), 10240/70)
	msg := append([]byte("Subject: bench\r\n\r\n"), body...)

	const n = 400
	store := b.TempDir()
	fillStore(b, store, n, msg)
	filterCmd := "sleep 0.05; cat"

	local := timeReplay(b, replayBin, n, "--store-dir", store, "--filter-command", filterCmd)
	b.ReportMetric(local, "local-msgs/s")

	nc := natstest.StartCluster(b, 1)
	url := strings.Join(nc.URLs(), ",")
	for i := range 4 {
		startWorker(b, workerBin, fmt.Sprintf("FilterCommand: cat\nstore.dir: %s\nnats.url: %s\nworker.replay_pools: bench\n"+
			"worker.slots: 1\nTempDirectory: %s\n", store, url, b.TempDir()), i)
	}
	pool := timeReplay(b, replayBin, n, "--store-dir", store, "--filter-command", filterCmd, "--nats-url="+url, "--pool", "bench")
	b.ReportMetric(pool, "pool-msgs/s")
	b.ReportMetric(pool/local, "pool-over-local")

	const big = 100_000
	store = b.TempDir()
	fillStore(b, store, big, msg)
	page := filepath.Join(b.TempDir(), "report.html")
	cmd := exec.Command(replayBin, "--store-dir", store, "--filter-command", "", "--format", "json", "--only-changed",
		"--html", page, "--concurrency", "2")
	cmd.Env = append(os.Environ(), "SLUICE_CONFIG=")
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 8 << 10}
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("replay of %d messages: %v\n%s", big, err, stderr.String())
	}
	if !bytes.Contains(out, []byte(fmt.Sprintf(`"messages":%d,"same":%d,`, big, big))) {
		b.Fatalf("replay of %d messages reported %s", big, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	b.ReportMetric(float64(ru.Maxrss)/1024, "100k-rss-MiB") // Maxrss is in KiB on Linux
}

// buildCmd builds ./cmd/NAME once per benchmark.
func buildCmd(tb testing.TB, name string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/"+name).CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/%s: %v\n%s", name, err, out)
	}
	return bin
}

// fillStore stores n copies of msg as the edge and a worker would have
// left them after delivering it unchanged: message.eml and verdict.json.
func fillStore(tb testing.TB, dir string, n int, msg []byte) {
	tb.Helper()
	store, err := blob.NewFS(dir)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	sender := "alice@example.com"
	for range n {
		now := time.Now()
		id := xid.NewWithTime(now).String()
		key := func(name string) string { return blob.Key(id, now, name) }
		if _, err := store.Put(ctx, key(blob.MessageName), bytes.NewReader(msg), int64(len(msg))); err != nil {
			tb.Fatal(err)
		}
		job := &sluicev1.FilterJob{MessageId: id, MessageKey: key(blob.MessageName), FilteredKey: key(blob.FilteredName),
			RecordKey: key(blob.RecordName), MessageSize: int64(len(msg)), Sender: &sender,
			Recipients: []string{"bob@example.com"}, ClientAddr: "127.0.0.1", Received: timestamppb.New(now)}
		v := &sluicev1.Verdict{MessageId: id, Action: sluicev1.Verdict_ACTION_ACCEPT, Status: "FILTERED",
			DeliverKey: key(blob.MessageName), DeliverSize: int64(len(msg)), Started: timestamppb.New(now),
			Finished: timestamppb.New(now.Add(time.Millisecond))}
		if err := record.Write(ctx, store, job, v); err != nil {
			tb.Fatal(err)
		}
	}
}

// timeReplay runs the replay command over today's and yesterday's
// messages and returns its messages per second, checking it replayed n.
func timeReplay(tb testing.TB, bin string, n int, args ...string) float64 {
	tb.Helper()
	cmd := exec.Command(bin, append(args, "--format", "json", "--only-changed")...)
	cmd.Env = append(os.Environ(), "SLUICE_CONFIG=")
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{b: &stderr, max: 16 << 10}
	start := time.Now()
	out, err := cmd.Output()
	elapsed := time.Since(start)
	if err != nil {
		tb.Fatalf("replay %q: %v\n%s\n%s", args, err, out, stderr.String())
	}
	if !bytes.Contains(out, []byte(fmt.Sprintf(`"messages":%d,"same":%d,`, n, n))) {
		tb.Fatalf("replay %q reported %s", args, out)
	}
	return float64(n) / elapsed.Seconds()
}

// startWorker runs a sluice-worker process with conf until the benchmark
// ends, once it serves its replay pool.
func startWorker(tb testing.TB, bin, conf string, i int) {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "worker.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", path)
	log := &syncBuffer{}
	cmd.Stderr = log
	done := startProcess(tb, cmd)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), "serving replay pools") {
		select {
		case <-done:
			tb.Fatalf("worker %d exited:\n%s", i, log.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("worker %d does not serve its pool:\n%s", i, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer keeps the first 64 KiB a process logs, safe to read while
// it writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := 64<<10 - s.b.Len(); room > 0 {
		s.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
