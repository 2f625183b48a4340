package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/internal/demo"
)

func runMount(ctx context.Context, args []string) error {
	m := newMountCommand()
	m.argv = append([]string{"mount"}, args...)
	if err := m.fl.Parse(args); err != nil {
		return err
	}
	if m.fl.NArg() != 1 {
		m.fl.Usage()
		return cli.Usagef("mount needs --primary, --ca, --cache and one MOUNTPOINT")
	}
	m.cfg.Mountpoint = m.fl.Arg(0)
	return m.run(ctx)
}

// readAheadMax turns the --read-ahead value (chunks, 0 disables) into
// daemon.Config.ReadAheadMax (0 is the default there, negative disables).
func readAheadMax(chunks int) (int, error) {
	switch {
	case chunks < 0:
		return 0, cli.Usagef("--read-ahead %d: must be 0 (off) or a number of chunks", chunks)
	case chunks == 0:
		return -1, nil
	}
	return chunks, nil
}

func runStatus(ctx context.Context, args []string) error {
	fl := cli.NewFlagSet("kwikfs status", statusHelp)
	asJSON := fl.Bool("json", false, "print the raw status as JSON")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return cli.Usagef("status needs one MOUNTPOINT")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := control.QueryStatus(ctx, fl.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(st)
	return nil
}

func printStatus(st *control.Status) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "mountpoint\t%s\n", st.Mountpoint)
	state := "connected"
	if !st.Connected {
		state = "not connected (serving the cache; reconnects on demand)"
	}
	fmt.Fprintf(w, "primary\t%s, %s\n", st.Primary, state)
	fmt.Fprintf(w, "cache\t%s\n", st.CacheDir)
	fmt.Fprintf(w, "uptime\t%s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(w, "data fetched\t%s in %d chunks\n", humanBytes(st.FS.BytesFetched), st.FS.ChunksFetched)
	fmt.Fprintf(w, "reads served\t%d from memory, %d from the store\n", st.FS.MemoryHits, st.FS.StoreHits)
	fmt.Fprintf(w, "store\t%s in %d chunks%s\n", humanBytes(st.Store.ChunkBytes), st.Store.Chunks, storeLimit(st))
	fmt.Fprintf(w, "fetch errors\t%d\n", st.FS.FetchErrors)
	if st.MetricsAddr != "" {
		fmt.Fprintf(w, "metrics\thttp://%s/metrics\n", st.MetricsAddr)
	}
	w.Flush()
	if len(st.Paths) > 0 {
		fmt.Println()
		printPaths(os.Stdout, st)
	}
	if len(st.Prefetch) > 0 {
		fmt.Println()
		printPrefetchJobs(os.Stdout, st.Prefetch)
	}
}

// storeLimit describes the store's disk space against its limit, e.g.
// ", 7.9 MiB of 8.0 MiB on disk, 12 evicted (12.0 MiB)".
func storeLimit(st *control.Status) string {
	s := st.Store
	if s.Limit <= 0 {
		return fmt.Sprintf(", %s on disk, no limit", humanBytes(s.DiskBytes))
	}
	out := fmt.Sprintf(", %s of %s on disk, %d evicted (%s)", humanBytes(s.DiskBytes), humanBytes(s.Limit), s.Evicted, humanBytes(s.EvictedBytes))
	if s.PinnedBytes > 0 {
		out += fmt.Sprintf(", %s pinned (open files, prefetch jobs)", humanBytes(s.PinnedBytes))
	}
	if s.DiskBytes > s.Limit {
		out += " (over the limit: the rest is pinned)"
	}
	return out
}

// printPaths prints one row per path of the session. Figures only the
// primary knows (rate, chunks, strikes, in flight) show "-" when it did not
// report them, and a note says why.
func printPaths(out io.Writer, st *control.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "path\tserver\tstate\tRTT\trate\tdelivered\tchunks\tstrikes\tin flight\tduplicates\t\n")
	for _, p := range st.Paths {
		state := p.State
		if p.Stalled {
			state = "stalled" // failed: closed for sending nothing
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%.1f ms\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			p.ID, p.Remote, state, p.RTTMillis,
			optional(p.RateBytesPerSec, func(v uint64) string { return humanBytes(int64(v)) + "/s" }),
			humanBytes(int64(p.BytesDelivered)),
			optional(p.ChunksDelivered, func(v uint64) string { return fmt.Sprint(v) }),
			optional(p.Strikes, func(v uint64) string { return fmt.Sprint(v) }),
			optional(p.InFlightBytes, func(v uint64) string { return humanBytes(int64(v)) }),
			humanBytes(int64(p.Duplicates)))
	}
	w.Flush()
	if st.PathReportError != "" {
		fmt.Fprintf(out, "(rate, chunks, strikes and in flight unknown: %s)\n", st.PathReportError)
	}
}

