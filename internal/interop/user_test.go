package interop

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Issue 9: proxsmtpd's User. Started as root with User: nobody, the edge
// binds, switches every thread to nobody (uid, gid and groups), and its
// filters run as nobody; started as someone else it refuses with
// proxsmtpd's message.
func TestUserSwitch(t *testing.T) {
	if !isRoot() {
		t.Skip("switching users needs root")
	}
	const nobody = "65534"
	dir, err := os.MkdirTemp("", "sluice-user-") // reachable by nobody, unlike t.TempDir
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	sink := startSMTPSink(t)
	addr := "127.0.0.1:" + freePort(t)
	conf := filepath.Join(dir, "edge.conf")
	text := "Listen: " + addr + "\nOutAddress: " + sink.addr + "\nTempDirectory: " + tmp + "\nUser: nobody\n" +
		`FilterCommand: printf 'X-Filter-Uid: %s\n' "$(id -u)"; cat` + "\n" +
		"data_dir: " + filepath.Join(dir, "state", "data") + "\nPidFile: " + filepath.Join(dir, "edge.pid") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startProcess(t, "edge", dir, edgeBin, "-d", "3", "-f", conf)
	e.waitPort(t, addr)

	checkSwaksOK(t, swaks(t, addr, nil))
	ms := sink.waitMessages(t, 1)
	if got := ms[0].header("X-Filter-Uid"); got != nobody {
		t.Errorf("the filter ran as uid %q, want nobody's %s", got, nobody)
	}
	if !strings.Contains(e.stderr.String(), "switched to user nobody (uid 65534, gid 65534)") {
		t.Errorf("no switch in the log:\n%s", e.stderr.String())
	}
	if strings.Contains(e.stderr.String(), "running as root is NOT recommended") {
		t.Error("warned about root although it switched")
	}
	// Every thread, real, effective, saved and file-system ids alike.
	tasks, _ := filepath.Glob(filepath.Join("/proc", itoa(e.pid()), "task", "*", "status"))
	if len(tasks) == 0 {
		t.Fatal("no threads found in /proc")
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
				if f[1] != nobody || f[2] != nobody || f[3] != nobody || f[4] != nobody {
					t.Errorf("%s: %s", task, l)
				}
			}
			if strings.HasPrefix(l, "Groups:") && strings.TrimSpace(strings.TrimPrefix(l, "Groups:")) != nobody {
				t.Errorf("%s: %s (root's groups kept?)", task, l)
			}
		}
	}
	// Root made the missing parent (state) reachable, and data nobody's.
	if fi, err := os.Stat(filepath.Join(dir, "state", "data")); err != nil || !ownedBy(fi, 65534) {
		t.Errorf("data_dir not given to nobody: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "edge.pid")); err != nil || strings.TrimSpace(string(b)) != itoa(e.pid()) {
		t.Errorf("pid file: %q, %v", b, err)
	}

	// Not root: proxsmtpd's refusal. The binary must be reachable by nobody.
	bin := filepath.Join(dir, "edge")
	copyFile(t, edgeBin, bin, 0o755)
	conf2 := filepath.Join(dir, "edge2.conf")
	text2 := strings.Replace(text, addr, "127.0.0.1:"+freePort(t), 1)
	if err := os.WriteFile(conf2, []byte(text2), 0o644); err != nil {
		t.Fatal(err)
	}
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	text2 = strings.Replace(text2, "User: nobody", "User: daemon", 1)
	if err := os.WriteFile(conf2, []byte(text2), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCommand(t, dir, nil, append(asNobody, bin, "-d", "1", "-f", conf2)...)
	if r.code == 0 || !strings.Contains(r.stderr, "must be started as root to switch to user: daemon") {
		t.Errorf("as nobody with User: daemon: exit %d, stderr:\n%s", r.code, r.stderr)
	}

	// Started as that user already (Debian's proxsmtp@.service has
	// User=_proxsmtp, its sample configuration User: _proxsmtp): nothing
	// to switch, it runs.
	addr3 := "127.0.0.1:" + freePort(t)
	text3 := strings.Replace(strings.Replace(text, addr, addr3, 1), "PidFile: "+filepath.Join(dir, "edge.pid")+"\n", "", 1)
	conf3 := filepath.Join(dir, "edge3.conf")
	if err := os.WriteFile(conf3, []byte(text3), 0o644); err != nil {
		t.Fatal(err)
	}
	e3 := startProcess(t, "edge as nobody", dir, append(asNobody, bin, "-d", "3", "-f", conf3)...)
	e3.waitPort(t, addr3)
	checkSwaksOK(t, swaks(t, addr3, nil))
	if !strings.Contains(e3.stderr.String(), "running as user nobody (uid 65534") {
		t.Errorf("started as nobody:\n%s", e3.stderr.String())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// ownedBy reports whether fi's owner is uid.
func ownedBy(fi os.FileInfo, uid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
