package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// PrivateDir makes sure dir is a directory only its owner, the caller, can
// enter: it creates it (and missing parents) with mode 0700, and takes the
// group's and others' permissions off an existing one, saying so in the
// log. The cache directory holds the mount's control socket and the
// cached data of files the caller may read and others not. A symbolic
// link, a non-directory, or a directory that belongs to another user is
// refused.
func PrivateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (a symbolic link is not taken either)", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to user %d, not to you (user %d): give a directory of your own", dir, sys.Uid, os.Geteuid())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, perm&^0o077|0o700); err != nil {
			return err
		}
		log.Warn("cache directory was open to others; now only its owner may enter it",
			"dir", dir, "was", fmt.Sprintf("%#o", perm), "now", fmt.Sprintf("%#o", perm&^0o077|0o700))
	}
	return nil
}
