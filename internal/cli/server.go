package cli

import (
	"crypto/tls"
	"flag"
	"log/slog"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
)

// ServerFlags are the flags kwik-primary and kwik-secondary share.
type ServerFlags struct {
	Root, Listen, Cert, Key, ClusterKey, LogLevel string
}

// Register defines the shared flags on fl; rootHelp describes --root and
// listen is the default of --listen.
func (sf *ServerFlags) Register(fl *flag.FlagSet, rootHelp, listen string) {
	fl.StringVar(&sf.Root, "root", "", rootHelp+" (required)")
	fl.StringVar(&sf.Listen, "listen", listen, "UDP address to listen on")
	fl.StringVar(&sf.Cert, "cert", "", "server certificate, PEM (required)")
	fl.StringVar(&sf.Key, "key", "", "server private key, PEM (required)")
	fl.StringVar(&sf.ClusterKey, "cluster-key", "", "cluster key shared by the primary and its secondaries (required)")
	fl.StringVar(&sf.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// ServerSetup is what the shared flags name, loaded.
type ServerSetup struct {
	Logger     *slog.Logger
	TLS        *tls.Config
	ClusterKey []byte
}

// Parse parses args into fl, checks the shared flags (all required, no
// positional arguments) and loads the logger, the TLS certificate and the
// cluster key. Command-line mistakes wrap ErrUsage.
func (sf *ServerFlags) Parse(fl *flag.FlagSet, args []string) (*ServerSetup, error) {
	if err := fl.Parse(args); err != nil {
		return nil, Usagef("%v", err)
	}
	if sf.Root == "" || sf.Cert == "" || sf.Key == "" || sf.ClusterKey == "" {
		fl.Usage()
		return nil, Usagef("--root, --cert, --key and --cluster-key are required")
	}
	if fl.NArg() > 0 {
		return nil, Usagef("unexpected argument %q", fl.Arg(0))
	}
	log, err := NewLogger(sf.LogLevel)
	if err != nil {
		return nil, err
	}
	key, err := certgen.ReadClusterKey(sf.ClusterKey)
	if err != nil {
		return nil, err
	}
	tlsConf, err := kwik.LoadServerTLS(sf.Cert, sf.Key)
	if err != nil {
		return nil, err
	}
	return &ServerSetup{Logger: log, TLS: tlsConf, ClusterKey: key}, nil
}