// optional formats *v, or "-" when v is nil.
func optional(v *uint64, f func(uint64) string) string {
	if v == nil {
		return "-"
	}
	return f(*v)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func runCerts(args []string) error {
	fl := cli.NewFlagSet("kwikfs certs", certsHelp)
	out := fl.String("out", "", "`DIR` to write ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem, signing-key.pem and verify-key.pem to (required)")
	var hosts cli.StringList
	fl.Var(&hosts, "host", "DNS name or IP address the server certificate is valid for, `NAME_OR_IP`; repeatable (default localhost, 127.0.0.1, ::1; with --server, NAME)")
	client := fl.String("client", "", "issue one more client certificate, client-`NAME`.pem and client-NAME-key.pem, from the CA already in --out (ca.pem, ca-key.pem)")
	serverName := fl.String("server", "", "issue a certificate of its own for one server, server-`NAME`.pem and server-NAME-key.pem, valid for --host (default NAME), from the CA already in --out")
	signingOnly := fl.Bool("signing-key-only", false, "write only a new signing-key.pem and verify-key.pem into --out (to replace the primary's key: see docs/operations.md)")
	validity := fl.Duration("validity", certgen.Validity, "how long a certificate --client or --server issues stays valid")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || fl.NArg() != 0 {
		fl.Usage()
		return cli.Usagef("certs needs --out DIR")
	}
	switch {
	case (*client != "") && (*serverName != "" || *signingOnly), *serverName != "" && *signingOnly:
		return cli.Usagef("--client, --server and --signing-key-only exclude each other")
	case *client != "":
		if len(hosts) > 0 {
			return cli.Usagef("--client and --host exclude each other")
		}
		return issueClient(*out, *client, *validity)
	case *serverName != "":
		return issueServer(*out, *serverName, hosts, *validity)
	case *signingOnly:
		if err := certgen.WriteSigningKey(*out); err != nil {
			return err
		}
		fmt.Printf("wrote %s and %s\n", filepath.Join(*out, certgen.SigningKeyFile), filepath.Join(*out, certgen.VerifyKeyFile))
		return nil
	}
	b, err := certgen.Generate(hosts)
	if err != nil {
		return err
	}
	if err := b.WriteDir(*out); err != nil {
		return err
	}
	fmt.Printf("wrote %s/{%s,%s,%s,%s,%s,%s,%s,%s}; the server certificate is for %s\n", *out,
		certgen.CAFile, certgen.CAKeyFile, certgen.CertFile, certgen.KeyFile,
		certgen.ClientCertFile, certgen.ClientKeyFile, certgen.SigningKeyFile, certgen.VerifyKeyFile, strings.Join(b.Hosts, ", "))
	return nil
}

// clientName is what `kwikfs certs --client` and `--server` accept as a
// name: it becomes part of two file names.
var clientName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// issueClient issues client certificate name from the CA in dir.
func issueClient(dir, name string, validity time.Duration) error {
	if !clientName.MatchString(name) {
		return cli.Usagef("--client %q: a name of letters, digits, '.', '_' and '-', at most 64", name)
	}
	if validity <= 0 {
		return cli.Usagef("--validity must be positive")
	}
	ca, err := certgen.LoadCA(filepath.Join(dir, certgen.CAFile), filepath.Join(dir, certgen.CAKeyFile))
	if err != nil {
		return err
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.IssueClient(name, now.Add(-time.Hour), now.Add(validity))
	if err != nil {
		return err
	}
	return writeIssued(dir, "client-"+name, certPEM, keyPEM, now.Add(validity))
}

// issueServer issues a certificate for server name, valid for hosts
// (default: name), from the CA in dir.
func issueServer(dir, name string, hosts []string, validity time.Duration) error {
	if !clientName.MatchString(name) {
		return cli.Usagef("--server %q: a name of letters, digits, '.', '_' and '-', at most 64", name)
	}
	if validity <= 0 {
		return cli.Usagef("--validity must be positive")
	}
	if len(hosts) == 0 {
		hosts = []string{name}
	}
	ca, err := certgen.LoadCA(filepath.Join(dir, certgen.CAFile), filepath.Join(dir, certgen.CAKeyFile))
	if err != nil {
		return err
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.IssueServer(hosts, now.Add(-time.Hour), now.Add(validity))
	if err != nil {
		return err
	}
	return writeIssued(dir, "server-"+name, certPEM, keyPEM, now.Add(validity))
}

// writeIssued writes an issued certificate and key as BASE.pem and
// BASE-key.pem into dir and says so.
func writeIssued(dir, base string, certPEM, keyPEM []byte, until time.Time) error {
	certName, keyName := base+".pem", base+"-key.pem"
	if err := certgen.WritePair(dir, certName, keyName, certPEM, keyPEM); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s, valid until %s\n", filepath.Join(dir, certName), filepath.Join(dir, keyName), until.Format(time.DateOnly))
	return nil
}

func runDemo(ctx context.Context, args []string) error {
	fl := cli.NewFlagSet("kwikfs demo", demoHelp)
	var cfg demo.Config
	fl.StringVar(&cfg.Dir, "dir", "demo", "working `DIR`: certificates, the sample tree and the cache")
	fl.StringVar(&cfg.Tree, "tree", "", "`DIR` to export (default: a sample tree made under --dir)")
	fl.StringVar(&cfg.Mountpoint, "mountpoint", "mnt", "`DIR` to mount at")
	logLevel := fl.String("log-level", "warn", "debug, info, warn or error")
	faults := fl.Bool("faults", false, "play a scripted story of faults instead of serving: a secondary killed and restarted during a copy,\nthe mount daemon killed with SIGKILL during another and mounted again; every copy checked with sha256")
	faultsSize := cli.Size(demo.DefaultFaultsSize)
	fl.Var(&faultsSize, "faults-size", "`SIZE` of each of the two files --faults copies, e.g. 24M or 1G")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		fl.Usage()
		return cli.Usagef("demo takes no arguments")
	}
	sizeSet := false
	fl.Visit(func(f *flag.Flag) { sizeSet = sizeSet || f.Name == "faults-size" })
	if sizeSet && !*faults {
		return cli.Usagef("--faults-size goes with --faults")
	}
	log, err := cli.NewLogger(*logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = log
	if *faults {
		cfg.FaultsSize = int64(faultsSize)
		return demo.RunFaults(ctx, cfg, os.Stdout)
	}
	return demo.Run(ctx, cfg, os.Stdout)
}
