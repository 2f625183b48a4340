// Command kwikbench prints kwikfs's throughput table (`make bench`): every
// figure and the ratios between them are measured in the same run, each
// repeated --runs times, and the median is reported.
//
//   - kwik logical stream vs a raw quic-go stream over loopback (the kwik
//     package's BenchmarkThroughput, both ends in one process);
//   - a go-fuse read loop over a file held in memory (the FUSE ceiling);
//   - a cold read of a --size file through a real kwikfs mount of a real
//     kwik-primary, and a warm re-read from the store after a remount.
//
// With --prefetch it prints the prefetch table instead (issue 5): over a
// linkemu relay (--pf-mbit, --pf-rtt) in front of a kwik-primary, a cold
// cat of a --pf-cat-size file alone and while a prefetch job of a
// --pf-bulk-size directory runs in the same mount; the fraction
// during/alone has the target >= 0.8 (see prefetch.go).
//
// With --readahead-ls it prints the read-ahead and listing table instead
// (issue 5, see issue5.go): over a linkemu relay (--rl-mbit, --rl-rtt), a
// cold sequential read (128 KiB reads) of a --rl-size file with kwikfs's
// read-ahead at its default and off (--read-ahead 0), each with the
// kernel's read-ahead at 1 MiB and 128 KiB (target: default / off >= 1.5);
// and ls -lR and find of a --rl-files tree on an empty cache, after a
// remount, and after a remount with the primary stopped.
//
// With --multipath it prints the multipath table instead (issue 3): for
// each case, a kwik-primary and kwik-secondaries each behind its own
// linkemu relay (rate, RTT, loss), the cold-read goodput of a --mp-size file
// through each link alone and through all of them at once, the efficiency
// (multipath / sum of the single-path goodputs) against its target, the
// duplicate bytes the mount's paths received, and the mount process's peak
// resident memory (VmHWM). Each figure is one read; the table takes several
// minutes at the default 256 MiB (the 10 Mbit/s link alone is ~215 s).
//
// With --peers it prints the loopback comparison instead (see peers.go): a
// cold cat of a --peers-size file through kwikfs (one path, and a primary
// with two secondaries), sshfs and rclone mount of an nginx export, all on
// 127.0.0.1 and started by the bench, the ratios kwikfs / peer against
// their targets, kwikfs's re-reads from the page cache and its store, and
// each process's CPU seconds per GiB read (--peers-runs rounds, medians).
// --peers-profile DIR also saves CPU profiles of the daemon and the primary
// during a further cold read.
//
// With --small it prints the small-files table instead (see small.go): a
// seeded tree of --small-files files of 4 KiB in --small-dirs directories,
// served on 127.0.0.1 by a kwik-primary and an sshd; cp -r, rsync -a, tar,
// ls -lR and find of it through kwikfs and sshfs (fresh mounts, page cache
// dropped), in files (or entries) per second, the ratios kwikfs / sshfs
// against their targets, the copies checked file by file; kwikfs's cp -r
// through a linkemu relay of --small-rtt; the daemon's requests per file
// copied and the CPU seconds per 1000 files of cp -r (--small-runs rounds,
// medians).
//
// With --links it prints the kernel-shaped links table instead (see
// links.go): a primary and a secondary each in a network namespace of its
// own behind a veth pair shaped by tbf, no relay; for 500+500 Mbit/s,
// 1+1 Gbit/s and 1 Gbit/s + 250 Mbit/s, the cold-read goodput of a
// --links-size file through link A alone, B alone and both, the efficiency
// against its target, each path's share of the bytes and the CPU seconds
// per GiB of the daemon and the servers; against curl and aria2c from
// nginx over the same links, all in the same run (--links-runs rounds,
// interleaved, medians reported).
//
// It needs the binaries in --bin (make build) and root for the mounts.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kwikfs/kwikfs/fusefs"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "serve-memfs" {
		// The reference filesystem runs in a process of its own, as the
		// kwikfs daemon does, so the reader does not share its runtime.
		size, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err == nil {
			err = serveMemfs(os.Args[2], size)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kwikbench serve-memfs:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 5 && os.Args[1] == "read-file" {
		// The peers table's reader runs in a process of its own, so its
		// CPU time is its rusage.
		if err := readFileChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "kwikbench read-file:", err)
			os.Exit(1)
		}
		return
	}
	binDir := flag.String("bin", "bin", "directory with kwikfs and kwik-primary")
	size := flag.Int64("size", 1<<30, "bytes of the file read through the mount")
	runs := flag.Int("runs", 3, "repetitions of every measurement (the median is reported)")
	multipath := flag.Bool("multipath", false, "print the multipath table (issue 3) instead of the single-path one")
	mpSize := flag.Int64("mp-size", 256<<20, "bytes of the file read in each multipath-table measurement")
	mpRuns := flag.Int("mp-runs", 1, "reads per multipath-table figure (the median is reported)")
	mpCase := flag.String("mp-case", "", "run only the multipath cases whose name contains this text")
	mpTrace := flag.Bool("mp-trace", false, "print each path's MB/s every 250 ms during multipath reads")
	pf := flag.Bool("prefetch", false, "print the prefetch table (issue 5: a foreground cat during a prefetch) instead")
	pfCatSize := flag.Int64("pf-cat-size", 64<<20, "bytes of the file read in the foreground in the prefetch table")
	pfBulkSize := flag.Int64("pf-bulk-size", 512<<20, "bytes of the directory prefetched meanwhile")
	pfRuns := flag.Int("pf-runs", 3, "pairs of reads in the prefetch table (the median is reported)")
	pfMbit := flag.Int64("pf-mbit", 100, "rate of the relay link of the prefetch table, Mbit/s")
	pfRTT := flag.Duration("pf-rtt", 10*time.Millisecond, "RTT of the relay link of the prefetch table")
	rl := flag.Bool("readahead-ls", false, "print the read-ahead and listing table (issue 5: cold cat with and without read-ahead, ls -lR and find of a tree) instead")
	rlSize := flag.Int64("rl-size", 1<<30, "bytes of the file read sequentially in the read-ahead table")
	rlFiles := flag.Int("rl-files", 10000, "files of the tree listed in the listing table")
	rlRuns := flag.Int("rl-runs", 1, "cold reads per read-ahead setting (the median is reported)")
	rlMbit := flag.Int64("rl-mbit", 400, "rate of the relay link of the read-ahead and listing table, Mbit/s (the relay forwards at most about 60 MB/s on a 2-core machine while the rest of the read runs; above that it drops)")
	rlRTT := flag.Duration("rl-rtt", 10*time.Millisecond, "RTT of the relay link of the read-ahead and listing table")
	rlTimeout := flag.Duration("rl-timeout", 2*time.Minute, "bound of one ls -lR or find in the listing table")
	peers := flag.Bool("peers", false, "print the loopback comparison with sshfs and rclone, and CPU seconds per GiB per process, instead")
	peersSize := flag.Int64("peers-size", 1<<30, "bytes of the file read in the loopback comparison")
	peersRuns := flag.Int("peers-runs", 3, "rounds of the loopback comparison (the median is reported)")
	peersProfile := flag.String("peers-profile", "", "directory to save 5-second CPU profiles of the daemon and the primary in, during a further one-path cold read; none when empty")
	small := flag.Bool("small", false, "print the small-files table (cp -r, rsync -a, tar, ls -lR, find of 4 KiB files through kwikfs and sshfs) instead")
	smallFiles := flag.Int("small-files", 10000, "files of the small-files tree, 4 KiB each")
	smallDirs := flag.Int("small-dirs", 100, "directories the small files are spread over")
	smallRuns := flag.Int("small-runs", 3, "rounds of the small-files table (the median is reported)")
	smallRTT := flag.Duration("small-rtt", 10*time.Millisecond, "RTT of the relay link of the small-files table's kwikfs cp -r over a link")
	links := flag.Bool("links", false, "print the kernel-shaped links table (network namespaces, veth, tbf; kwikfs against curl and aria2c) instead")
	linksSize := flag.Int64("links-size", 256<<20, "bytes of the file read in each links-table measurement")
	linksRuns := flag.Int("links-runs", 3, "rounds of the links table, interleaved (the median is reported)")
	linksProfile := flag.String("links-profile", "", "directory to save 5 s CPU profiles of the daemon, primary and secondary into, from an extra 1G + 1G read over both links")
	flag.Parse()
	var err error
	if *links {
		err = runLinks(linksConfig{bin: *binDir, size: *linksSize, runs: *linksRuns, profileDir: *linksProfile})
	} else if *small {
		err = runSmall(smallConfig{bin: *binDir, files: *smallFiles, dirs: *smallDirs, runs: *smallRuns, rtt: *smallRTT})
	} else if *peers {
		err = runPeers(peersConfig{bin: *binDir, size: *peersSize, runs: *peersRuns, profileDir: *peersProfile})
	} else if *rl {
		err = runReadaheadLs(rlConfig{bin: *binDir, size: *rlSize, files: *rlFiles, runs: *rlRuns,
			link: link(*rlMbit, *rlRTT, 0), timeout: *rlTimeout})
	} else if *pf {
		err = runPrefetchBench(pfConfig{bin: *binDir, catSize: *pfCatSize, bulkSize: *pfBulkSize, runs: *pfRuns,
			link: link(*pfMbit, *pfRTT, 0)})
	} else if *multipath {
		err = runMultipath(*binDir, *mpSize, *mpRuns, *mpCase, *mpTrace)
	} else {
		err = run(*binDir, *size, *runs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kwikbench:", err)
		os.Exit(1)
	}
}

