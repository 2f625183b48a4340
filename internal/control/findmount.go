package control

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/fusefs"
)

// mountType is the file system type a kwikfs mount has in
// /proc/self/mountinfo.
const mountType = "fuse.kwikfs"

// Mount is a kwikfs mount found from a path inside it.
type Mount struct {
	// Root is the mount point.
	Root string
	// Socket is the daemon's control socket.
	Socket string
}

// FindMount returns the kwikfs mount that holds path (a file or directory
// inside it, or its root). It trusts only what the kernel says: the mount
// is the one /proc/self/mountinfo lists for path's device, of type
// fuse.kwikfs, mounted by the caller (or the caller is root); its root
// directory then names the control socket through fusefs.ControlIoctl.
func FindMount(path string) (Mount, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Mount{}, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		return Mount{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(real, filepath.Base(abs))
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Mount{}, fmt.Errorf("find the mount of %s: %w", path, err)
	}
	e, ok := mountOf(info, abs, unix.Major(st.Dev), unix.Minor(st.Dev))
	if !ok || e.fsType != mountType {
		return Mount{}, fmt.Errorf("%s is not inside a kwikfs mount", path)
	}
	if uid := os.Getuid(); uid != 0 && e.owner != uid {
		return Mount{}, fmt.Errorf("the kwikfs mount %s belongs to user %d, not to you (user %d)", e.mountpoint, e.owner, uid)
	}
	sock, err := controlSocketOf(e.mountpoint)
	if err != nil {
		return Mount{}, err
	}
	return Mount{Root: e.mountpoint, Socket: sock}, nil
}

// Rel returns path (inside the mount) relative to the mount's root, in the
// '/'-separated form of the exported tree ("" for the root).
func (m Mount) Rel(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(m.Root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not inside the kwikfs mount %s", path, m.Root)
	}
	if rel == "." {
		return "", nil
	}
	return filepath.ToSlash(rel), nil
}

// controlSocketOf asks the root of the kwikfs mount at root for its
// daemon's control socket.
func controlSocketOf(root string) (string, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(fd)
	var buf [fusefs.ControlPathMax]byte
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fusefs.ControlIoctl, uintptr(unsafe.Pointer(&buf))); errno != 0 {
		return "", fmt.Errorf("ask the kwikfs mount %s for its control socket: %w", root, errno)
	}
	n := bytes.IndexByte(buf[:], 0)
	if n <= 0 {
		return "", fmt.Errorf("the kwikfs mount %s names no control socket", root)
	}
	return string(buf[:n]), nil
}

// mountEntry is the part of a /proc/self/mountinfo line FindMount needs.
type mountEntry struct {
	mountpoint string
	fsType     string
	owner      int // user_id= of a FUSE mount's options; -1 when absent
}

// mountOf returns the entry of mountinfo for device major:minor whose
// mount point holds path (the longest such, for bind mounts).
func mountOf(mountinfo []byte, path string, major, minor uint32) (mountEntry, bool) {
	dev := strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
	var best mountEntry
	found := false
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) || f[2] != dev {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if !within(path, mp) || (found && len(mp) <= len(best.mountpoint)) {
			continue
		}
		e := mountEntry{mountpoint: mp, fsType: f[sep+1], owner: -1}
		if sep+3 < len(f) {
			for _, o := range strings.Split(f[sep+3], ",") {
				if v, ok := strings.CutPrefix(o, "user_id="); ok {
					if id, err := strconv.Atoi(v); err == nil {
						e.owner = id
					}
				}
			}
		}
		best, found = e, true
	}
	return best, found
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, \011,
// \012, \134) of a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
