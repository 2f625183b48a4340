package cli

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/kwikfs/kwikfs/kwik"
)

// ServerFlags are the flags kwik-primary and kwik-secondary share: what
// they serve, how they authenticate, and the kwik listener's limits on
// what one source address may hold.
type ServerFlags struct {
	Root, Listen, Cert, Key, LogLevel string
	// ClientCA names the PEM file of the CA whose client certificates the
	// server admits; AllowAnonymous admits any client instead.
	ClientCA       string
	AllowAnonymous bool
	// Pprof is the TCP address of the profiling endpoint, "" for none.
	Pprof string
	// MaxSessions, MaxSessionsPerSource, MaxSetupsPerSource and
	// SetupTimeout are kwik.Config's, defaults and all.
	MaxSessions, MaxSessionsPerSource, MaxSetupsPerSource int
	SetupTimeout                                          time.Duration
	// Metrics is the TCP address of the Prometheus metrics, "" for none.
	Metrics string
}

// Register defines the shared flags on fl, --config included; rootHelp
// describes --root and listen is the default of --listen. sessions names
// what --max-sessions counts ("sessions", or a secondary's "client paths").
func (sf *ServerFlags) Register(fl *FlagSet, rootHelp, listen, sessions string) {
	fl.AddConfigFlag()
	fl.StringVar(&sf.Root, "root", "", rootHelp+" (required)")
	fl.StringVar(&sf.Listen, "listen", listen, "UDP `HOST:PORT` to listen on")
	fl.StringVar(&sf.Cert, "cert", "", "server certificate, PEM `FILE` (required)")
	fl.StringVar(&sf.Key, "key", "", "server private key, PEM `FILE` (required)")
	fl.StringVar(&sf.ClientCA, "client-ca", "", "admit only clients with a certificate signed by the CA in this PEM `FILE` (kwikfs certs writes ca.pem and client.pem); required unless --allow-anonymous")
	fl.BoolVar(&sf.AllowAnonymous, "allow-anonymous", false, "admit any client that can reach --listen, without a client certificate")
	fl.StringVar(&sf.LogLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&sf.Pprof, "pprof", "", "`HOST:PORT` to serve Go's profiles on (/debug/pprof/), e.g. 127.0.0.1:6060; off when empty")
	fl.IntVar(&sf.MaxSessions, "max-sessions", kwik.DefaultMaxSessions, sessions+" open at once; one more is refused (\"session limit of N reached\"); -1: no limit")
	fl.IntVar(&sf.MaxSessionsPerSource, "max-sessions-per-source", kwik.DefaultMaxSessionsPerSource, sessions+" open at once from one IP address (clients behind one NAT share it); -1: no limit")
	fl.IntVar(&sf.MaxSetupsPerSource, "max-setups-per-source", kwik.DefaultMaxSetupsPerSource, "connections from one IP address past the QUIC handshake and not yet through kwik's (each holds one of 64 set-up slots for up to --setup-timeout); -1: no limit")
	fl.DurationVar(&sf.SetupTimeout, "setup-timeout", kwik.DefaultSetupTimeout, "how long a connection may take from the end of the QUIC handshake to the end of kwik's before it is closed")
	fl.StringVar(&sf.Metrics, "metrics", "", "`HOST:PORT` to serve Prometheus metrics on (/metrics), e.g. 127.0.0.1:9101 (port 0 picks one, logged at info); off when empty")
}

// ServerSetup is what the shared flags name, loaded.
type ServerSetup struct {
	Logger *slog.Logger
	// Kwik is the listener's configuration: the TLS certificate (and
	// client CA), Logger, the limits of the flags, and the stateless
	// reset secret, derived from the TLS private key so that it persists
	// across restarts and is the server's own. The command adds its own
	// keys.
	Kwik *kwik.Config
}

// Parse parses args into fl (the command line, then --config), checks the
// shared flags (all required, no positional arguments, limits not 0) and
// loads the logger and the TLS certificate. Command-line mistakes wrap
// ErrUsage; -h and --help return a *HelpError.
func (sf *ServerFlags) Parse(fl *FlagSet, args []string) (*ServerSetup, error) {
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if sf.Root == "" || sf.Cert == "" || sf.Key == "" {
		fl.Usage()
		return nil, Usagef("--root, --cert and --key are required")
	}
	if fl.NArg() > 0 {
		return nil, Usagef("unexpected argument %q", fl.Arg(0))
	}
	switch {
	case sf.ClientCA == "" && !sf.AllowAnonymous:
		return nil, Usagef("%s admits only clients with a certificate: give --client-ca FILE (the CA that signed them; kwikfs certs writes ca.pem and client.pem), or --allow-anonymous to admit any client that can reach %s", fl.Name(), sf.Listen)
	case sf.ClientCA != "" && sf.AllowAnonymous:
		return nil, Usagef("--client-ca and --allow-anonymous exclude each other")
	case sf.MaxSessions == 0 || sf.MaxSessionsPerSource == 0 || sf.MaxSetupsPerSource == 0:
		return nil, Usagef("--max-sessions, --max-sessions-per-source and --max-setups-per-source must be at least 1, or -1 for no limit")
	case sf.SetupTimeout <= 0:
		return nil, Usagef("--setup-timeout must be positive")
	}
	log, err := NewLogger(sf.LogLevel)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(sf.Key)
	if err != nil {
		return nil, err
	}
	tlsConf, err := kwik.LoadServerTLS(sf.Cert, sf.Key)
	if err != nil {
		return nil, err
	}
	if sf.ClientCA != "" {
		if err := kwik.RequireClientCertificates(tlsConf, sf.ClientCA); err != nil {
			return nil, err
		}
	} else {
		log.Warn("admitting any client: no --client-ca", "listen", sf.Listen)
	}
	reset, err := hkdf.Key(sha256.New, keyPEM, nil, "kwik stateless reset secret", 32)
	if err != nil {
		return nil, err
	}
	return &ServerSetup{Logger: log, Kwik: &kwik.Config{
		TLSConfig:            tlsConf,
		Logger:               log,
		StatelessResetSecret: reset,
		MaxSessions:          sf.MaxSessions,
		MaxSessionsPerSource: sf.MaxSessionsPerSource,
		MaxSetupsPerSource:   sf.MaxSetupsPerSource,
		SetupTimeout:         sf.SetupTimeout,
	}}, nil
}

// ServePprof serves net/http/pprof's handlers on addr; it returns once the
// listener is bound, and the returned function stops the server and waits
// for it. Profiles expose the process's internals: bind
// addr to loopback.
func ServePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server", "err", err)
		}
	}()
	log.Info("serving profiles", "addr", ln.Addr().String())
	return func() {
		srv.Close()
		<-done
	}, nil
}

// NotifySystemd sends state (sd_notify(3): sd.SdNotifyReady once the
// server listens, sd.SdNotifyStopping once it is told to stop) to the
// service manager that NOTIFY_SOCKET names, for a unit of Type=notify.
// Without NOTIFY_SOCKET it does nothing. A failure is logged, not
// returned: the server serves all the same.
func NotifySystemd(log *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.Warn("notify systemd", "state", state, "err", err)
	}
}
