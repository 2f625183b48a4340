// Command kwik-secondary exports a mirror of a kwik-primary's tree: it
// sends file ranges into clients' streams only when the primary delegates
// them (SEND_CHUNK commands relayed by the clients), never on its own.
//
//	kwik-secondary --root DIR --listen HOST:PORT --cert FILE --key FILE --verify-key FILE (--client-ca FILE | --allow-anonymous) [--advertise HOST:PORT]
//	kwik-secondary --config FILE
//
// --verify-key is the primary's public key (repeatable while the primary's
// key is replaced): the secondary can check the primary's path tokens and
// commands, and cannot make any. --advertise is the
// address the primary tells clients to dial (its --secondary flag), spelled
// the same way: the secondary admits only path tokens issued for it. It
// defaults to the bound address, and is required when --listen names no
// host (":4434", "0.0.0.0:4434").
//
// Every flag may be a key of the TOML file --config names instead
// (cli.ApplyConfig); flags on the command line override the file. Limits
// on what clients may hold (--max-commands-per-path, --write-timeout,
// --max-sessions-per-source, ...) are flags with their defaults in --help.
//
// --metrics HOST:PORT serves Prometheus metrics at /metrics (port 0 picks
// a port, logged at info as "metrics addr=HOST:PORT"); docs/operations.md lists
// them.
//
// Once it listens it prints "listening on HOST:PORT" on standard output (the
// real port when --listen asks for port 0) and tells systemd READY=1 (when
// NOTIFY_SOCKET names a socket: a unit of Type=notify); STOPPING=1 once
// told to stop. SIGINT or SIGTERM stop it; it
// exits 0 after its paths are closed.
package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
)

func main() {
	cli.Fail("kwik-secondary", run(os.Args[1:]))
}

// help is kwik-secondary's --help.
var help = cli.Help{
	Usage: "kwik-secondary --root DIR --cert FILE --key FILE --verify-key FILE (--client-ca FILE | --allow-anonymous) [--advertise HOST:PORT] [flags]\nkwik-secondary --config FILE [flags]",
	About: `Exports a mirror of a kwik-primary's tree: it sends file ranges into
clients' streams only when the primary delegates them (commands signed
with the primary's key, which --verify-key checks, relayed by the
clients), never on its own. --advertise is the address the primary's
--secondary names and clients dial; it defaults to the bound address and
is required when --listen names no host. Once it listens it prints
"listening on HOST:PORT" on stdout; SIGINT or SIGTERM stop it. Every flag
may be given as a key of the --config file instead (flags on the command
line override it). Exit status 0 once stopped, 1 on failure, 2 on a usage
error.`,
	Examples: `kwik-secondary --root /srv/mirror --listen 0.0.0.0:4434 --advertise 10.0.0.2:4434 \
    --cert certs/server.pem --key certs/server-key.pem --client-ca certs/ca.pem \
    --verify-key certs/verify-key.pem
# from /etc/kwikfs/secondary.toml (verify-key = ["/etc/kwikfs/verify-key.pem"], ...):
kwik-secondary --config /etc/kwikfs/secondary.toml`,
}

func run(args []string) error {
	fl := cli.NewFlagSet("kwik-secondary", help)
	var sf cli.ServerFlags
	sf.Register(fl, "`DIR`, the tree to export: a mirror of the primary's", "127.0.0.1:4434", "client paths")
	advertise := fl.String("advertise", "", "address clients are told to dial, as the primary's --secondary names it (default: the bound address)")
	var verifyFiles cli.StringList
	fl.Var(&verifyFiles, "verify-key", "the primary's Ed25519 public key, PEM `FILE` (kwikfs certs writes verify-key.pem); repeat it to accept the old and the new key while the primary's is replaced (required)")
	maxCommands := fl.Int("max-commands-per-path", kwik.DefaultMaxCommandsPerPath, "commands of one client path served at once; the path relays no further command meanwhile")
	writeTimeout := fl.Duration("write-timeout", kwik.DefaultWriteTimeout, "how long a client may take none of a command's data (it stopped reading, or its network died) before its path is closed")
	so := server.SecondaryOptions{PieceSize: server.DefaultPieceSize}
	fl.IntVar(&so.MaxConcurrentCommands, "max-concurrent-commands", server.DefaultMaxConcurrentCommands, "commands served at once, over all paths")
	pieceSize := cli.Size(server.DefaultPieceSize)
	fl.Var(&pieceSize, "piece-size", "`SIZE` read from the file and written to the client at a time, from 4K to 16M; each command served holds one buffer of it")
	setup, err := sf.Parse(fl, args)
	if err != nil {
		return err
	}
	if *maxCommands < 1 || so.MaxConcurrentCommands < 1 {
		return cli.Usagef("--max-commands-per-path and --max-concurrent-commands must be at least 1")
	}
	if *writeTimeout <= 0 {
		return cli.Usagef("--write-timeout must be positive")
	}
	if pieceSize < 4<<10 || pieceSize > 16<<20 {
		return cli.Usagef("--piece-size must be between 4K and 16M, not %s", pieceSize.String())
	}
	if *advertise == "" {
		// Tokens name the address clients dial; a wildcard never is one.
		host, _, err := net.SplitHostPort(sf.Listen)
		if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && ip.IsUnspecified()) {
			return cli.Usagef("--advertise is required when --listen %q names no host", sf.Listen)
		}
	}
	log := setup.Logger
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
	so.Logger, so.PieceSize = log, int(pieceSize)
	s, err := server.NewSecondary(sf.Root, &so)
	if err != nil {
		return err
	}
	defer s.Close()
	conf := setup.Kwik
	conf.VerifyKeys, conf.AdvertiseAddr = verifyKeys, *advertise
	conf.MaxCommandsPerPath, conf.WriteTimeout = *maxCommands, *writeTimeout
	sec, err := kwik.ListenSecondary(sf.Listen, conf)
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
	cli.NotifySystemd(log, sd.SdNotifyReady)
	err = s.Serve(ctx, sec)
	cli.NotifySystemd(log, sd.SdNotifyStopping)
	if err != nil && ctx.Err() == nil {
		return err
	}
	st := s.Stats()
	log.Info("stopped", "commands", st.Commands, "completed", st.Completed, "bytes_sent", st.BytesSent,
		"not_found", st.NotFound, "outside_root", st.OutsideRoot, "short_file", st.ShortFile,
		"bad_commands", st.BadCommands, "failed", st.Failed)
	return nil
}
