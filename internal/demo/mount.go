package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// mountReadyTimeout bounds how long startMount waits for the mount.
const mountReadyTimeout = 30 * time.Second

// mountArgs says how startMount runs `kwikfs mount`.
type mountArgs struct {
	primary    string // HOST:PORT of the primary
	certDir    string // holds the CA and the client certificate and key
	cache      string
	mountpoint string
	extra      []string // more flags, before the mountpoint
}

// startMount runs `kwikfs mount` (the sibling kwikfs binary) in a process
// of its own, so that it can be killed, and returns it once mountpoint is a
// mount that answers. Its standard output and error go to the demo's
// standard error. If the mount does not come up within mountReadyTimeout
// or ctx ends first, the process is stopped and an error returned.
func startMount(ctx context.Context, a mountArgs) (*process, error) {
	args := []string{"mount",
		"--primary", a.primary,
		"--ca", filepath.Join(a.certDir, certgen.CAFile),
		"--cert", filepath.Join(a.certDir, certgen.ClientCertFile),
		"--key", filepath.Join(a.certDir, certgen.ClientKeyFile),
		"--cache", a.cache,
		"--log-level", "error"}
	args = append(append(args, a.extra...), a.mountpoint)
	p, err := startProcess("kwikfs", os.Stderr, os.Stderr, args...)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(mountReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if live, _ := mounted(a.mountpoint); live {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("kwikfs mount exited before mounting %s: %v", a.mountpoint, p.err)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-deadline.C:
			p.stop()
			return nil, fmt.Errorf("%s not mounted after %v", a.mountpoint, mountReadyTimeout)
		case <-tick.C:
		}
	}
}

// mounted reports whether dir is the root of a mount: live, when it
// answers (its device differs from its parent's), or dead, when the
// daemon serving it has gone (the kernel answers ENOTCONN or ECONNABORTED,
// the state a FUSE mount is left in when its daemon is killed).
func mounted(dir string) (live, dead bool) {
	var st, parent syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return false, errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
	}
	if err := syscall.Stat(filepath.Dir(filepath.Clean(dir)), &parent); err != nil {
		return false, false
	}
	return st.Dev != parent.Dev, false
}

// detach unmounts dir lazily (MNT_DETACH): what a killed daemon's dead
// mount needs before dir can be mounted again. Without the privilege to
// unmount, it asks fusermount3 (which may unmount what the user mounted).
func detach(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if errors.Is(err, syscall.EPERM) {
		if out, ferr := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); ferr != nil {
			return fmt.Errorf("fusermount3 -u -z %s: %w: %s", dir, ferr, out)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}
