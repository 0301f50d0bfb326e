package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// systemDataDir is the data_dir of a system install.
const systemDataDir = "/var/lib/sluice"

// proxsmtpInstances is where Debian's proxsmtp package keeps one
// configuration file per instance (proxsmtp@NAME.service).
const proxsmtpInstances = "/etc/proxsmtp"

// dataDirContext is what the default data_dir depends on.
type dataDirContext struct {
	system   string            // systemDataDir
	instance string            // a proxsmtp instance's name, "" for none
	env      map[string]string // the process's environment
	tmp      string            // os.TempDir()
	uid      int
}

// instanceOf is the proxsmtp instance a configuration file belongs to:
// NAME for /etc/proxsmtp/NAME.conf, else "". Two instances on one host
// must not share a data_dir (the embedded NATS server's store is there).
func instanceOf(configFile string) string {
	if filepath.Dir(configFile) != proxsmtpInstances || filepath.Ext(configFile) != ".conf" {
		return ""
	}
	return strings.TrimSuffix(filepath.Base(configFile), ".conf")
}

// defaultDataDir picks data_dir when none is configured, for a daemon as
// for a user, and returns a warning when the choice does not survive a
// reboot. In order: systemd's $STATE_DIRECTORY (StateDirectory=, made
// for the unit with its user as owner); the system directory (per
// instance), if it exists and is writable or could be created (in
// practice: root); $XDG_STATE_HOME/sluice; $HOME/.local/state/sluice if
// that home exists (a system user's often does not: /nonexistent); else
// tmp/sluice-UID. It only looks; nothing is created here.
func defaultDataDir(d dataDirContext) (dir, warning string) {
	if s := d.env["STATE_DIRECTORY"]; s != "" {
		if first, _, _ := strings.Cut(s, ":"); filepath.IsAbs(first) {
			return first, ""
		}
	}
	system := filepath.Join(d.system, d.instance)
	if usableDir(system) {
		return system, ""
	}
	if x := d.env["XDG_STATE_HOME"]; filepath.IsAbs(x) {
		return filepath.Join(x, "sluice", d.instance), ""
	}
	if h := d.env["HOME"]; filepath.IsAbs(h) && isDir(h) {
		return filepath.Join(h, ".local", "state", "sluice", d.instance), ""
	}
	name := "sluice-" + strconv.Itoa(d.uid)
	if d.instance != "" {
		name += "-" + d.instance
	}
	dir = filepath.Join(d.tmp, name)
	return dir, "data_dir is not set and " + system + " is not writable: using " + dir +
		", whose stored messages do not outlive the machine's temporary files; set data_dir (or create " +
		system + " for this user)"
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// usableDir reports whether dir is a writable directory, or is missing
// and its parent is a writable directory.
func usableDir(dir string) bool {
	const wx = 0x2 | 0x1 // W_OK | X_OK
	fi, err := os.Stat(dir)
	switch {
	case err == nil:
		return fi.IsDir() && syscall.Access(dir, wx) == nil
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dir)
		pi, err := os.Stat(parent)
		return err == nil && pi.IsDir() && syscall.Access(parent, wx) == nil
	}
	return false
}
