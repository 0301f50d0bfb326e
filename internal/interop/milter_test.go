package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 11: Debian's OpenDKIM as a milter in signing mode, with a key
// this test generates. The message the upstream receives carries a
// DKIM-Signature that an independent verifier (dkimpy, Debian's
// python3-dkim, given the public key instead of DNS) accepts.
func TestMilterOpenDKIM(t *testing.T) {
	opendkim := tool(t, "opendkim", "opendkim")
	genkey := tool(t, "opendkim-genkey", "opendkim-tools")
	verifier := dkimVerifier(t)
	dir := t.TempDir()
	runCommandOK(t, dir, genkey, "-D", dir, "-d", "example.com", "-s", "test")
	port := freePort(t)
	conf := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		"Mode s",
		"Domain example.com",
		"Selector test",
		"KeyFile " + filepath.Join(dir, "test.private"),
		"Socket inet:" + port + "@127.0.0.1",
		"Canonicalization relaxed/simple",
		"Syslog no",
		"Background no",
		"PidFile " + filepath.Join(dir, "opendkim.pid"),
		"InternalHosts 127.0.0.1, 192.0.2.0/24",
		"RequireSafeKeys no", // the test key lives under /tmp, which others may write
		"",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	dkim := startProcess(t, "opendkim", dir, opendkim, "-f", "-x", conf)
	dkim.waitPort(t, "127.0.0.1:"+port)

	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nFilterCommand: cat\nfilter.milters: inet:127.0.0.1:"+port+"\n")
	checkSwaksOK(t, swaks(t, e.addr, nil, "--header", "Subject: signed by OpenDKIM through sluice",
		"--body", "Hello Bob,\nthis message is signed.\n"))
	// A second one, on the connection to OpenDKIM the first left (QUIT_NC).
	checkSwaksOK(t, swaks(t, e.addr, nil, "--header", "Subject: the second", "--body", "Again.\n"))
	ms := sink.waitMessages(t, 2)
	if ms[0].header("Subject") != "signed by OpenDKIM through sluice" {
		ms[0], ms[1] = ms[1], ms[0]
	}
	if !strings.Contains(ms[1].header("DKIM-Signature"), "d=example.com") {
		t.Errorf("the second message is not signed:\n%s", ms[1].raw)
	}
	if strings.Contains(e.stderr.String(), "QUIT_NC") {
		t.Log("OpenDKIM did not answer on a reused connection: the edge went to one connection per message")
	}
	sig := ms[0].header("DKIM-Signature")
	if !strings.Contains(sig, "d=example.com") || !strings.Contains(sig, "s=test") {
		t.Fatalf("delivered without OpenDKIM's signature (DKIM-Signature %q):\n%s", sig, ms[0].raw)
	}
	t.Logf("delivered DKIM-Signature: %s", sig)

	msg := filepath.Join(dir, "delivered.eml")
	if err := os.WriteFile(msg, ms[0].raw, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCommand(t, dir, nil, verifier, "-c", verifyScript, msg, filepath.Join(dir, "test.txt"))
	t.Logf("dkimpy: %s", strings.TrimSpace(r.stdout+r.stderr))
	if r.code != 0 || !strings.Contains(r.stdout, "signature ok") {
		t.Errorf("dkimpy does not accept the signature (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The same message, changed after signing, fails: the verifier is
	// not one that accepts anything.
	tampered := strings.Replace(string(ms[0].raw), "this message is signed", "this message is forged", 1)
	if err := os.WriteFile(msg, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCommand(t, dir, nil, verifier, "-c", verifyScript, msg, filepath.Join(dir, "test.txt")); r.code == 0 {
		t.Errorf("dkimpy accepted a changed body:\n%s", r.stdout)
	}
}

// verifyScript checks the DKIM signature of argv[1] with the public key
// of opendkim-genkey's TXT file argv[2] standing in for DNS.
const verifyScript = `
import re, sys, dkim
msg = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
txt = "".join(re.findall(r'"([^"]*)"', open(sys.argv[2]).read())).encode()
def dns(name, timeout=5):
    return txt if name.startswith(b"test._domainkey.example.com") else None
if dkim.verify(msg, dnsfunc=dns):
    print("signature ok")
else:
    print("signature BAD")
    sys.exit(1)
`

// dkimVerifier is a Python with dkimpy (python3-dkim).
func dkimVerifier(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if r := runCommand(t, "", nil, py, "-c", "import dkim"); r.code != 0 {
		tool(t, "dkimpy-for-python3", "python3-dkim") // skips, or fails under SLUICE_REQUIRE_TOOLS
	}
	return py
}

// runCommandOK is runCommand that fails the test on a non-zero exit.
func runCommandOK(t *testing.T, dir string, argv ...string) result {
	t.Helper()
	r := runCommand(t, dir, nil, argv...)
	if r.code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// Issue 11: spamass-milter in front of Debian's spamd (local rules only,
// no network tests). GTUBE is refused with the milter's own reply and
// not delivered; a plain message is delivered with SpamAssassin's
// X-Spam headers.
func TestMilterSpamAssassin(t *testing.T) {
	spamd := tool(t, "spamd", "spamd")
	milterBin := tool(t, "spamass-milter", "spamass-milter")
	dir := t.TempDir()
	spamdPort, milterPort := freePort(t), freePort(t)
	args := []string{spamd, "-L", "--listen", "127.0.0.1:" + spamdPort, "--max-children", "2", "--nouser-config",
		"--syslog", "stderr", "--pidfile", filepath.Join(dir, "spamd.pid")}
	if isRoot() {
		args = append(args, "-u", "nobody")
	}
	sd := startProcess(t, "spamd", dir, args...)
	sd.waitPort(t, "127.0.0.1:"+spamdPort)
	sm := startProcess(t, "spamass-milter", dir, milterBin, "-p", "inet:"+milterPort+"@127.0.0.1", "-r", "15",
		"--", "-d", "127.0.0.1", "-p", spamdPort)
	sm.waitPort(t, "127.0.0.1:"+milterPort)

	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nfilter.milters: inet:127.0.0.1:"+milterPort+"\n")
	const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	r := swaks(t, e.addr, nil, "--header", "Subject: spam", "--body", "Buy now\n"+gtube+"\n")
	got := dataReply(t, r.stdout)
	t.Logf("GTUBE: %s", got)
	if !strings.HasPrefix(got, "5") || !strings.Contains(got, "SpamAssassin") {
		t.Errorf("GTUBE: final reply %q, want spamass-milter's 5xx", got)
	}
	checkSwaksOK(t, swaks(t, e.addr, nil, "--header", "Subject: lunch", "--body", "Shall we meet at noon?\n"))
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 || ms[0].header("Subject") != "lunch" {
		t.Fatalf("delivered %d messages; want only the ham", len(ms))
	}
	t.Logf("ham delivered with X-Spam-Status: %s", ms[0].header("X-Spam-Status"))
	if st := ms[0].header("X-Spam-Status"); !strings.HasPrefix(st, "No") || ms[0].header("X-Spam-Checker-Version") == "" {
		t.Errorf("ham delivered without SpamAssassin's headers (X-Spam-Status %q):\n%s", st, ms[0].raw)
	}
}

// Issue 11: rspamd's proxy worker in milter mode, scanning itself
// (self_scan), from Debian's rspamd with a local configuration directory
// the test writes: the normal, controller and fuzzy workers off, DNS at a
// closed local port (no network here), milter_headers adding
// X-Spamd-Result also for local senders. GTUBE is refused with rspamd's
// reply; a plain message is delivered with rspamd's header.
func TestMilterRspamd(t *testing.T) {
	rspamd := tool(t, "rspamd", "rspamd")
	dir := t.TempDir()
	port := freePort(t)
	files := map[string]string{
		"local.d/worker-proxy.inc": `bind_socket = "127.0.0.1:` + port + `";
milter = yes;
timeout = 60s;
upstream "local" { default = yes; self_scan = yes; }
`,
		"local.d/logging.inc":              "type = \"console\";\nlevel = \"notice\";\n",
		"local.d/options.inc":              "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 1s; retransmits = 1; }\n",
		"local.d/milter_headers.conf":      "use = [\"x-spamd-result\"];\nskip_local = false;\nskip_authenticated = false;\n",
		"override.d/worker-normal.inc":     "enabled = false;\n",
		"override.d/worker-controller.inc": "enabled = false;\n",
		"override.d/worker-fuzzy.inc":      "enabled = false;\n",
	}
	for _, sub := range []string{"local.d", "override.d", "run", "db", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{rspamd, "-f", "-i", "-c", "/etc/rspamd/rspamd.conf",
		"--var", "LOCAL_CONFDIR=" + dir, "--var", "RUNDIR=" + filepath.Join(dir, "run"),
		"--var", "DBDIR=" + filepath.Join(dir, "db"), "--var", "LOGDIR=" + filepath.Join(dir, "log")}
	if isRoot() {
		args = append(args, "-u", "root", "-g", "root") // rspamd refuses root unless told
	}
	rs := startProcess(t, "rspamd", dir, args...)
	// rspamd's main process stops its workers on SIGTERM; a SIGKILL would
	// leave them behind.
	t.Cleanup(func() { rs.stop(t) })
	rs.waitPort(t, "127.0.0.1:"+port)

	sink := startSMTPSink(t)
	e := startEdge(t, "OutAddress: "+sink.addr+"\nfilter.milters: inet:127.0.0.1:"+port+"\n")
	const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	r := swaks(t, e.addr, nil, "--header", "Subject: spam", "--body", "Buy now\n"+gtube+"\n")
	got := dataReply(t, r.stdout)
	t.Logf("GTUBE: %s", got)
	if !strings.HasPrefix(got, "5") || !strings.Contains(strings.ToLower(got), "gtube") {
		t.Errorf("GTUBE: final reply %q, want rspamd's 5xx", got)
	}
	checkSwaksOK(t, swaks(t, e.addr, nil, "--header", "Subject: lunch", "--body", "Shall we meet at noon?\n"))
	ms := sink.waitMessages(t, 1)
	if len(ms) != 1 || ms[0].header("Subject") != "lunch" {
		t.Fatalf("delivered %d messages; want only the ham", len(ms))
	}
	res := ms[0].header("X-Spamd-Result")
	t.Logf("ham delivered with X-Spamd-Result: %s", res)
	if !strings.HasPrefix(res, "default: False") {
		t.Errorf("ham delivered without rspamd's verdict header (X-Spamd-Result %q):\n%s", res, ms[0].raw)
	}
}
