// Command kwik-primary exports a directory tree to kwikfs clients over a
// kwik session and coordinates every transfer.
//
//	kwik-primary --root DIR --listen HOST:PORT --cert FILE --key FILE --signing-key FILE (--client-ca FILE | --allow-anonymous) [--secondary HOST:PORT[,name=NAME]]...
//	kwik-primary --config FILE
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
// Every flag may be a key of the TOML file --config names instead
// (cli.ApplyConfig); flags on the command line override the file. Limits
// on what clients may hold (--max-sessions-per-source, --reply-budget,
// --max-concurrent-hashes, ...) are flags with their defaults in --help.
//
// --metrics HOST:PORT serves Prometheus metrics at /metrics (port 0 picks
// a port, logged at info as "metrics addr=HOST:PORT"); docs/operations.md lists
// them.
//
// Once it listens it prints "listening on HOST:PORT" on standard output (the
// real port when --listen asks for port 0) and tells systemd READY=1 (when
// NOTIFY_SOCKET names a socket: a unit of Type=notify); STOPPING=1 once
// told to stop. SIGINT or SIGTERM stop it; it
// exits 0 after its sessions are closed.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
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

// help is kwik-primary's --help.
var help = cli.Help{
	Usage: "kwik-primary --root DIR --cert FILE --key FILE --signing-key FILE (--client-ca FILE | --allow-anonymous) [--secondary HOST:PORT[,name=NAME]]... [flags]\nkwik-primary --config FILE [flags]",
	About: `Exports the directory tree DIR, read-only, to kwikfs clients over kwik
sessions, and coordinates every transfer: it answers listings and
manifests (the chunk hashes of each file) and divides READ replies between
itself and the secondaries (kwik-secondary, each serving a mirror of DIR)
by the rate it measures on each path. --signing-key signs the path tokens
and commands the secondaries verify. Once it listens it prints "listening
on HOST:PORT" on stdout; SIGINT or SIGTERM stop it. Every flag may be
given as a key of the --config file instead (flags on the command line
override it). Exit status 0 once stopped, 1 on failure, 2 on a usage error.`,
	Examples: `kwik-primary --root /srv/data --listen 0.0.0.0:4433 --cert certs/server.pem \
    --key certs/server-key.pem --client-ca certs/ca.pem --signing-key certs/signing-key.pem \
    --secondary 10.0.0.2:4434 --secondary 10.0.0.3:4434
# the same from /etc/kwikfs/primary.toml (root = "/srv/data", listen = "0.0.0.0:4433", ...),
# with another port:
kwik-primary --config /etc/kwikfs/primary.toml --listen 0.0.0.0:5433`,
}

func run(args []string) error {
	fl := cli.NewFlagSet("kwik-primary", help)
	var sf cli.ServerFlags
	sf.Register(fl, "`DIR`, the tree to export", "127.0.0.1:4433", "sessions")
	chunkSize := cli.Size(transfer.DefaultChunkSize)
	fl.Var(&chunkSize, "chunk-size", "chunk `SIZE` of manifests, from 4K to 16M")
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
	po := server.PrimaryOptions{Catalog: server.CatalogOptions{MaxConcurrentHashes: runtime.GOMAXPROCS(0)}}
	fl.IntVar(&po.MaxConcurrentRequests, "max-concurrent-requests", server.DefaultMaxConcurrentRequests, "requests one session has served at once; its further streams wait")
	fl.DurationVar(&po.RequestTimeout, "request-timeout", server.DefaultRequestTimeout, "how long a client may take to send a whole request")
	fl.DurationVar(&po.WriteTimeout, "write-timeout", server.DefaultWriteTimeout, "how long a reply may make no progress (the client reads none of it) before its stream is reset")
	fl.DurationVar(&po.ReplyTimeout, "reply-timeout", server.DefaultReplyTimeout, "how long a reply other than READ (a listing, a manifest) may take to send whole before its stream is reset")
	replyBudget := cli.Size(server.DefaultReplyBudget)
	fl.Var(&replyBudget, "reply-budget", "`SIZE` of memory that listing, manifest and FILES replies hold at once, over all sessions; a request waits for its share")
	manifestCache := cli.Size(server.DefaultManifestCacheBytes)
	fl.Var(&manifestCache, "manifest-cache", "`SIZE` of memory for cached manifests and their encoded replies (about 64 bytes per chunk)")
	fl.IntVar(&po.Catalog.ManifestCacheEntries, "manifest-cache-entries", server.DefaultManifestCacheEntries, "manifests cached at most")
	fl.IntVar(&po.Catalog.MaxConcurrentHashes, "max-concurrent-hashes", po.Catalog.MaxConcurrentHashes, "files hashed at once to compute manifests, over all sessions; the default is GOMAXPROCS, one per CPU")
	setup, err := sf.Parse(fl, args)
	if err != nil {
		return err
	}
	if chunkSize < transfer.MinChunkSize || chunkSize > transfer.MaxChunkSize {
		return cli.Usagef("--chunk-size must be between 4K and 16M, not %s", chunkSize.String())
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
	if po.MaxConcurrentRequests < 1 || po.Catalog.ManifestCacheEntries < 1 || po.Catalog.MaxConcurrentHashes < 1 {
		return cli.Usagef("--max-concurrent-requests, --manifest-cache-entries and --max-concurrent-hashes must be at least 1")
	}
	if po.RequestTimeout <= 0 || po.WriteTimeout <= 0 || po.ReplyTimeout <= 0 {
		return cli.Usagef("--request-timeout, --write-timeout and --reply-timeout must be positive")
	}
	log := setup.Logger
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
	po.Catalog.ChunkSize, po.Catalog.Hash, po.Catalog.ManifestCacheBytes = uint32(chunkSize), *hash, int64(manifestCache)
	po.ReplyBudget, po.Logger, po.Secondaries, po.SecondaryNames, po.Coordinator = int64(replyBudget), log, addrs, names, co
	p, err := server.NewPrimary(sf.Root, &po)
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
	conf := setup.Kwik
	conf.SigningKey = sk
	ln, err := kwik.Listen(sf.Listen, conf)
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
	cli.NotifySystemd(log, sd.SdNotifyReady)
	err = p.Serve(ctx, ln)
	cli.NotifySystemd(log, sd.SdNotifyStopping)
	if err != nil && ctx.Err() == nil {
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
