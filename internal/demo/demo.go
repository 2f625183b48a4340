// Package demo runs kwikfs end to end on one machine: a sample tree, fresh
// certificates, a primary and two secondaries on loopback started from the
// kwik-primary and kwik-secondary binaries, and a mount. Run serves until
// the context ends; it backs `kwikfs demo` and `make demo`. RunFaults plays
// a scripted story of faults on the same set-up (a secondary killed and
// restarted, the mount daemon killed and mounted again) and returns at its
// end; it backs `kwikfs demo --faults` and `make demo-faults`.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/internal/daemon"
)

// Config says where the demo keeps its files.
type Config struct {
	Dir        string // working directory: certs/, tree/, cache/ go here
	Tree       string // tree to export; "" makes a sample tree in Dir/tree
	Mountpoint string // created if missing
	Logger     *slog.Logger
	// FaultsSize is the size of each of the two files RunFaults copies;
	// 0 means DefaultFaultsSize.
	FaultsSize int64
}

// Run sets the demo up, prints what to try on out, and serves until ctx is
// done; then it unmounts and stops the primary.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	certDir, tree, err := prepare(cfg, out)
	if err != nil {
		return err
	}
	// Two secondaries mirror the tree (here: the same directory), and the
	// primary tells every client to add them as paths.
	var secondaries []string
	var servers []serverInfo // for the live line; the primary's goes first
	for i := range 2 {
		sec, err := startServer("kwik-secondary", tree, certDir, "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer sec.stop()
		secondaries = append(secondaries, sec.addr)
		servers = append(servers, serverInfo{fmt.Sprintf("secondary %d", i+1), sec.addr})
	}
	var extra []string
	for _, a := range secondaries {
		extra = append(extra, "--secondary", a)
	}
	primary, err := startServer("kwik-primary", tree, certDir, "127.0.0.1:0", extra...)
	if err != nil {
		return err
	}
	defer primary.stop()
	addr := primary.addr
	servers = append([]serverInfo{{"primary", addr}}, servers...)

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
		live := &display{servers: servers, out: out, inPlace: cli.IsTerminal(out), whileFetching: true, head: fetchedHead}
		watchers.Go(func() { live.run(watchCtx, mnt) })
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

// prepare makes what both demos need under cfg.Dir: certificates (made
// afresh when any file the servers and the mount use is missing), the
// sample tree when cfg.Tree is "" and Dir/tree does not exist yet, and the
// mountpoint. It returns the certificate directory and the tree to export.
func prepare(cfg Config, out io.Writer) (certDir, tree string, err error) {
	certDir = filepath.Join(cfg.Dir, "certs")
	for _, f := range []string{certgen.ClientCertFile, certgen.SigningKeyFile, certgen.VerifyKeyFile} {
		if _, err := os.Stat(filepath.Join(certDir, f)); errors.Is(err, os.ErrNotExist) {
			// None yet, or a demo's from before client certificates or
			// signing keys: the demo makes its own afresh.
			if err := os.RemoveAll(certDir); err != nil {
				return "", "", err
			}
			b, err := certgen.Generate(nil)
			if err != nil {
				return "", "", err
			}
			if err := b.WriteDir(certDir); err != nil {
				return "", "", fmt.Errorf("demo certificates: %w", err)
			}
			break
		}
	}
	tree = cfg.Tree
	if tree == "" {
		tree = filepath.Join(cfg.Dir, "tree")
		if _, err := os.Stat(tree); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(out, "making a sample tree in %s ...\n", tree)
			if err := MakeSampleTree(tree); err != nil {
				return "", "", fmt.Errorf("sample tree: %w", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.Mountpoint, 0o755); err != nil {
		return "", "", fmt.Errorf("mountpoint: %w", err)
	}
	return certDir, tree, nil
}

// fetchedHead is the start of the plain demo's live line: the file data
// the mount has fetched.
func fetchedHead(st *control.Status) string {
	return fmt.Sprintf("fetched %d MiB", st.FS.BytesFetched>>20)
}
