package natstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ServerVersion is the nats-server release the tests run against; CI
// installs it with deploy/local/test-deps.sh.
const ServerVersion = "2.15.2"

// InstallHint says how to get the right nats-server.
const InstallHint = "install it with: go install github.com/nats-io/nats-server/v2@v" + ServerVersion +
	" (or run deploy/local/test-deps.sh); it goes to $(go env GOPATH)/bin"

// errNoServer means no nats-server of ServerVersion was found: a test
// skips on it unless SLUICE_REQUIRE_TOOLS=1.
var errNoServer = errors.New("no nats-server " + ServerVersion)

// FindServer returns the path of a nats-server binary of ServerVersion,
// looking in $GOBIN, $(go env GOPATH)/bin, then every directory of PATH.
// Another version (Debian ships 2.9) does not do: the error names what it
// found and how to install the right one.
func FindServer() (string, error) {
	var found []string
	seen := map[string]bool{}
	for _, p := range serverCandidates() {
		if seen[p] {
			continue
		}
		seen[p] = true
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			continue
		}
		v, err := binaryVersion(p)
		if err != nil {
			found = append(found, fmt.Sprintf("%s (%v)", p, err))
			continue
		}
		if v == ServerVersion {
			return p, nil
		}
		found = append(found, fmt.Sprintf("%s is v%s", p, v))
	}
	what := "none found"
	if len(found) > 0 {
		what = strings.Join(found, "; ")
	}
	return "", fmt.Errorf("%w (%s); %s", errNoServer, what, InstallHint)
}

func serverCandidates() []string {
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, d := range filepath.SplitList(gopath) {
		if d != "" {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("PATH"))...)
	var out []string
	for _, d := range dirs {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		out = append(out, filepath.Join(d, "nats-server"))
	}
	return out
}

// binaryVersion runs `bin --version`.
func binaryVersion(bin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("--version: %w", err)
	}
	v, ok := parseVersion(string(out))
	if !ok {
		return "", fmt.Errorf("--version said %q", strings.TrimSpace(string(out)))
	}
	return v, nil
}

// parseVersion reads the version out of `nats-server --version`, which
// prints "nats-server: v2.15.2".
func parseVersion(out string) (string, bool) {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	name, v, ok := strings.Cut(line, ":")
	if !ok || strings.TrimSpace(name) != "nats-server" {
		return "", false
	}
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if v == "" || strings.ContainsAny(v, " \t\r") {
		return "", false
	}
	for _, part := range strings.SplitN(v, ".", 3) {
		if part == "" || part[0] < '0' || part[0] > '9' {
			return "", false
		}
	}
	return v, true
}
