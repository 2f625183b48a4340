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
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
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
	for range 2 {
		sec, err := startServer("kwik-secondary", tree, certDir, "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer sec.stop()
		secondaries = append(secondaries, sec.addr)
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

// watchPaths prints, once a second while file data arrives, how the bytes
// received so far divide between the paths (primary and secondaries);
// while no file data arrives it prints nothing. On a terminal the line is
// redrawn in place, elsewhere each is a line of its own.
func watchPaths(ctx context.Context, mnt string, out io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	inPlace := cli.IsTerminal(out)
	var last int64
	drawn := false
	defer func() {
		if drawn {
			fmt.Fprintln(out)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := daemon.QueryStatus(qctx, mnt)
		cancel()
		if err != nil || st.FS.BytesFetched == last {
			continue
		}
		last = st.FS.BytesFetched
		var total uint64
		for _, p := range st.Paths {
			total += p.BytesReceived
		}
		var parts []string
		for _, p := range st.Paths {
			role := "secondary"
			if p.ID == 0 {
				role = "primary"
			}
			share := 0.0
			if total > 0 {
				share = 100 * float64(p.BytesReceived) / float64(total)
			}
			parts = append(parts, fmt.Sprintf("%s %s %4.1f%% (%d MiB)", role, p.Remote, share, p.BytesReceived>>20))
		}
		line := fmt.Sprintf("%s  fetched %d MiB  %s", time.Now().Format("15:04:05"), last>>20, strings.Join(parts, " | "))
		if inPlace {
			fmt.Fprintf(out, "\r\x1b[K%s", line)
			drawn = true
		} else {
			fmt.Fprintln(out, line)
		}
	}
}
