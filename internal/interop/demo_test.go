package interop

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemo is what a newcomer does (`make run`, deploy/local/demo.sh):
// cmd/sink behind the edge started from the repository root with
// deploy/examples/proxsmtpd.conf (only its ports changed) and swaks in
// front. A message is delivered with the demo filter's tag and the
// configured Header; a message containing REJECT-ME is refused with 550.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	sinkAddr := "127.0.0.1:" + freePort(t)
	edgeAddr := "127.0.0.1:" + freePort(t)

	src, err := os.ReadFile(filepath.Join(moduleRoot, "deploy", "examples", "proxsmtpd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := setOption(t, string(src), "Listen", edgeAddr)
	conf = setOption(t, conf, "OutAddress", sinkAddr)
	confPath := filepath.Join(dir, "proxsmtpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	mailDir := filepath.Join(dir, "sink-mail")
	sink := startProcess(t, "sink", dir, sinkBin, "-listen", sinkAddr, "-dir", mailDir)
	sink.waitPort(t, sinkAddr)
	// From the repository root, as demo.sh: the example's FilterCommand is
	// a relative path.
	e := startProcess(t, "edge", moduleRoot, edgeBin, "-d", "3", "-f", confPath, "--data-dir", filepath.Join(dir, "data"))
	e.waitPort(t, edgeAddr)

	r := swaks(t, edgeAddr, nil)
	checkSwaksOK(t, r)
	files, _ := filepath.Glob(filepath.Join(mailDir, "*.eml"))
	if len(files) != 1 {
		t.Fatalf("the demo sink stored %d messages, want 1", len(files))
	}
	got, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	text := "\n" + strings.ReplaceAll(string(got), "\r\n", "\n")
	for _, want := range []string{"\nSubject: [filtered by sluice] test ", "\nX-Filtered: by sluice for 127.0.0.1 at "} {
		if !strings.Contains(text, want) {
			t.Errorf("delivered message lacks %q:\n%s", strings.TrimSpace(want), got)
		}
	}

	r = swaks(t, edgeAddr, nil, "--body", "REJECT-ME please")
	if r.code != 26 {
		t.Errorf("swaks exit status %d, want 26 (mail refused after DATA)\n%s", r.code, r.stdout)
	}
	if got := dataReply(t, r.stdout); !strings.HasPrefix(got, "550 5.7.1 Rejected by the demo filter") {
		t.Errorf("reply to a REJECT-ME message: %q, want the demo filter's 550 5.7.1", got)
	}
	if files, _ := filepath.Glob(filepath.Join(mailDir, "*.eml")); len(files) != 1 {
		t.Errorf("the demo sink stored %d messages, want still 1", len(files))
	}
}

// setOption replaces the one active "Name: value" line of a
// proxsmtpd.conf; the example must keep exactly one.
func setOption(t *testing.T, conf, name, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?mi)^` + regexp.QuoteMeta(name) + `:.*$`)
	if n := len(re.FindAllString(conf, -1)); n != 1 {
		t.Fatalf("deploy/examples/proxsmtpd.conf has %d active %s lines, want 1", n, name)
	}
	return re.ReplaceAllLiteralString(conf, name+": "+value)
}