type row struct {
	name   string
	mbps   []float64
	versus string // name of the row this one is compared with
	target float64
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func run(binDir string, size int64, runs int) error {
	work, err := os.MkdirTemp("", "kwikbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	fmt.Fprintln(os.Stderr, "kwik vs raw quic-go ...")
	raw, kw, err := streamThroughput(runs)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "go-fuse memory read loop ...")
	var fuseLoop []float64
	for range runs {
		v, err := fuseMemoryLoop(work, size)
		if err != nil {
			return fmt.Errorf("go-fuse loop: %w", err)
		}
		fuseLoop = append(fuseLoop, v)
	}
	fmt.Fprintln(os.Stderr, "kwikfs cold and warm reads ...")
	cold, warm, err := mountReads(binDir, work, size, runs)
	if err != nil {
		return err
	}
	rows := []row{
		{name: "raw quic-go stream", mbps: raw},
		{name: "kwik logical stream", mbps: kw, versus: "raw quic-go stream", target: 0.95},
		{name: "go-fuse memory read loop", mbps: fuseLoop},
		{name: fmt.Sprintf("kwikfs cold read %d MiB", size>>20), mbps: cold, versus: "raw quic-go stream", target: 0.8},
		{name: fmt.Sprintf("kwikfs warm read %d MiB (store)", size>>20), mbps: warm, versus: "go-fuse memory read loop", target: 0.6},
	}
	byName := map[string]float64{}
	for _, r := range rows {
		byName[r.name] = median(r.mbps)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "measurement\tmedian MB/s\truns\tratio\tversus\ttarget\t\n")
	for _, r := range rows {
		var runsText []string
		for _, v := range r.mbps {
			runsText = append(runsText, strconv.FormatFloat(v, 'f', 0, 64))
		}
		ratio, target := "", ""
		if r.versus != "" {
			ratio = fmt.Sprintf("%.2f", byName[r.name]/byName[r.versus])
			target = fmt.Sprintf(">= %.2f", r.target)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t%s\t\n", r.name, byName[r.name], strings.Join(runsText, " "), ratio, r.versus, target)
	}
	return w.Flush()
}

var benchLine = regexp.MustCompile(`^BenchmarkThroughput/(\S+?)(-\d+)?\s.*?\s([\d.]+) MB/s`)

// streamThroughput runs kwik's BenchmarkThroughput, whose sub-benchmarks
// raw-quic and kwik move the same bytes over loopback with the same settings.
func streamThroughput(runs int) (raw, kw []float64, err error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "^BenchmarkThroughput$",
		"-benchtime", "3x", "-count", strconv.Itoa(runs), "./kwik")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("kwik benchmark: %w\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		switch m[1] {
		case "raw-quic":
			raw = append(raw, v)
		case "kwik":
			kw = append(kw, v)
		}
	}
	if len(raw) == 0 || len(kw) == 0 {
		return nil, nil, fmt.Errorf("no raw-quic/kwik results in:\n%s", out)
	}
	return raw, kw, nil
}

