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
	"sync"
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
	if _, err := os.Stat(filepath.Join(certDir, certgen.SigningKeyFile)); errors.Is(err, os.ErrNotExist) {
		// None yet, or a demo's from before signing keys: the demo makes
		// its own afresh.
		if err := os.RemoveAll(certDir); err != nil {
			return err
		}
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
	// Two secondaries mirror the tree (here: the same directory), and the
	// primary tells every client to add them as paths.
	var secondaries []string
	for range 2 {
		sec, secAddr, err := startServer("kwik-secondary", tree, certDir)
		if err != nil {
			return err
		}
		defer stopProcess(sec)
		secondaries = append(secondaries, secAddr)
	}
	var extra []string
	for _, a := range secondaries {
		extra = append(extra, "--secondary", a)
	}
	primary, addr, err := startServer("kwik-primary", tree, certDir, extra...)
	if err != nil {
		return err
	}
	defer stopProcess(primary)

	mnt := cfg.Mountpoint
	var watchers sync.WaitGroup
	defer watchers.Wait()
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	ready := func() {
		fmt.Fprintf(out, `
kwikfs demo is running.
  primary   %s  exporting %s
  mount     %s  (cache in %s)
  mirrors   %s  (secondaries: the primary delegates chunks to them)

Try, in another terminal:
  ls -lR %[3]s | head
  cat %[3]s/README.txt
  time cat %[3]s/big/sample-64MiB.bin > /dev/null      # fetched from the primary, verified, stored
  cp -r %[3]s /tmp/kwikfs-copy && diff -r %[2]s /tmp/kwikfs-copy && echo identical
  bin/kwikfs status %[3]s

While data flows, this window shows how the bytes divide between the servers.
Press Ctrl-C to unmount and stop everything.
`, addr, tree, mnt, filepath.Join(cfg.Dir, "cache"), strings.Join(secondaries, ", "))
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			watchPaths(watchCtx, mnt, out)
		}()
	}
	err = daemon.Run(ctx, daemon.Config{
		Primary:    addr,
		CAFile:     filepath.Join(certDir, certgen.CAFile),
		CertFile:   filepath.Join(certDir, certgen.ClientCertFile),
		KeyFile:    filepath.Join(certDir, certgen.ClientKeyFile),
		CacheDir:   filepath.Join(cfg.Dir, "cache"),
		Mountpoint: mnt,
		Logger:     cfg.Logger,
	}, ready)
	fmt.Fprintln(out, "\nunmounted; stopping the primary")
	return err
}

// startServer runs a kwik server binary (from the directory of this
// executable, or PATH) exporting tree on a free loopback port and returns
// the process and its address.
func startServer(name, tree, certDir string, extra ...string) (*exec.Cmd, string, error) {
	bin, err := siblingBinary(name)
	if err != nil {
		return nil, "", err
	}
	args := append([]string{
		"--root", tree, "--listen", "127.0.0.1:0",
		"--cert", filepath.Join(certDir, certgen.CertFile),
		"--key", filepath.Join(certDir, certgen.KeyFile),
		"--client-ca", filepath.Join(certDir, certgen.CAFile),
		"--log-level", "warn"}, extra...)
	if name == "kwik-primary" {
		args = append(args, "--signing-key", filepath.Join(certDir, certgen.SigningKeyFile))
	} else {
		args = append(args, "--verify-key", filepath.Join(certDir, certgen.VerifyKeyFile))
	}
	cmd := exec.Command(bin, args...)
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
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, addr, nil
}

// watchPaths prints, once a second while file data arrives, how the bytes
// received so far divide between the paths (primary and secondaries).
func watchPaths(ctx context.Context, mnt string, out io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := daemon.QueryStatus(qctx, mnt)
		cancel()
		if err != nil {
			continue
		}
		var total uint64
		for _, p := range st.Paths {
			total += p.BytesReceived
		}
		if total == last || total == 0 {
			continue
		}
		last = total
		var parts []string
		for _, p := range st.Paths {
			role := "secondary"
			if p.ID == 0 {
				role = "primary"
			}
			parts = append(parts, fmt.Sprintf("%s %s %4.1f%% (%d MiB)", role, p.Remote,
				100*float64(p.BytesReceived)/float64(total), p.BytesReceived>>20))
		}
		fmt.Fprintf(out, "%s  %s\n", time.Now().Format("15:04:05"), strings.Join(parts, " | "))
	}
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
