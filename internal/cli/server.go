package cli

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
)

// ServerFlags are the flags kwik-primary and kwik-secondary share.
type ServerFlags struct {
	Root, Listen, Cert, Key, LogLevel string
	// ClientCA names the PEM file of the CA whose client certificates the
	// server admits; AllowAnonymous admits any client instead.
	ClientCA       string
	AllowAnonymous bool
	// Pprof is the TCP address of the profiling endpoint, "" for none.
	Pprof string
	// Metrics is the TCP address of the Prometheus metrics, "" for none.
	Metrics string
}

// Register defines the shared flags on fl; rootHelp describes --root and
// listen is the default of --listen.
func (sf *ServerFlags) Register(fl *flag.FlagSet, rootHelp, listen string) {
	fl.StringVar(&sf.Root, "root", "", rootHelp+" (required)")
	fl.StringVar(&sf.Listen, "listen", listen, "UDP address to listen on")
	fl.StringVar(&sf.Cert, "cert", "", "server certificate, PEM (required)")
	fl.StringVar(&sf.Key, "key", "", "server private key, PEM (required)")
	fl.StringVar(&sf.ClientCA, "client-ca", "", "admit only clients with a certificate signed by the CA in this PEM `FILE` (kwikfs certs writes ca.pem and client.pem); required unless --allow-anonymous")
	fl.BoolVar(&sf.AllowAnonymous, "allow-anonymous", false, "admit any client that can reach --listen, without a client certificate")
	fl.StringVar(&sf.LogLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&sf.Pprof, "pprof", "", "HOST:PORT to serve Go's profiles on (/debug/pprof/), e.g. 127.0.0.1:6060; off when empty")
	fl.StringVar(&sf.Metrics, "metrics", "", "HOST:PORT to serve Prometheus metrics on (/metrics), e.g. 127.0.0.1:9101 (port 0 picks one, logged at info); off when empty")
}

// ServerSetup is what the shared flags name, loaded.
type ServerSetup struct {
	Logger *slog.Logger
	TLS    *tls.Config
	// ResetSecret is the server's stateless reset secret
	// (kwik.Config.StatelessResetSecret): derived from its TLS private key,
	// so it persists across restarts and is the server's own.
	ResetSecret []byte
}

// Parse parses args into fl, checks the shared flags (all required, no
// positional arguments) and loads the logger and the TLS certificate.
// Command-line mistakes wrap ErrUsage.
func (sf *ServerFlags) Parse(fl *flag.FlagSet, args []string) (*ServerSetup, error) {
	if err := fl.Parse(args); err != nil {
		return nil, Usagef("%v", err)
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
	return &ServerSetup{Logger: log, TLS: tlsConf, ResetSecret: reset}, nil
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
