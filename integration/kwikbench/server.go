package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// kwikServer is a running kwik-primary or kwik-secondary.
type kwikServer struct {
	addr string // from its "listening on" line: as clients dial it
	cmd  *exec.Cmd
}

// pid returns the server's PID; 0 for a nil server (no such server).
func (s *kwikServer) pid() int {
	if s == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// stop ends the server (SIGTERM, SIGKILL after 10 s) and waits for it.
func (s *kwikServer) stop() { stopProcess(s.cmd, syscall.SIGTERM) }

// serverArgs returns the flags that make binary, kwik-primary or
// kwik-secondary, serve tree on listen with the certificates and keys
// writeCerts wrote to certs, logging at level warn, followed by extra.
func serverArgs(binary, tree, certs, listen string, extra ...string) []string {
	args := []string{"--root", tree, "--listen", listen,
		"--cert", filepath.Join(certs, certgen.CertFile), "--key", filepath.Join(certs, certgen.KeyFile),
		"--log-level", "warn",
		"--client-ca", filepath.Join(certs, certgen.CAFile)}
	if binary == "kwik-primary" {
		args = append(args, "--signing-key", filepath.Join(certs, certgen.SigningKeyFile))
	} else {
		args = append(args, "--verify-key", filepath.Join(certs, certgen.VerifyKeyFile))
	}
	return append(args, extra...)
}

// startKwikServer starts bin/name with args (see serverArgs) and waits for
// its "listening on ADDR" line. With ns set it runs in that network
// namespace under `ip netns exec`, which execs the server in place, so the
// PID is the server's. Its stderr is the bench's, the rest of its stdout
// is discarded, and it is killed if the bench dies. On an error the
// process is stopped; otherwise the caller stops it.
func startKwikServer(bin, name, ns string, args []string) (*kwikServer, error) {
	argv := append([]string{filepath.Join(bin, name)}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &kwikServer{cmd: cmd}
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		s.stop()
		return nil, fmt.Errorf("%s: no listening line (%q): %v", name, line, err)
	}
	s.addr = addr
	go io.Copy(io.Discard, rd)
	return s, nil
}

// writeCerts writes a new CA, server certificate (valid for hosts as well
// as the defaults of certgen.Generate) and signing key (kwikfs certs) to
// work/certs and returns that directory.
func writeCerts(work string, hosts ...string) (string, error) {
	dir := filepath.Join(work, "certs")
	b, err := certgen.Generate(hosts)
	if err != nil {
		return "", err
	}
	return dir, b.WriteDir(dir)
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// freeTCPPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits (up to 10 s) until addr accepts connections.
func waitTCP(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopProcess sends cmd sig, unless 0, and waits for it to exit, killing
// it after 10 s.
func stopProcess(cmd *exec.Cmd, sig syscall.Signal) {
	if sig != 0 {
		cmd.Process.Signal(sig)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
