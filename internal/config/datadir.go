package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// systemDataDir is the data_dir of a system install.
const systemDataDir = "/var/lib/sluice"

// defaultDataDir picks data_dir when none is configured: system if that
// directory exists and is writable or could be created (in practice:
// root), else $XDG_STATE_HOME/sluice, else $HOME/.local/state/sluice,
// else tmp/sluice-UID. It only looks; nothing is created here.
func defaultDataDir(system string, env map[string]string, tmp string, uid int) string {
	if usableDir(system) {
		return system
	}
	if x := env["XDG_STATE_HOME"]; filepath.IsAbs(x) {
		return filepath.Join(x, "sluice")
	}
	if h := env["HOME"]; filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "sluice")
	}
	return filepath.Join(tmp, "sluice-"+strconv.Itoa(uid))
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
