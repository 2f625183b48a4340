// Package daemon runs a kwikfs mount: it wires the transfer client, the chunk
// store and the FUSE filesystem together, serves the control socket that
// `kwikfs status` talks to, and tears everything down in order.
//
// # Lifecycle
//
// Run mounts, then blocks until its context is cancelled (SIGINT/SIGTERM in
// the command) or the filesystem is unmounted from outside (`umount`). Either
// way it unmounts if still mounted, stops the control socket, closes the
// filesystem, the client and the store, and returns nil. A failure to set up
// returns an error and leaves nothing mounted.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
	"golang.org/x/sys/unix"
)

// ControlXattr is the extended attribute of the mount's root directory that
// holds the path of the daemon's control socket.
const ControlXattr = "user.kwikfs.control"

// Config says what to mount and how. Zero durations take the defaults of
// fusefs.Options.
type Config struct {
	Primary    string // host:port of the primary
	CAFile     string // PEM CA that signed the servers' certificates
	ServerName string // TLS name to verify; "" means the host of Primary
	CacheDir   string // chunk store directory
	Mountpoint string

	AttrTimeout      time.Duration
	FetchTimeout     time.Duration
	MemoryCacheBytes int64
	Debug            bool // FUSE request tracing
	Logger           *slog.Logger
}

// Run mounts cfg.Mountpoint and serves it until ctx is done or the mount is
// unmounted from outside. ready, if not nil, is called once the mount is up.
func Run(ctx context.Context, cfg Config, ready func()) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mnt, err := filepath.Abs(cfg.Mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	if cfg.CacheDir, err = filepath.Abs(cfg.CacheDir); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if st, err := os.Stat(mnt); err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("mountpoint %s: not a directory", mnt)
	}
	tlsConf, err := kwik.LoadClientTLS(cfg.CAFile, cfg.ServerName)
	if err != nil {
		return err
	}
	store, err := chunkstore.Open(filepath.Join(cfg.CacheDir, "store"), &chunkstore.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("open cache: %w", err)
	}
	defer store.Close()

	client := transfer.NewClient(cfg.Primary, &transfer.ClientOptions{
		Config: &kwik.Config{TLSConfig: tlsConf, Logger: log},
		Logger: log,
	})
	defer client.Close()

	if err := probe(ctx, client, cfg.Primary, log); err != nil {
		return err
	}

	sock := filepath.Join(cfg.CacheDir, "control.sock")
	fsys := fusefs.New(client, store, &fusefs.Options{
		AttrTimeout:      cfg.AttrTimeout,
		EntryTimeout:     cfg.AttrTimeout,
		FetchTimeout:     cfg.FetchTimeout,
		MemoryCacheBytes: cfg.MemoryCacheBytes,
		Xattrs:           map[string][]byte{ControlXattr: []byte(sock)},
		Logger:           log,
	})
	defer fsys.Close()

	ctl, err := startControl(sock, &statusSource{
		primary: cfg.Primary, mountpoint: mnt, cache: cfg.CacheDir,
		client: client, store: store, fs: fsys, started: time.Now(),
	}, log)
	if err != nil {
		return err
	}
	defer ctl.Close()

	srv, err := fsys.Mount(mnt, cfg.Debug)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	log.Info("mounted", "mountpoint", mnt, "primary", cfg.Primary, "cache", cfg.CacheDir)
	if ready != nil {
		ready()
	}

	unmounted := make(chan struct{})
	go func() {
		srv.Wait()
		close(unmounted)
	}()
	select {
	case <-unmounted:
		log.Info("unmounted from outside", "mountpoint", mnt)
	case <-ctx.Done():
		if err := unmount(srv, mnt, unmounted, log); err != nil {
			log.Error("unmount", "mountpoint", mnt, "err", err)
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		log.Info("unmounted", "mountpoint", mnt)
	}
	return nil
}

// detachGrace is how long a lazily detached mount may stay busy before Run
// returns anyway.
const detachGrace = 2 * time.Second

// unmount asks the kernel to detach the filesystem and waits for the serve
// loop to end. A busy mount (a process has a file open or its working
// directory inside) is retried for two seconds and then detached lazily: it
// leaves the namespace at once. If open files still hold the detached mount
// after detachGrace, unmount returns anyway; when the daemon exits, the
// kernel closes its FUSE device and those files fail with ENOTCONN. So the
// daemon never leaves a mount behind and never hangs on a busy one.
func unmount(srv interface{ Unmount() error }, mnt string, done <-chan struct{}, log *slog.Logger) error {
	var err error
	for range 20 {
		if err = srv.Unmount(); err == nil {
			<-done
			return nil
		}
		select {
		case <-done:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	if lerr := unix.Unmount(mnt, unix.MNT_DETACH); lerr != nil {
		return errors.Join(err, lerr)
	}
	select {
	case <-done:
	case <-time.After(detachGrace):
		log.Warn("mount detached while files are still open on it; they fail once the daemon exits", "mountpoint", mnt)
	}
	return nil
}

// probeTimeout bounds the first contact with the primary at start-up.
const probeTimeout = 10 * time.Second

// probe contacts the primary once before mounting. A certificate the CA does
// not vouch for is a configuration error: Run fails at once with a clear
// message instead of mounting a tree nobody can read. An unreachable primary
// is not: the mount serves what the cache holds and reconnects later.
func probe(ctx context.Context, client *transfer.Client, addr string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := client.Stat(ctx, "")
	switch {
	case err == nil:
		return nil
	case transfer.IsUntrusted(err):
		return fmt.Errorf("primary %s: its TLS certificate is not trusted: %w", addr, err)
	default:
		log.Warn("primary not reachable yet; serving the cache and retrying on demand", "primary", addr, "err", err)
		return nil
	}
}
