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
//
// Its steps, in order: resolve the configuration (defaults, absolute
// paths), load the client's TLS configuration, listen for metrics
// (Config.Metrics), open the cache (OpenCache), dial the primary
// (dialPrimary), make the filesystem (newFilesystem), resume the prefetch
// jobs, start the control socket, serve metrics, mount, and serve until
// done (serveUntilDone).
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

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
	// evicted to stay under it). 0 lets the store choose
	// (chunkstore.AutoLimit: half of the free space of its filesystem);
	// negative means no limit.
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
	// NoExec mounts with noexec (fusefs.Options.NoExec).
	NoExec bool
	Logger *slog.Logger
}

// DefaultMemoryBytes is the default of Config.MemoryBytes: 256 MiB, which
// gives fusefs its default memory cache (64 MiB) and store queue (32 MiB)
// and prefetch.DefaultInFlightBytes (4 MiB).
const DefaultMemoryBytes = 256 << 20

// Run mounts cfg.Mountpoint and serves it until ctx is done or the mount is
// unmounted from outside. ready, if not nil, is called once the mount is up.
// It is the steps below, in order; each undoes itself (deferred) when Run
// returns, in the reverse order.
func Run(ctx context.Context, cfg Config, ready func()) error {
	cfg, err := cfg.resolve()
	if err != nil {
		return err
	}
	log, mnt := cfg.Logger, cfg.Mountpoint
	tlsConf, err := clientTLS(cfg)
	if err != nil {
		return err
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
	store, err := OpenCache(cfg.CacheDir, cfg.CacheSize, log)
	if err != nil {
		return err
	}
	defer store.Close()
	client, reachable, err := dialPrimary(ctx, cfg, tlsConf)
	if err != nil {
		return err
	}
	defer client.Close()
	sock := filepath.Join(cfg.CacheDir, "control.sock")
	fsys := newFilesystem(cfg, client, store, reachable, sock)
	defer fsys.Close()
	jobs, err := resumePrefetch(cfg, fsys, store)
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
	log.Info("mounted", "mountpoint", mnt, "primary", cfg.Primary, "cache", cfg.CacheDir, "cache_limit", store.Limit())
	if ready != nil {
		ready()
	}
	return serveUntilDone(ctx, srv, mnt, log)
}

// resolve returns cfg ready for Run: Logger, MemoryBytes and
// MemoryCacheBytes defaulted, Mountpoint and CacheDir made absolute, and
// the mountpoint checked to be a directory.
func (cfg Config) resolve() (Config, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	if cfg.MemoryCacheBytes <= 0 {
		cfg.MemoryCacheBytes = cfg.MemoryBytes / 4
	}
	var err error
	if cfg.Mountpoint, err = filepath.Abs(cfg.Mountpoint); err != nil {
		return cfg, fmt.Errorf("mountpoint: %w", err)
	}
	if cfg.CacheDir, err = filepath.Abs(cfg.CacheDir); err != nil {
		return cfg, fmt.Errorf("cache: %w", err)
	}
	if st, err := os.Stat(cfg.Mountpoint); err != nil {
		return cfg, fmt.Errorf("mountpoint: %w", err)
	} else if !st.IsDir() {
		return cfg, fmt.Errorf("mountpoint %s: not a directory", cfg.Mountpoint)
	}
	return cfg, nil
}

// clientTLS loads the TLS configuration the mount dials the servers with:
// cfg.CAFile's CA, and the client certificate of cfg.CertFile and
// cfg.KeyFile when either is set.
func clientTLS(cfg Config) (*tls.Config, error) {
	tlsConf, err := kwik.LoadClientTLS(cfg.CAFile, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		if err := kwik.UseClientCertificate(tlsConf, cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, err
		}
	}
	return tlsConf, nil
}

// dialPrimary makes the client of cfg.Primary and contacts it once (see
// probe): reachable reports whether it answered. A primary that rejects
// the mount's certificates is an error; one that does not answer is not.
// On an error the client is closed already; otherwise the caller closes
// it.
func dialPrimary(ctx context.Context, cfg Config, tlsConf *tls.Config) (client *transfer.Client, reachable bool, err error) {
	client = transfer.NewClient(cfg.Primary, &transfer.ClientOptions{
		Config: &kwik.Config{TLSConfig: tlsConf, Logger: cfg.Logger},
		Logger: cfg.Logger,
	})
	if reachable, err = probe(ctx, client, cfg.Primary, cfg.Logger); err != nil {
		client.Close()
		return nil, false, err
	}
	return client, reachable, nil
}

// newFilesystem makes the FUSE filesystem over client and store, with the
// memory budget of cfg divided as Config.MemoryBytes says; sock is the
// control socket it names to ControlIoctl. A primary not reachable at
// start makes it start in the down state: the cached tree answers at once
// from the store instead of after a FetchTimeout, until the primary
// answers.
func newFilesystem(cfg Config, client *transfer.Client, store *chunkstore.Store, reachable bool, sock string) *fusefs.FS {
	return fusefs.New(client, store, &fusefs.Options{
		AttrTimeout:      cfg.AttrTimeout,
		EntryTimeout:     cfg.AttrTimeout,
		FetchTimeout:     cfg.FetchTimeout,
		MemoryCacheBytes: cfg.MemoryCacheBytes,
		ReadAheadMax:     cfg.ReadAheadMax,
		StoreQueueBytes:  cfg.MemoryBytes / 8,
		Xattrs:           cfg.Xattrs,
		NoExec:           cfg.NoExec,
		Source:           cfg.Primary,
		ControlSocket:    sock,
		Logger:           cfg.Logger,
		// An unreachable primary: the cached tree answers at once from
		// the store instead of after a FetchTimeout, until it answers.
		RemoteDown: !reachable,
	})
}

// resumePrefetch starts the prefetch manager of the mount, which resumes
// the unfinished jobs kept in store at once; it must be closed before the
// filesystem.
func resumePrefetch(cfg Config, fsys *fusefs.FS, store *chunkstore.Store) (*prefetch.Manager, error) {
	return prefetch.New(fsys, store, &prefetch.Options{InFlightBytes: cfg.MemoryBytes / 64, Logger: cfg.Logger})
}

// serveUntilDone waits until the mount served by srv at mnt is unmounted
// from outside, or ctx is done, and then unmounts it (see unmount).
func serveUntilDone(ctx context.Context, srv *fuse.Server, mnt string, log *slog.Logger) error {
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
		return false, fmt.Errorf("primary %s requires a client certificate signed by its --client-ca; give the mount one and its key (--cert FILE --key FILE, or the options cert=FILE,key=FILE of mount -t fuse.kwikfs; kwikfs certs writes client.pem and client-key.pem): %w", addr, err)
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
