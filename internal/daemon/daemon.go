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
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/transfer"
	"golang.org/x/sys/unix"
)

// Config says what to mount and how. Zero durations take the defaults of
// fusefs.Options.
type Config struct {
	Primary string // host:port of the primary
	CAFile  string // PEM CA that signed the servers' certificates
	// CertFile and KeyFile are the client certificate and key (PEM) the
	// mount presents to the servers; both empty: none.
	CertFile, KeyFile string
	ServerName        string // TLS name to verify; "" means the host of Primary
	CacheDir          string // chunk store directory
	Mountpoint        string

	AttrTimeout      time.Duration
	FetchTimeout     time.Duration
	MemoryCacheBytes int64
	// CacheSize bounds the disk space of the cached chunks (the store's
	// Limit; the least recently used chunks not in an open file are
	// evicted to stay under it). 0 selects AutoCacheSize; negative means
	// no limit.
	CacheSize int64
	// MemoryBytes is the memory budget for file data (default
	// DefaultMemoryBytes): a quarter for the memory chunk cache (unless
	// MemoryCacheBytes is set), an eighth for fetched chunks waiting for
	// the store, a sixty-fourth for prefetch fetches in flight (kept small:
	// a foreground read waits for them to drain).
	MemoryBytes int64
	// ReadAheadMax is fusefs.Options.ReadAheadMax: the largest read-ahead
	// window in chunks; 0 selects fusefs.DefaultReadAheadMax, negative
	// disables read-ahead (the kernel's own read-ahead stays).
	ReadAheadMax int
	// Metrics, if not empty, is the HOST:PORT on which the daemon serves
	// Prometheus metrics at /metrics (see metrics.go) while it runs; port 0
	// picks a free port, reported as Status.MetricsAddr. An address it
	// cannot listen on makes Run fail before mounting.
	Metrics string
	Debug   bool // FUSE request tracing
	// Xattrs serves the user.kwikfs.cached and user.kwikfs.sources
	// attributes of files (fusefs.Options.Xattrs). Off, the mount answers
	// no extended attributes, and `ls -l` costs two requests less per entry.
	Xattrs bool
	Logger *slog.Logger
}

// DefaultMemoryBytes is the default of Config.MemoryBytes: 256 MiB, which
// gives fusefs its default memory cache (64 MiB) and store queue (32 MiB)
// and prefetch.DefaultInFlightBytes (4 MiB).
const DefaultMemoryBytes = 256 << 20

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
	if err := PrivateDir(cfg.CacheDir, log); err != nil {
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
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		if err := kwik.UseClientCertificate(tlsConf, cfg.CertFile, cfg.KeyFile); err != nil {
			return err
		}
	}
	var metricsSrv *metrics.Server
	if cfg.Metrics != "" {
		if metricsSrv, err = metrics.Listen(cfg.Metrics); err != nil {
			return err
		}
		// Closes the listener if Run fails before serving; the second
		// Close below, once serving, stops it before the store closes.
		defer metricsSrv.Close()
	}
	storeDir := filepath.Join(cfg.CacheDir, "store")
	limit := cfg.CacheSize
	switch {
	case limit < 0:
		limit = 0 // the store's "no limit"
	case limit == 0:
		if limit, err = AutoCacheSize(storeDir); err != nil {
			return fmt.Errorf("cache size: %w", err)
		}
	}
	store, err := chunkstore.Open(storeDir, &chunkstore.Options{Logger: log, Limit: limit})
	if err != nil {
		return fmt.Errorf("open cache: %w", err)
	}
	defer store.Close()

	// The client reports which server delivered each READ's data to the
	// filesystem (user.kwikfs.sources), once the filesystem exists.
	var sourcesTo atomic.Pointer[fusefs.FS]
	client := transfer.NewClient(cfg.Primary, &transfer.ClientOptions{
		Config: &kwik.Config{TLSConfig: tlsConf, Logger: log},
		Logger: log,
		OnReadSources: func(path string, byServer map[string]uint64) {
			if f := sourcesTo.Load(); f != nil {
				f.AddReadSources(path, byServer)
			}
		},
	})
	defer client.Close()

	reachable, err := probe(ctx, client, cfg.Primary, log)
	if err != nil {
		return err
	}

	sock := filepath.Join(cfg.CacheDir, "control.sock")
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	if cfg.MemoryCacheBytes <= 0 {
		cfg.MemoryCacheBytes = cfg.MemoryBytes / 4
	}
	fsys := fusefs.New(client, store, &fusefs.Options{
		AttrTimeout:      cfg.AttrTimeout,
		EntryTimeout:     cfg.AttrTimeout,
		FetchTimeout:     cfg.FetchTimeout,
		MemoryCacheBytes: cfg.MemoryCacheBytes,
		ReadAheadMax:     cfg.ReadAheadMax,
		StoreQueueBytes:  cfg.MemoryBytes / 8,
		Xattrs:           cfg.Xattrs,
		ControlSocket:    sock,
		Logger:           log,
		// An unreachable primary: the cached tree answers at once from
		// the store instead of after a FetchTimeout, until it answers.
		RemoteDown: !reachable,
	})
	defer fsys.Close()
	sourcesTo.Store(fsys)

	// Unfinished prefetch jobs resume now; closed before the filesystem.
	jobs, err := prefetch.New(fsys, store, &prefetch.Options{InFlightBytes: cfg.MemoryBytes / 64, Logger: log})
	if err != nil {
		return err
	}
	defer jobs.Close()

	src := &statusSource{
		primary: cfg.Primary, mountpoint: mnt, cache: cfg.CacheDir,
		client: client, store: store, fs: fsys, started: time.Now(), prefetch: jobs,
	}
	if metricsSrv != nil {
		src.metricsAddr = metricsSrv.Addr()
	}
	ctl, err := startControl(sock, src, log)
	if err != nil {
		return err
	}
	defer ctl.Close()
	if metricsSrv != nil {
		reg, err := metrics.NewRegistry(newStatusCollector(src.status))
		if err != nil {
			return err
		}
		metricsSrv.Serve(reg, log)
		defer metricsSrv.Close()
		log.Info("metrics", "addr", src.metricsAddr)
	}

	srv, err := fsys.Mount(mnt, cfg.Debug)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	log.Info("mounted", "mountpoint", mnt, "primary", cfg.Primary, "cache", cfg.CacheDir, "cache_limit", limit)
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

