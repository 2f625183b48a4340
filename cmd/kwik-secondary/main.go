// Command kwik-secondary exports a mirror of a kwik-primary's tree: it
// sends file ranges into clients' streams only when the primary delegates
// them (SEND_CHUNK commands relayed by the clients), never on its own.
//
//	kwik-secondary --root DIR --listen HOST:PORT --cert FILE --key FILE --verify-key FILE (--client-ca FILE | --allow-anonymous) [--advertise HOST:PORT]
//
// --verify-key is the primary's public key (repeatable while the primary's
// key is replaced): the secondary can check the primary's path tokens and
// commands, and cannot make any. --advertise is the
// address the primary tells clients to dial (its --secondary flag), spelled
// the same way: the secondary admits only path tokens issued for it. It
// defaults to the bound address, and is required when --listen names no
// host (":4434", "0.0.0.0:4434").
//
// --metrics HOST:PORT serves Prometheus metrics at /metrics (port 0 picks
// a port, logged at info as "metrics addr=HOST:PORT"); the README lists
// them.
//
// Once it listens it prints "listening on HOST:PORT" on standard output (the
// real port when --listen asks for port 0). SIGINT or SIGTERM stop it; it
// exits 0 after its paths are closed.
package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
)

func main() {
	cli.Fail("kwik-secondary", run(os.Args[1:]))
}

func run(args []string) error {
	fl := flag.NewFlagSet("kwik-secondary", flag.ContinueOnError)
	var sf cli.ServerFlags
	sf.Register(fl, "directory to export, a mirror of the primary's", "127.0.0.1:4434")
	advertise := fl.String("advertise", "", "address clients are told to dial, as the primary's --secondary names it (default: the bound address)")
	var verifyFiles cli.StringList
	fl.Var(&verifyFiles, "verify-key", "the primary's Ed25519 public key, PEM `FILE` (kwikfs certs writes verify-key.pem); repeat it to accept the old and the new key while the primary's is replaced (required)")
	setup, err := sf.Parse(fl, args)
	if err != nil {
		return err
	}
	if *advertise == "" {
		// Tokens name the address clients dial; a wildcard never is one.
		host, _, err := net.SplitHostPort(sf.Listen)
		if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
			return cli.Usagef("--advertise is required when --listen %q names no host", sf.Listen)
		}
	}
	log, tlsConf := setup.Logger, setup.TLS
	if len(verifyFiles) == 0 {
		return cli.Usagef("--verify-key is required (kwikfs certs writes verify-key.pem)")
	}
	var verifyKeys []ed25519.PublicKey
	for _, f := range verifyFiles {
		k, err := certgen.ReadVerifyKey(f)
		if err != nil {
			return err
		}
		verifyKeys = append(verifyKeys, k)
	}
	if sf.Pprof != "" {
		stopPprof, err := cli.ServePprof(sf.Pprof, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	s, err := server.NewSecondary(sf.Root, &server.SecondaryOptions{Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	sec, err := kwik.ListenSecondary(sf.Listen, &kwik.Config{
		TLSConfig:            tlsConf,
		Logger:               log,
		VerifyKeys:           verifyKeys,
		StatelessResetSecret: setup.ResetSecret,
		AdvertiseAddr:        *advertise,
	})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sf.Listen, err)
	}
	defer sec.Close()
	if sf.Metrics != "" {
		ms, err := metrics.ListenAndServe(sf.Metrics, log, metrics.NewSecondaryCollector(s, sec))
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	fmt.Printf("listening on %s\n", sec.Addr())
	log.Info("serving", "root", sf.Root, "listen", sec.Addr().String(), "advertise", sec.AdvertisedAddr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Closing the secondary at once ends its paths, so that no command
	// still writing to a client delays the exit.
	closeOnSignal := context.AfterFunc(ctx, func() { sec.Close() })
	defer closeOnSignal()
	if err := s.Serve(ctx, sec); err != nil && ctx.Err() == nil {
		return err
	}
	st := s.Stats()
	log.Info("stopped", "commands", st.Commands, "completed", st.Completed, "bytes_sent", st.BytesSent,
		"not_found", st.NotFound, "outside_root", st.OutsideRoot, "short_file", st.ShortFile,
		"bad_commands", st.BadCommands, "failed", st.Failed)
	return nil
}
