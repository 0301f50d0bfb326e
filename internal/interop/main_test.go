// Package interop runs sluice's real binaries (built once, started as
// processes on loopback) between real third-party mail software: swaks and
// Postfix's smtp-source in front, Postfix's smtp-sink and the demo sink
// behind. It holds tests only.
//
// A missing tool skips its tests with a message, unless
// SLUICE_REQUIRE_TOOLS=1 (CI), which turns the skip into a failure.
package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testVersion is baked into the binaries, so that `edge -v` can be checked.
const testVersion = "interop-test"

// Set by TestMain, read only afterwards.
var (
	moduleRoot string // the checkout, where README's commands run
	edgeBin    string
	sinkBin    string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "sluice-interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	edgeBin = filepath.Join(dir, "edge")
	sinkBin = filepath.Join(dir, "sink")
	for _, b := range []struct{ out, pkg string }{{edgeBin, "./cmd/edge"}, {sinkBin, "./cmd/sink"}} {
		cmd := exec.Command("go", "build", "-ldflags", "-X github.com/sluice-mail/sluice/internal/wiring.Version="+testVersion, "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "interop: go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// findModuleRoot walks up from the package directory to go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// tool finds a third-party program on PATH or in the sbin directories
// (Postfix's tools live in /usr/sbin, which a plain user's PATH lacks).
// A missing tool skips the test, or fails it under SLUICE_REQUIRE_TOOLS=1.
func tool(t testing.TB, name, debPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found (apt-get install %s, or deploy/local/test-deps.sh)", name, debPackage)
	if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s, and SLUICE_REQUIRE_TOOLS=1", msg)
	}
	t.Skipf("%s; set SLUICE_REQUIRE_TOOLS=1 to fail instead", msg)
	return ""
}

// childEnv is the environment for the programs under test: ours without
// SLUICE_* variables, which would configure the edge (CI sets
// SLUICE_REQUIRE_TOOLS, which the edge would warn about as unknown).
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
