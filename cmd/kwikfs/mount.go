package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/background"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/daemon"
	"github.com/kwikfs/kwikfs/internal/mountopt"
	"golang.org/x/sys/unix"
)

// DefaultLogName is the log file of a daemon in the background, in its
// cache directory, unless --log names another.
const DefaultLogName = "kwikfs.log"

// mountCommand is `kwikfs mount` and its mount(8) form: its flags, and
// what they set. Both forms parse into the same flag set, so that every
// flag is an option of `mount -o` too.
type mountCommand struct {
	fl  *cli.FlagSet
	cfg daemon.Config
	// argv re-runs the same command line as the daemon in the
	// background: os.Args[1:] as the command was given.
	argv []string
	// helper: the mount(8) form, whose messages name options, not flags.
	helper bool

	memCache, memory cli.Size
	cacheSize        cacheSize
	readAhead        *int
	logLevel         *string
	logFile          *string
	background       *bool
}

func newMountCommand() *mountCommand {
	m := &mountCommand{memory: cli.Size(daemon.DefaultMemoryBytes)}
	fl := cli.NewFlagSet("kwikfs mount", mountHelp)
	fl.AddConfigFlag()
	m.fl = fl
	cfg := &m.cfg
	fl.StringVar(&cfg.Primary, "primary", "", "primary server `HOST:PORT` (required)")
	fl.StringVar(&cfg.CAFile, "ca", "", "CA certificate that signed the servers' certificates, PEM `FILE` (required)")
	fl.StringVar(&cfg.CacheDir, "cache", "", "cache `DIR`: holds the chunk store and the control socket (required)")
	fl.StringVar(&cfg.ServerName, "server-name", "", "TLS `NAME` to verify (default: the host of --primary)")
	fl.StringVar(&cfg.CertFile, "cert", "", "client certificate, PEM `FILE`, presented to servers started with --client-ca (kwikfs certs writes client.pem)")
	fl.StringVar(&cfg.KeyFile, "key", "", "private key of --cert, PEM `FILE` (kwikfs certs writes client-key.pem)")
	fl.DurationVar(&cfg.AttrTimeout, "attr-timeout", 5*time.Second, "how long attributes and listings are trusted before asking the primary again")
	fl.DurationVar(&cfg.FetchTimeout, "fetch-timeout", 15*time.Second, "how long a read waits for the primary before failing with EIO")
	fl.Var(&m.memCache, "memory-cache", "`SIZE` of verified chunks kept in memory, at least 1M, e.g. 64M (default: a quarter of --memory)")
	fl.Var(&m.cacheSize, "cache-size", "`SIZE` of disk space for cached chunks, e.g. 512M or 10G; the least recently used chunks of files not open are evicted to stay under it; auto (the default): half of the free space of the cache's filesystem; unlimited or 0: no limit")
	fl.Var(&m.memory, "memory", "`SIZE` of the memory budget for file data: memory cache, store queue and prefetch in flight, e.g. 512M or 1G")
	m.readAhead = fl.Int("read-ahead", fusefs.DefaultReadAheadMax, "largest read-ahead window of sequential reads, in `chunks`; 0 disables read-ahead: kwikfs's, and the kernel's beyond its default of 128 KiB")
	fl.StringVar(&cfg.Metrics, "metrics", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics (port 0: a free port, shown by `kwikfs status --json` as metrics_addr)")
	fl.BoolVar(&cfg.Debug, "debug", false, "trace FUSE requests")
	fl.BoolVar(&cfg.Xattrs, "xattrs", false, "serve the user.kwikfs.cached and user.kwikfs.sources attributes of files\n(off: the mount answers no extended attributes, which spares ls -l two requests per entry)")
	fl.BoolVar(&cfg.NoExec, "noexec", false, "mount with noexec: files on the mount cannot be executed")
	m.logLevel = fl.String("log-level", "info", "debug, info, warn or error")
	m.background = fl.Bool("background", false, "return once the mount is ready (exit 0) or has failed (its error, exit 1), leaving the daemon serving it\nin the background, its log in --log; umount MOUNTPOINT stops it (mount -t fuse.kwikfs mounts this way)")
	m.logFile = fl.String("log", "", "append the daemon's log (its standard error) to `FILE`, reopened at SIGHUP (default: standard error; with --background, CACHE/"+DefaultLogName+")")
	return m
}

// mountAliases are the mount(8) options the mount(8) form maps or drops
// besides mountopt.Generic. A kwikfs mount is read-only whatever it is
// told: ro is what it does anyway, and rw, which mount(8) adds whenever ro
// is not given, cannot be refused without refusing every plain mount.
// exec undoes noexec.
var mountAliases = map[string]string{"ro": "", "rw": "", "exec": "noexec=false"}

// isMountSource reports whether arg, the first argument of kwikfs, is the
// SOURCE of the mount(8) form: a HOST:PORT, which no command is.
func isMountSource(arg string) bool {
	_, port, err := net.SplitHostPort(arg)
	return err == nil && port != ""
}

// runMountHelper runs the form mount.fuse3 runs for `mount -t
// fuse.kwikfs`: kwikfs HOST:PORT MOUNTPOINT -o OPTIONS.
func runMountHelper(ctx context.Context, argv []string) error {
	m, err := parseMountHelper(argv)
	if err != nil {
		return err
	}
	return m.run(ctx)
}

// parseMountHelper reads the mount(8) form into a mountCommand: every
// flag of `kwikfs mount` is an option (ca=FILE, debug, ...), and the
// daemon goes to the background (option background=false keeps it in the
// foreground).
func parseMountHelper(argv []string) (*mountCommand, error) {
	a, err := mountopt.Parse(argv)
	if err != nil {
		return nil, cli.Usagef("%v", err)
	}
	m := newMountCommand()
	m.helper, m.argv = true, argv
	if err := m.fl.Set("primary", a.Source); err != nil {
		return nil, cli.Usagef("%v", err)
	}
	if err := m.fl.Set("background", "true"); err != nil {
		return nil, err
	}
	if err := mountopt.Apply(m.fl.FlagSet, a.Options, mountAliases); err != nil {
		return nil, cli.Usagef("%v", err)
	}
	// config=FILE: the file sets what the options did not.
	if err := m.fl.LoadConfig(); err != nil {
		return nil, err
	}
	m.cfg.Mountpoint = a.Mountpoint
	return m, nil
}

// flagName names flag as the command line in use spells it: --ca, or the
// option ca= of the mount(8) form.
func (m *mountCommand) flagName(flag string) string {
	if m.helper {
		return flag + "="
	}
	return "--" + flag
}

// config checks the parsed flags and returns the daemon's configuration.
func (m *mountCommand) config() (daemon.Config, error) {
	cfg := m.cfg
	if cfg.Primary == "" || cfg.CAFile == "" || cfg.CacheDir == "" {
		return cfg, cli.Usagef("mount needs %s, %s and %s", m.flagName("primary"), m.flagName("ca"), m.flagName("cache"))
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return cfg, cli.Usagef("%s and %s go together", m.flagName("cert"), m.flagName("key"))
	}
	if m.memCache != 0 && m.memCache < 1<<20 {
		return cfg, cli.Usagef("%s %d is %d bytes; sizes take a unit (e.g. %dM), and the least is 1M", m.flagName("memory-cache"), m.memCache, m.memCache, m.memCache)
	}
	cfg.MemoryCacheBytes = int64(m.memCache)
	cfg.CacheSize = int64(m.cacheSize)
	cfg.MemoryBytes = int64(m.memory)
	var err error
	if cfg.ReadAheadMax, err = readAheadMax(*m.readAhead); err != nil {
		return cfg, err
	}
	if cfg.Logger, err = cli.NewLogger(*m.logLevel); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// run mounts: in this process, or, with --background, in a daemon of its
// own that this process waits for; or it is that daemon, started by
// background.Start, and reports to its parent.
func (m *mountCommand) run(ctx context.Context) (err error) {
	rep, err := background.ChildReporter()
	if err != nil {
		return err
	}
	if rep != nil {
		// Whatever stops the daemon before the mount is ready is the
		// parent's error; nothing once it reported ready.
		defer func() { rep.Fail(err) }()
	}
	cfg, err := m.config()
	if err != nil {
		return err
	}
	switch {
	case rep != nil:
		// Its standard error is the log already (background.Start).
		logFile, err := filepath.Abs(m.backgroundLog(cfg))
		if err != nil {
			return err
		}
		if err := detach(&cfg); err != nil {
			return err
		}
		defer reopenLogOnHangup(logFile, cfg.Logger)()
		return daemon.Run(ctx, cfg, rep.Ready)
	case *m.background:
		return m.startBackground(ctx, cfg)
	case *m.logFile != "":
		if err := redirectStderr(*m.logFile); err != nil {
			return err
		}
		defer reopenLogOnHangup(*m.logFile, cfg.Logger)()
	default:
		// Logging to a terminal: its hangup ends the mount like SIGINT.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGHUP)
		defer stop()
	}
	return daemon.Run(ctx, cfg, nil)
}

// backgroundLog is the log file of a daemon in the background: --log, or
// CACHE/kwikfs.log.
func (m *mountCommand) backgroundLog(cfg daemon.Config) string {
	if *m.logFile != "" {
		return *m.logFile
	}
	return filepath.Join(cfg.CacheDir, DefaultLogName)
}

// startBackground runs the same command line again as the daemon, in the
// background, and waits until its mount is ready or it failed. The
// default log goes in the cache directory, which is made first for it
// (as the daemon would make it: private).
func (m *mountCommand) startBackground(ctx context.Context, cfg daemon.Config) error {
	if *m.logFile == "" {
		if err := daemon.PrivateDir(cfg.CacheDir, cfg.Logger); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	_, err := background.Start(ctx, m.argv, m.backgroundLog(cfg))
	return err
}

// detach makes the paths of cfg absolute and leaves the working
// directory for /, so that a daemon in the background keeps no file
// system busy but the mount's own.
func detach(cfg *daemon.Config) error {
	for _, p := range []*string{&cfg.Mountpoint, &cfg.CacheDir, &cfg.CAFile, &cfg.CertFile, &cfg.KeyFile} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return os.Chdir("/")
}

// redirectStderr appends standard error, the log and a crash's stack
// trace, to file (created with mode 0600).
func redirectStderr(file string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	defer f.Close()
	if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
		return fmt.Errorf("log: %w", err)
	}
	return nil
}

// reopenLogOnHangup makes each SIGHUP reopen file as standard error, the
// log, so that a log moved away by logrotate (postrotate: kill -HUP) is
// written anew at its path; a SIGHUP no longer ends the process. The
// returned function stops it.
func reopenLogOnHangup(file string, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-hup:
				if err := redirectStderr(file); err != nil {
					log.Error("SIGHUP: the log stays where it was", "err", err)
					continue
				}
				log.Info("log reopened", "file", file)
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}
}
