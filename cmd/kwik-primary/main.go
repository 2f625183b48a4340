// Command kwik-primary exports a directory tree to kwikfs clients over a
// kwik session and coordinates every transfer.
//
//	kwik-primary --root DIR --listen HOST:PORT --cert FILE --key FILE --cluster-key FILE (--client-ca FILE | --allow-anonymous) [--secondary HOST:PORT]...
//
// Each --secondary names a kwik-secondary serving a mirror of the root, by
// the address clients dial (its --advertise address); every client session
// gets a path to each, and READ replies are divided between the primary and
// the secondaries up. The cluster key signs the path tokens and the
// delegated commands.
//
// --hash names the algorithm manifests hash chunks with: blake3 (the
// default) or sha256, for clients that predate BLAKE3.
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

	"github.com/kwikfs/kwikfs/internal/cli"
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
	var secondaries addrList
	fl.Var(&secondaries, "secondary", "HOST:PORT of a secondary, as clients dial it (repeatable)")
	var co server.CoordinatorOptions
	fl.Float64Var(&co.LateFactor, "late-factor", 4, "a unit given to a path is late, and reassigned, after this many times its expected time plus --late-slack")
	fl.DurationVar(&co.LateSlack, "late-slack", 150*time.Millisecond, "added to a unit's deadline (see --late-factor)")
	fl.DurationVar(&co.MissCooldown, "miss-cooldown", 2*time.Second, "how long a secondary that missed 3 units in a row gets no work for the file")
	fl.DurationVar(&co.PathRetryMax, "path-retry-max", 10*time.Second, "longest wait between attempts to re-add a lost secondary path (backoff from 200ms)")
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
	log, tlsConf, clusterSecret := setup.Logger, setup.TLS, setup.ClusterKey
	for _, a := range secondaries {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return cli.Usagef("--secondary %q: %v", a, err)
		}
	}
	p, err := server.NewPrimary(sf.Root, &server.PrimaryOptions{
		Catalog:     server.CatalogOptions{ChunkSize: uint32(*chunkSize), Hash: *hash},
		Logger:      log,
		Secondaries: secondaries,
		Coordinator: co,
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
	ln, err := kwik.Listen(sf.Listen, &kwik.Config{TLSConfig: tlsConf, Logger: log, StatelessResetSecret: clusterSecret, ClusterKey: clusterSecret})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sf.Listen, err)
	}
	defer ln.Close()
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Info("serving", "root", sf.Root, "listen", ln.Addr().String(), "secondaries", []string(secondaries))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Serve(ctx, ln); err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// addrList is a repeatable flag of addresses.
type addrList []string

func (l *addrList) String() string { return strings.Join(*l, ",") }

func (l *addrList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
