package download

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/transfer"
)

// permBits are the bits of an os.FileMode that transfer.FileMode sets.
const permBits = os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky

// ensureDir makes sure local is a directory the run can write into. A
// missing one is made with mode 0700 (setDirAttrs gives it its own mode
// once its contents are written); an existing one lacking the owner's
// rwx gets them for the time being; a file or link in its place is
// removed.
func ensureDir(local string) error {
	fi, err := os.Lstat(local)
	switch {
	case err == nil && fi.IsDir():
		if fi.Mode().Perm()&0o700 != 0o700 {
			return os.Chmod(local, fi.Mode()&permBits|0o700)
		}
		return nil
	case err == nil:
		if err := os.Remove(local); err != nil {
			return fmt.Errorf("replace %s with a directory: %w", local, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	return os.Mkdir(local, 0o700)
}

// setDirAttrs gives directory local the permission bits and mtime of a.
func setDirAttrs(local string, a transfer.Attr) error {
	if err := os.Chmod(local, transfer.FileMode(a.Mode)); err != nil {
		return err
	}
	mt := time.Unix(0, a.MtimeNs)
	return os.Chtimes(local, mt, mt)
}

// ensureLink makes local a symbolic link to target with the mtime of a,
// keeping a link already there with that target and replacing a file or
// another link; a directory in its place is an error.
func ensureLink(local, target string, a transfer.Attr) error {
	fi, err := os.Lstat(local)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		if t, err := os.Readlink(local); err == nil && t == target {
			return setLinkTime(local, a.MtimeNs)
		}
		if err := os.Remove(local); err != nil {
			return err
		}
	case err == nil && fi.IsDir():
		return fmt.Errorf("%s is a directory: not replaced by a symbolic link", local)
	case err == nil:
		if err := os.Remove(local); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	if err := os.Symlink(target, local); err != nil {
		return err
	}
	return setLinkTime(local, a.MtimeNs)
}

// setLinkTime sets the mtime (and atime) of link local itself.
func setLinkTime(local string, mtimeNs int64) error {
	ts := unix.NsecToTimespec(mtimeNs)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, local, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mtime of %s: %w", local, err)
	}
	return nil
}

// complete reports whether local already holds the regular file a
// describes: a regular file of the same size and mtime, to the
// nanosecond (the quick check of the package documentation). Its
// permission bits are corrected when they differ. A directory in its
// place is an error: it is not replaced.
func complete(local string, a transfer.Attr) (bool, error) {
	fi, err := os.Lstat(local)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case fi.IsDir():
		return false, fmt.Errorf("%s is a directory: not replaced by a file", local)
	case !fi.Mode().IsRegular() || fi.Size() != a.Size || fi.ModTime().UnixNano() != a.MtimeNs:
		return false, nil
	}
	if want := transfer.FileMode(a.Mode); fi.Mode()&permBits != want {
		if err := os.Chmod(local, want); err != nil {
			return false, err
		}
	}
	return true, nil
}
