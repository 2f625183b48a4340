package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// loopEnv is what the loopback benches (--peers, --small) share: the
// binaries, a work directory, the directory every server serves, the
// bench's certificates and a count of the caches made so far. Its zero
// value is not usable: bin, work, root and probe must be set, and certs
// to writeCerts' directory before a server starts.
type loopEnv struct {
	bin   string // directory of kwikfs, kwik-primary and kwik-secondary
	work  string // where caches, mountpoints and the certificates go
	root  string // the directory every server (kwik, sshd) serves
	probe string // the entry of root a new mount stats (see mount)
	certs string // the certificates (writeCerts)
	n     int    // caches made so far
}

// cachePath returns a new, not yet existing, cache directory under work.
func (e *loopEnv) cachePath() string {
	e.n++
	return filepath.Join(e.work, fmt.Sprintf("cache-%d", e.n))
}

// startServer starts bin/name (kwik-primary or kwik-secondary) serving
// root with the bench's certificates and extra flags on listen (a free
// port of 127.0.0.1 when ""), and waits for its "listening on" line. The
// caller stops it.
func (e *loopEnv) startServer(name, listen string, extra ...string) (*kwikServer, error) {
	if listen == "" {
		port, err := freeUDPPort()
		if err != nil {
			return nil, err
		}
		listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	return startKwikServer(e.bin, name, "", serverArgs(name, e.root, e.certs, listen, extra...))
}

// mount starts `kwikfs mount` of addr on cache (logging at level warn) and
// stats probe in it: the session comes up on the first request, so the
// measured operation does not include the dial. The caller closes the
// mount.
func (e *loopEnv) mount(addr, cache string) (*benchMount, error) {
	m, err := startMount(e.bin, e.certs, e.work, addr, cache, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(m.dir, e.probe)); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// sshfsCommand returns the command that mounts root with sshfs at mnt, a
// new directory under work, as the tables compare it: as root over ssh to
// the bench's sshd s, AES-128-GCM, up to 4 connections, read-only, in the
// foreground. Start it with startFUSE (probe is the file to wait for). It
// runs in a process group of its own (sshfs runs ssh in a grandchild), so
// that groupCPU counts them together.
func (e *loopEnv) sshfsCommand(s *sshd) (cmd *exec.Cmd, mnt string, err error) {
	if mnt, err = os.MkdirTemp(e.work, "sshfs-"); err != nil {
		return nil, "", err
	}
	cmd = exec.Command("sshfs", "-f", "-F", s.clientConfig,
		"-o", "ro,Ciphers=aes128-gcm@openssh.com,max_conns=4", "127.0.0.1:"+e.root, mnt)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd, mnt, nil
}
