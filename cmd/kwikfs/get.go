package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/daemon"
	"github.com/kwikfs/kwikfs/internal/download"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// runGet copies remote files and trees to local disk without a mount
// (internal/download does the work) and reports progress and a summary.
func runGet(ctx context.Context, args []string) error {
	fl := cli.NewFlagSet("kwikfs get", getHelp)
	fl.AddConfigFlag()
	primary := fl.String("primary", "", "primary server `HOST:PORT` (required)")
	caFile := fl.String("ca", "", "CA certificate that signed the servers' certificates, PEM `FILE` (required)")
	certFile := fl.String("cert", "", "client certificate, PEM `FILE`, presented to servers started with --client-ca (kwikfs certs writes client.pem)")
	keyFile := fl.String("key", "", "private key of --cert, PEM `FILE` (kwikfs certs writes client-key.pem)")
	serverName := fl.String("server-name", "", "TLS `NAME` to verify (default: the host of --primary)")
	cacheDir := fl.String("cache", "", "cache `DIR`: chunks are taken from the chunk store DIR/store when it holds them and every chunk fetched is added to it\n(the layout of a mount's --cache, which it may share, though not while the mount runs)")
	var limit cacheSize
	fl.Var(&limit, "cache-size", "`SIZE` of disk space for the chunks of --cache, e.g. 512M or 10G; auto (the default): half of the free space of its filesystem; unlimited or 0: no limit")
	jobs := fl.Int("jobs", download.DefaultWorkers, "files downloaded, and directories listed, at once")
	connectTimeout := fl.Duration("connect-timeout", download.DefaultConnectTimeout, "how long to wait for the primary's first answer (later, an unreachable primary is waited for until interrupted)")
	quiet := fl.Bool("quiet", false, "print nothing but errors: no progress, no summary")
	logLevel := fl.String("log-level", "warn", "debug, info, warn or error")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() < 2 || *primary == "" || *caFile == "" {
		fl.Usage()
		return cli.Usagef("get needs --primary, --ca, at least one REMOTE_PATH and a DEST")
	}
	if (*certFile == "") != (*keyFile == "") {
		return cli.Usagef("--cert and --key go together")
	}
	if *jobs < 1 {
		return cli.Usagef("--jobs %d: must be at least 1", *jobs)
	}
	if *connectTimeout <= 0 {
		return cli.Usagef("--connect-timeout must be positive")
	}
	remotes := fl.Args()[:fl.NArg()-1]
	dest := fl.Arg(fl.NArg() - 1)
	if dest == "" {
		return cli.Usagef("DEST is empty")
	}
	for _, r := range remotes {
		if _, err := download.CleanPath(r); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	log, err := cli.NewLogger(*logLevel)
	if err != nil {
		return err
	}

	tlsConf, err := kwik.LoadClientTLS(*caFile, *serverName)
	if err != nil {
		return err
	}
	if *certFile != "" {
		if err := kwik.UseClientCertificate(tlsConf, *certFile, *keyFile); err != nil {
			return err
		}
	}
	var store *chunkstore.Store
	if *cacheDir != "" {
		if store, err = daemon.OpenCache(*cacheDir, int64(limit), log); err != nil {
			return err
		}
		defer store.Close()
	}
	job := download.New(&download.Options{Workers: *jobs, Store: store, ConnectTimeout: *connectTimeout, Logger: log})
	client := transfer.NewClient(*primary, &transfer.ClientOptions{
		Config: &kwik.Config{TLSConfig: tlsConf, Logger: log},
		Logger: log,
	})
	defer client.Close()

	line := &liveLine{out: os.Stderr, term: cli.IsTerminal(os.Stderr)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if !*quiet {
		wg.Go(func() { showGetProgress(job, line, stop) })
	}
	res, err := job.Run(ctx, client, remotes, dest)
	close(stop)
	wg.Wait()

	for _, f := range res.Failures {
		fmt.Fprintf(os.Stderr, "kwikfs get: %s: %v\n", displayRemote(f.Path), f.Err)
	}
	if !*quiet && (err == nil || errors.Is(err, context.Canceled)) {
		fmt.Println(getSummary(res.Stats))
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "kwikfs get: interrupted: run the same command again to fetch what is missing")
	}
	if res.Left != "" {
		fmt.Fprintf(os.Stderr, "kwikfs get: the copy is incomplete, in %s: run the same command again to finish it\n", res.Left)
	}
	switch {
	case err != nil:
		return err
	case len(res.Failures) > 0 || res.FilesFailed > 0:
		return fmt.Errorf("get: not everything was copied: %d of %d files failed; %d errors named above", res.FilesFailed, res.FilesTotal, len(res.Failures))
	}
	return nil
}

// displayRemote is how a remote path is named in messages: as given, or
// "/" for the root.
func displayRemote(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// showGetProgress draws the progress of job on line until stop is closed,
// then draws the final figures once more and ends the line.
func showGetProgress(job *download.Job, line *liveLine, stop <-chan struct{}) {
	var bytes, files rateMeter
	t := time.NewTicker(line.every())
	defer t.Stop()
	for {
		st := job.Stats()
		now := time.Now()
		bytes.add(now, st.BytesFetched)
		files.add(now, st.FilesCopied+st.FilesSkipped+st.FilesFailed)
		select {
		case <-stop:
			st = job.Stats()
			secs := max(st.Elapsed.Seconds(), 1e-3)
			line.draw(getProgressLine(st, float64(st.BytesFetched)/secs, 0))
			line.end()
			return
		default:
		}
		line.draw(getProgressLine(st, bytes.rate(), files.rate()))
		select {
		case <-stop:
		case <-t.C:
		}
	}
}

// rateWindow is the span over which rateMeter measures.
const rateWindow = 5 * time.Second

// rateMeter measures a rate from samples of a growing counter, over the
// last rateWindow.
type rateMeter struct {
	samples []rateSample // oldest first, spanning at most rateWindow
}

type rateSample struct {
	at time.Time
	n  int64
}

func (r *rateMeter) add(at time.Time, n int64) {
	r.samples = append(r.samples, rateSample{at, n})
	for len(r.samples) > 2 && at.Sub(r.samples[1].at) >= rateWindow {
		r.samples = r.samples[1:]
	}
}

// rate returns the counter's growth per second over the samples kept.
func (r *rateMeter) rate() float64 {
	if len(r.samples) < 2 {
		return 0
	}
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	d := last.at.Sub(first.at).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(last.n-first.n) / d
}

// getProgressLine is one line describing st: a bar, the percentage of
// bytes, files and bytes done of the totals, the rate (bytes per second
// fetched), the time left and the share of the bytes each server's path
// delivered (live, metadata included; the summary has file data alone).
// The time left is the longer of the bytes left at rate and the files
// left at fileRate (files ended per second; 0: unknown), so that a tree
// of small files is not announced done when its bytes are.
func getProgressLine(st download.Stats, rate, fileRate float64) string {
	if st.Scanning {
		return fmt.Sprintf("scanning: %d files, %s so far", st.FilesTotal, humanBytes(st.BytesTotal))
	}
	frac := 1.0
	filesDone := st.FilesCopied + st.FilesSkipped
	if st.BytesTotal > 0 {
		frac = float64(st.BytesDone) / float64(st.BytesTotal)
	} else if st.FilesTotal > 0 {
		frac = float64(filesDone+st.FilesFailed) / float64(st.FilesTotal)
	}
	frac = min(max(frac, 0), 1)
	line := fmt.Sprintf("%s %3.0f%%  %d/%d files  %s/%s  %s/s", progressBar(frac), 100*frac,
		filesDone, st.FilesTotal, humanBytes(st.BytesDone), humanBytes(st.BytesTotal), humanBytes(int64(rate)))
	if st.FilesFailed > 0 {
		line += fmt.Sprintf("  %d failed", st.FilesFailed)
	}
	var eta float64 // seconds
	if left := st.BytesTotal - st.BytesDone; left > 0 && rate > 0 {
		eta = float64(left) / rate
	}
	if left := st.FilesTotal - filesDone - st.FilesFailed; left > 0 && fileRate > 0 {
		eta = max(eta, float64(left)/fileRate)
	}
	if eta > 0 {
		line += "  ETA " + time.Duration(eta*float64(time.Second)).Round(time.Second).String()
	}
	if s := sourceShares(st.Delivered, st.Primary); s != "" {
		line += "  " + s
	}
	return line
}

// sourceShares describes the share of the bytes each server delivered,
// by byServer (Stats.BySource or Stats.Delivered), the primary first:
// "primary 61% 127.0.0.1:4434 39%". Empty before any.
func sourceShares(byServer map[string]uint64, primary string) string {
	var total uint64
	servers := make([]string, 0, len(byServer))
	for s, n := range byServer {
		total += n
		servers = append(servers, s)
	}
	if total == 0 {
		return ""
	}
	slices.SortFunc(servers, func(a, b string) int {
		switch {
		case a == primary:
			return -1
		case b == primary:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(servers))
	for _, s := range servers {
		name := s
		if s == primary {
			name = "primary"
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, 100*float64(byServer[s])/float64(total)))
	}
	return strings.Join(parts, " ")
}

// getSummary is the line `kwikfs get` ends with: what was copied, what
// was fetched and where from.
func getSummary(st download.Stats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d files: %d copied, %d skipped (complete already), %d failed; %d symlinks, %d directories; ",
		st.FilesTotal, st.FilesCopied, st.FilesSkipped, st.FilesFailed, st.Symlinks, st.Dirs)
	fmt.Fprintf(&b, "%d bytes fetched (%s) in %s", st.BytesFetched, humanBytes(st.BytesFetched), roundDuration(st.Elapsed))
	if secs := st.Elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&b, " (%s/s)", humanBytes(int64(float64(st.BytesFetched)/secs)))
	}
	fmt.Fprintf(&b, "; reused %d bytes from .kwikpart files, %d from the cache", st.BytesFromParts, st.BytesFromCache)
	if s := sourceShares(st.BySource, st.Primary); s != "" {
		b.WriteString("; file data delivered by " + s)
	}
	return b.String()
}

// roundDuration rounds d for display: to milliseconds under 10 s, to
// tenths of a second under a minute, to seconds beyond.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < 10*time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