// fuseMemoryLoop mounts a go-fuse file system holding one file of size bytes
// in memory, served by a child process with the mount options kwikfs uses,
// and reads the file once.
func fuseMemoryLoop(work string, size int64) (float64, error) {
	mnt, err := os.MkdirTemp(work, "memfs-")
	if err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	srv := exec.Command(self, "serve-memfs", mnt, strconv.FormatInt(size, 10))
	srv.Stderr = os.Stderr
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
		unix.Unmount(mnt, unix.MNT_DETACH)
	}()
	if err := waitFile(filepath.Join(mnt, "file"), 20*time.Second); err != nil {
		return 0, err
	}
	return readFile(filepath.Join(mnt, "file"))
}

// serveMemfs mounts the in-memory reference file system at mnt and serves it
// until SIGTERM.
func serveMemfs(mnt string, size int64) error {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	root := &fs.Inode{}
	opts := &fs.Options{MountOptions: fusefs.KernelOptions(false)}
	opts.OnAdd = func(ctx context.Context) {
		f := &fs.MemRegularFile{Data: data, Attr: fuse.Attr{Mode: 0o444}}
		root.AddChild("file", root.NewPersistentInode(ctx, f, fs.StableAttr{}), false)
	}
	srv, err := fs.Mount(mnt, root, opts)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := fusefs.RaiseReadAhead(mnt); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Unmount()
	}()
	srv.Wait()
	return nil
}

