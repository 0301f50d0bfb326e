// Package privs is proxsmtpd's User option: the account to run as, looked
// up at start-up, and the switch to it once the listeners are bound. On
// Linux Go changes the credentials of every thread of the process, so
// nothing keeps root after Drop, and every filter started afterwards runs
// as that account.
package privs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Account is the user to run as, with its primary and supplementary
// groups.
type Account struct {
	Name   string
	UID    int
	GID    int
	Groups []int
}

// Lookup finds name, a user name or a numerical user id, as proxsmtpd
// does.
func Lookup(name string) (*Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if _, nerr := strconv.Atoi(name); nerr == nil && errors.As(err, &unknown) {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return nil, err
		}
	}
	a := &Account{Name: u.Username}
	if a.UID, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("user %s: uid %q", name, u.Uid)
	}
	if a.GID, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("user %s: gid %q", name, u.Gid)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %s: groups: %w", name, err)
	}
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			a.Groups = append(a.Groups, n)
		}
	}
	return a, nil
}

// ErrNotRoot is proxsmtpd's refusal to switch users without root.
var ErrNotRoot = errors.New("not root")

// Own makes dir belong to the account: root makes it for the account
// before the switch (0700), and any missing parents (0755, root's, so
// that the account can reach it).
func (a *Account) Own(dir string) error {
	var missing []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			break
		}
		missing = append(missing, p)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	for _, p := range missing {
		if err := os.Chmod(p, 0o755); err != nil { // whatever the umask
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Lchown(dir, a.UID, a.GID)
}

// Drop switches the whole process to the account: its supplementary
// groups, its group, then its user, with the real, effective and saved
// ids alike, so that root cannot be regained. The process must be root.
func (a *Account) Drop() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if err := syscall.Setgroups(a.Groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(a.GID, a.GID, a.GID); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(a.UID, a.UID, a.UID); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if a.UID != 0 && (os.Getuid() == 0 || os.Geteuid() == 0 || syscall.Setuid(0) == nil) {
		return errors.New("unable to completely drop privileges")
	}
	return nil
}
