// Package demo runs kwikfs end to end on one machine: a sample tree, fresh
// certificates, a primary on loopback started from the kwik-primary binary,
// and a mount, until the context ends. It backs `kwikfs demo` and `make demo`.
package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/daemon"
)

// Config says where the demo keeps its files.
type Config struct {
	Dir        string // working directory: certs/, tree/, cache/ go here
	Tree       string // tree to export; "" makes a sample tree in Dir/tree
	Mountpoint string // created if missing
	Logger     *slog.Logger
}

// Run sets the demo up, prints what to try on out, and serves until ctx is
// done; then it unmounts and stops the primary.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	certDir := filepath.Join(cfg.Dir, "certs")
	if _, err := os.Stat(filepath.Join(certDir, certgen.CAFile)); errors.Is(err, os.ErrNotExist) {
		b, err := certgen.Generate(nil)
		if err != nil {
			return err
		}
		if err := b.WriteDir(certDir); err != nil {
			return err
		}
	}
	tree := cfg.Tree
	if tree == "" {
		tree = filepath.Join(cfg.Dir, "tree")
		if _, err := os.Stat(tree); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(out, "making a sample tree in %s ...\n", tree)
			if err := MakeSampleTree(tree); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(cfg.Mountpoint, 0o755); err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	primary, addr, err := startPrimary(tree, certDir)
	if err != nil {
		return err
	}
	defer stopProcess(primary)

	mnt := cfg.Mountpoint
	ready := func() {
		fmt.Fprintf(out, `
kwikfs demo is running.
  primary   %s  exporting %s
  mount     %s  (cache in %s)

Try, in another terminal:
  ls -lR %[3]s | head
  cat %[3]s/README.txt
  time cat %[3]s/big/sample-64MiB.bin > /dev/null      # fetched from the primary, verified, stored
  cp -r %[3]s /tmp/kwikfs-copy && diff -r %[2]s /tmp/kwikfs-copy && echo identical
  bin/kwikfs status %[3]s

Press Ctrl-C to unmount and stop everything.
`, addr, tree, mnt, filepath.Join(cfg.Dir, "cache"))
	}
	err = daemon.Run(ctx, daemon.Config{
		Primary:    addr,
		CAFile:     filepath.Join(certDir, certgen.CAFile),
		CacheDir:   filepath.Join(cfg.Dir, "cache"),
		Mountpoint: mnt,
		Logger:     cfg.Logger,
	}, ready)
	fmt.Fprintln(out, "\nunmounted; stopping the primary")
	return err
}

// startPrimary runs kwik-primary (from the directory of this executable, or
// PATH) on a free loopback port and returns the process and its address.
func startPrimary(tree, certDir string) (*exec.Cmd, string, error) {
	bin, err := siblingBinary("kwik-primary")
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(bin,
		"--root", tree, "--listen", "127.0.0.1:0",
		"--cert", filepath.Join(certDir, certgen.CertFile),
		"--key", filepath.Join(certDir, certgen.KeyFile),
		"--cluster-key", filepath.Join(certDir, certgen.ClusterKeyFile),
		"--log-level", "warn")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", bin, err)
	}
	addr, err := readListenAddr(stdout, 10*time.Second)
	if err != nil {
		stopProcess(cmd)
		return nil, "", fmt.Errorf("kwik-primary: %w", err)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, addr, nil
}

// readListenAddr waits for the "listening on ADDR" line a kwik server prints.
func readListenAddr(r io.Reader, timeout time.Duration) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				found <- addr
				return
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			return "", errors.New("exited before listening")
		}
		return addr, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("not listening after %v", timeout)
	}
}

func siblingBinary(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found beside kwikfs or on PATH (run make build): %w", name, err)
	}
	return p, nil
}

// stopProcess sends SIGTERM, waits up to 5 s, then kills.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
