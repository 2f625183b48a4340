package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The loopback comparison's peers: an sshd and an nginx of the bench's
// own, and FUSE file systems (sshfs, rclone mount) started in the
// foreground.

// peersTools checks that the peers' programs are installed.
func peersTools() error {
	return needTools([]string{"sshfs", "ssh-keygen", "/usr/sbin/sshd", "rclone", "nginx", "fusermount3"},
		"make bench-peers, which installs sshfs, openssh-server, rclone and nginx")
}

// needTools checks that every program of tools (a name on PATH or an
// absolute path) is installed; the error names the missing ones and says
// to run fix.
func needTools(tools []string, fix string) error {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run %s", strings.Join(missing, ", "), fix)
	}
	return nil
}

// sshd is an sshd the bench started on a free port of 127.0.0.1, with its
// own host key, authorized_keys and configuration under work/ssh, and the
// matching ssh client configuration (the bench's key, the host key pinned):
// nothing of the system's ssh configuration is read or changed.
type sshd struct {
	cmd          *exec.Cmd
	clientConfig string
}

func startSSHD(work string) (*sshd, error) {
	dir := filepath.Join(work, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "id_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kwikbench", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return nil, err
	}
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	serverConfig := filepath.Join(dir, "sshd_config")
	clientConfig := filepath.Join(dir, "ssh_config")
	files := map[string]string{
		filepath.Join(dir, "authorized_keys"): string(clientPub),
		filepath.Join(dir, "known_hosts"):     fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub),
		serverConfig: fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
`, port, hostKey, filepath.Join(dir, "authorized_keys")),
		clientConfig: fmt.Sprintf(`Host 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
`, port, clientKey, filepath.Join(dir, "known_hosts")),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	// sshd refuses to start without its privilege separation directory,
	// which the Debian package makes only when its service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", serverConfig)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sshd{cmd: cmd, clientConfig: clientConfig}
	if err := waitSSH(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *sshd) stop() { stopProcess(s.cmd, syscall.SIGTERM) }

// startFUSE starts cmd, a FUSE file system serving mnt in the foreground,
// and waits (up to 20 s) until mnt is mounted and has file. The returned
// func stops cmd, which unmounts, and removes mnt.
func startFUSE(cmd *exec.Cmd, mnt, file string) (stop func(), err error) {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		// An unmount ends the file system as a user's umount does
		// (rclone logs an error on SIGTERM); the signal is the fallback.
		var sig syscall.Signal
		if err := unix.Unmount(mnt, 0); err != nil {
			sig = syscall.SIGTERM
		}
		stopProcess(cmd, sig)
		unix.Unmount(mnt, unix.MNT_DETACH)
		os.Remove(mnt)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := fuseDevice(mnt); err == nil {
			if _, err := os.Stat(filepath.Join(mnt, file)); err == nil {
				return stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s not mounted with %s after 20s", mnt, file)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSSH waits (up to 10 s) until an SSH server answers at addr, and
// says a version (sshd logs a connection closed before it as an error).
func waitSSH(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var banner string
			if banner, err = bufio.NewReader(c).ReadString('\n'); err == nil && !strings.HasPrefix(banner, "SSH-") {
				err = fmt.Errorf("not an SSH server at %s: %q", addr, banner)
			}
			if err == nil {
				_, err = io.WriteString(c, "SSH-2.0-kwikbench\r\n")
			}
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startPeersNginx starts nginx (a master and a worker per core) on a free
// port of 127.0.0.1, exporting tree for rclone's HTTP backend, with its
// configuration under work/nginx. The caller stops it.
func startPeersNginx(work, tree string) (*nginx, error) {
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	return startNginx(nginxSpec{dir: filepath.Join(work, "nginx"), listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), root: tree})
}
