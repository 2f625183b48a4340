// Command kwik-primary exports a directory tree to kwikfs clients over a
// kwik session and coordinates every transfer.
//
//	kwik-primary --root DIR --listen HOST:PORT --cert FILE --key FILE --signing-key FILE (--client-ca FILE | --allow-anonymous) [--secondary HOST:PORT[,name=NAME]]...
//
// Each --secondary names a kwik-secondary serving a mirror of the root, by
// the address clients dial (its --advertise address); every client session
// gets a path to each, and READ replies are divided between the primary and
// the secondaries up. --signing-key, the primary's Ed25519 private key,
// signs the path tokens and the delegated commands; the secondaries hold
// only its public half (their --verify-key). A secondary whose certificate
// is its own, for a name other than the host it is dialled at, is named
// "--secondary HOST:PORT,name=NAME": clients verify it for NAME.
//
// --hash names the algorithm manifests hash chunks with: blake3 (the
// default) or sha256, for clients that predate BLAKE3.
//
// --metrics HOST:PORT serves Prometheus metrics at /metrics (port 0 picks
// a port, logged at info as "metrics addr=HOST:PORT"); the README lists
// them.
//
// Once it listens it prints "listening on HOST:PORT" on standard output (the
// real port when --listen asks for port 0). SIGINT or SIGTERM stop it; it
// exits 0 after its sessions are closed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/transfer"
)

func main() {
	cli.Fail("kwik-primary", run(os.Args[1:]))
}

func run(args []string) error {
	fl := flag.NewFlagSet("kwik-primary", flag.ContinueOnError)
	var sf cli.ServerFlags
	sf.Register(fl, "directory to export", "127.0.0.1:4433")
	chunkSize := fl.Uint("chunk-size", 1<<20, "chunk size in bytes for manifests")
	hash := fl.String("hash", "blake3", "chunk hash algorithm of manifests: blake3, or sha256 for clients that predate BLAKE3")
	signingKey := fl.String("signing-key", "", "the primary's Ed25519 private key, PEM `FILE` (kwikfs certs writes signing-key.pem): it signs path tokens and commands for the secondaries (required)")
	var secondaries cli.StringList
	fl.Var(&secondaries, "secondary", "`HOST:PORT[,name=NAME]` of a secondary, as clients dial it, and the name its certificate carries when not HOST (repeatable)")
	var co server.CoordinatorOptions
	fl.Float64Var(&co.LateFactor, "late-factor", 4, "a unit given to a path is late, and reassigned, after this many times its expected time plus --late-slack")
	fl.DurationVar(&co.LateSlack, "late-slack", 150*time.Millisecond, "added to a unit's deadline (see --late-factor)")
	fl.DurationVar(&co.MissCooldown, "miss-cooldown", 2*time.Second, "how long a secondary that missed 3 units in a row gets no work for the file")
	fl.DurationVar(&co.PathRetryMax, "path-retry-max", 10*time.Second, "longest wait between attempts to re-add a lost secondary path (jittered backoff from 200ms)")
	serveData := fl.String("serve-data", "share", "share: the primary sends its share of file data, by the rate it measures on each path; fallback: only when no secondary can (the secondaries carry the bytes, the primary coordinates)")
	setup, err := sf.Parse(fl, args)
	if err != nil {
		return err
	}
	if *chunkSize < 4096 || *chunkSize > 16<<20 {
		return cli.Usagef("--chunk-size must be between 4 KiB and 16 MiB")
	}
	if _, err := transfer.ParseHashAlg(*hash); err != nil {
		return cli.Usagef("--hash: %v", err)
	}
	switch *serveData {
	case "share":
	case "fallback":
		co.PrimaryFallback = true
	default:
		return cli.Usagef("--serve-data must be share or fallback, not %q", *serveData)
	}
	if co.LateFactor < 1 || co.LateSlack <= 0 || co.MissCooldown <= 0 || co.PathRetryMax <= 0 {
		return cli.Usagef("--late-factor must be at least 1 and --late-slack, --miss-cooldown, --path-retry-max positive")
	}
	log, tlsConf := setup.Logger, setup.TLS
	if *signingKey == "" {
		return cli.Usagef("--signing-key is required (kwikfs certs writes signing-key.pem)")
	}
	sk, err := certgen.ReadSigningKey(*signingKey)
	if err != nil {
		return err
	}
	addrs, names, err := parseSecondaries(secondaries)
	if err != nil {
		return err
	}
	p, err := server.NewPrimary(sf.Root, &server.PrimaryOptions{
		Catalog:        server.CatalogOptions{ChunkSize: uint32(*chunkSize), Hash: *hash},
		Logger:         log,
		Secondaries:    addrs,
		SecondaryNames: names,
		Coordinator:    co,
	})
	if err != nil {
		return err
	}
	defer p.Close()
	if sf.Pprof != "" {
		stopPprof, err := cli.ServePprof(sf.Pprof, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	ln, err := kwik.Listen(sf.Listen, &kwik.Config{TLSConfig: tlsConf, Logger: log, StatelessResetSecret: setup.ResetSecret, SigningKey: sk})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sf.Listen, err)
	}
	defer ln.Close()
	if sf.Metrics != "" {
		ms, err := metrics.ListenAndServe(sf.Metrics, log, metrics.NewPrimaryCollector(p, ln))
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Info("serving", "root", sf.Root, "listen", ln.Addr().String(), "secondaries", addrs)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Serve(ctx, ln); err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// parseSecondaries splits --secondary values, HOST:PORT[,name=NAME], into
// the addresses and the names of those that give one.
func parseSecondaries(values []string) (addrs []string, names map[string]string, err error) {
	names = make(map[string]string)
	for _, v := range values {
		addr, opt, hasOpt := strings.Cut(v, ",")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, nil, cli.Usagef("--secondary %q: %v", v, err)
		}
		if hasOpt {
			name, ok := strings.CutPrefix(opt, "name=")
			if !ok || name == "" || strings.ContainsAny(name, ", ") {
				return nil, nil, cli.Usagef("--secondary %q: want HOST:PORT or HOST:PORT,name=NAME", v)
			}
			names[addr] = name
		}
		addrs = append(addrs, addr)
	}
	return addrs, names, nil
}
