package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
)

// benchMount is a running kwikfs mount.
type benchMount struct {
	dir string
	ctl *control.Client
	cmd *exec.Cmd
}

// startMount starts `kwikfs mount` of the primary at addr, trusting the CA
// in certDir, on cache, at a new mountpoint under work, with extra flags,
// and waits until its control socket answers (a mount whose primary is
// down comes up after the daemon's start-up probe gives up, up to 3 s).
// The daemon is killed if the bench dies; otherwise the caller closes m.
func startMount(bin, certDir, work, addr, cache string, extra ...string) (*benchMount, error) {
	mnt, err := os.MkdirTemp(work, "mnt-")
	if err != nil {
		return nil, err
	}
	args := append([]string{"mount", "--primary", addr, "--ca", filepath.Join(certDir, certgen.CAFile),
		"--cert", filepath.Join(certDir, certgen.ClientCertFile), "--key", filepath.Join(certDir, certgen.ClientKeyFile),
		"--cache", cache}, extra...)
	cmd := exec.Command(filepath.Join(bin, "kwikfs"), append(args, mnt)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.Remove(mnt)
		return nil, err
	}
	m := &benchMount{dir: mnt, cmd: cmd}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if found, err := control.FindMount(mnt); err == nil && found.Root == mnt {
			m.ctl = control.NewClient(found.Socket)
			return m, nil
		}
		if time.Now().After(deadline) {
			m.close()
			return nil, fmt.Errorf("mount at %s not up after 60s", mnt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close stops the daemon (it unmounts) and removes the mountpoint.
func (m *benchMount) close() {
	if m.ctl != nil {
		m.ctl.Close()
	}
	m.cmd.Process.Signal(syscall.SIGINT)
	m.cmd.Wait()
	unix.Unmount(m.dir, unix.MNT_DETACH)
	os.Remove(m.dir)
}

// waitPathsUp waits (up to 10 s) until want paths of m are up, by the
// daemon's status. The session and its secondary paths come up on the
// mount's first request: the caller makes one (a stat) first.
func (m *benchMount) waitPathsUp(want int) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := m.ctl.Status(context.Background())
		if err != nil {
			return err
		}
		up := 0
		for _, p := range st.Paths {
			if p.State == "up" {
				up++
			}
		}
		if up >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d paths up after 10s", up, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fuseDevice returns the "major:minor" of the last mount on mnt, from
// /proc/self/mountinfo (stat(2) would ask the FUSE server).
func fuseDevice(mnt string) (string, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == mnt {
			dev = f[2]
		}
	}
	if dev == "" {
		return "", fmt.Errorf("%s not in /proc/self/mountinfo", mnt)
	}
	return dev, nil
}