// AutoCacheSize is the default cache size for a store in dir: half of the
// space free on its filesystem, counting the space the store's chunks take
// already as free (so that remounting a full cache does not shrink it).
// Half, because the usual reason to read a remote tree is to copy it, and
// a copy onto the same disk needs as much room as the cache takes; a fixed
// size would be too small for a big disk and too big for a small one. The
// figure is taken once, at mount.
func AutoCacheSize(dir string) (int64, error) {
	fsDir := dir
	for {
		if _, err := os.Stat(fsDir); err == nil {
			break
		}
		parent := filepath.Dir(fsDir)
		if parent == fsDir {
			break
		}
		fsDir = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(fsDir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", fsDir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var held int64
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
	for _, p := range segs {
		var fst unix.Stat_t
		if unix.Stat(p, &fst) == nil {
			held += fst.Blocks * 512
		}
	}
	return max((free+held)/2, 1), nil
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

// probeTimeout bounds the first contact with the primary at start-up, and
// so how long a mount whose primary is down takes to come up. Little is
// lost when a slow primary misses it: the mount starts in the down state
// (kept metadata served at once) and leaves it at the first answer.
const probeTimeout = 3 * time.Second

// probe contacts the primary once before mounting and reports whether it
// answered (within probeTimeout). A certificate the CA does not vouch for
// is a configuration error: Run fails at once with a clear message instead
// of mounting a tree nobody can read. An unreachable primary is not: the
// mount serves what the cache holds and reconnects later.
func probe(ctx context.Context, client *transfer.Client, addr string, log *slog.Logger) (reachable bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err = client.Stat(ctx, "")
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, kwik.ErrClientCertificate):
		return false, fmt.Errorf("primary %s requires a client certificate signed by its --client-ca; mount with --cert FILE --key FILE (kwikfs certs writes client.pem and client-key.pem): %w", addr, err)
	case transfer.IsUntrusted(err):
		return false, fmt.Errorf("primary %s: its TLS certificate is not trusted: %w", addr, err)
	case errors.Is(err, transfer.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
		log.Warn("primary not reachable yet; serving the cache and retrying on demand", "primary", addr, "err", err)
		return false, nil
	default:
		// It answered, if not with the root's attributes.
		log.Warn("primary answered the first stat with an error", "primary", addr, "err", err)
		return true, nil
	}
}
