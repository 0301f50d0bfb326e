package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bins are the edge and worker binaries TestMain builds once.
var bins struct {
	edge, worker string
}

// summary is the file every test appends its counts to, so that one run's
// fault table can be quoted; TestMain names it.
var summary struct {
	mu   sync.Mutex
	path string
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	summary.path = filepath.Join(os.TempDir(), "sluice-faults-"+time.Now().Format("20060102-150405")+".txt")
	return m.Run()
}

// build compiles cmd/edge and cmd/worker from the module root into dir.
func build(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bins.edge = filepath.Join(dir, "edge")
	bins.worker = filepath.Join(dir, "worker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir, "./cmd/edge", "./cmd/worker")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/edge ./cmd/worker: %w\n%s", err, out)
	}
	return nil
}

// report logs one test's counts and appends them to the summary file.
func report(t *testing.T, line string) {
	t.Helper()
	t.Logf("%s: %s", t.Name(), line)
	summary.mu.Lock()
	defer summary.mu.Unlock()
	f, err := os.OpenFile(summary.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Logf("summary file: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%-40s %s\n", t.Name(), line)
	t.Logf("summary appended to %s", summary.path)
}