// waitFile waits until path can be stat'ed.
func waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountReads serves a size-byte file from a real kwik-primary and reads it
// through a real kwikfs mount: cold (fresh cache), then warm (remounted, so
// the kernel page cache is empty and the bytes come from the store).
func mountReads(binDir, work string, size int64, runs int) (cold, warm []float64, err error) {
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return nil, nil, err
	}
	if err := writeSeededFile(filepath.Join(tree, "big.bin"), size, 7); err != nil {
		return nil, nil, err
	}
	certDir, err := writeCerts(work)
	if err != nil {
		return nil, nil, err
	}
	primary, err := startKwikServer(binDir, "kwik-primary", "", serverArgs("kwik-primary", tree, certDir, "127.0.0.1:0"))
	if err != nil {
		return nil, nil, err
	}
	defer primary.stop()
	addr := primary.addr

	for i := range runs {
		cache := filepath.Join(work, fmt.Sprintf("cache-%d", i))
		c, err := readThroughMount(binDir, work, addr, certDir, cache, 1)
		if err != nil {
			return nil, nil, fmt.Errorf("cold read: %w", err)
		}
		w, err := readThroughMount(binDir, work, addr, certDir, cache, 1)
		if err != nil {
			return nil, nil, fmt.Errorf("warm read: %w", err)
		}
		cold, warm = append(cold, c[0]), append(warm, w[0])
		os.RemoveAll(cache)
	}
	return cold, warm, nil
}

// readThroughMount mounts addr on cache (trusting the CA in certDir) and
// reads big.bin reads times, returning each read's MB/s.
func readThroughMount(binDir, work, addr, certDir, cache string, reads int) ([]float64, error) {
	m, err := startMount(binDir, certDir, work, addr, cache, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	defer m.close()
	var out []float64
	for range reads {
		v, err := readFile(filepath.Join(m.dir, "big.bin"))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
