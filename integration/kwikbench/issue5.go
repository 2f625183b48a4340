package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/integration/linkemu"
)

// rlConfig says what the read-ahead and listing table (issue 5,
// --readahead-ls) measures.
type rlConfig struct {
	bin     string
	size    int64          // the file read sequentially
	files   int            // files of the listed tree
	runs    int            // cold reads per read-ahead setting; the median is reported
	link    linkemu.Config // the relay in front of the primary
	timeout time.Duration  // bound of one ls -lR or find
}

// rlCatBuf is the read(2) size of the sequential reader, as cat's.
const rlCatBuf = 128 << 10

// rlSetting is one row of the read-ahead table.
type rlSetting struct {
	readAhead int  // --read-ahead: chunks, 0 off
	kernelKB  int  // read_ahead_kb set on the mount after it is up; 0: as kwikfs left it
	loopback  bool // straight to the primary, not through the relay: the machine's ceiling
}

// The rows of the read-ahead table: kwikfs's defaults (its read-ahead, and
// the kernel's raised to a chunk), read-ahead off (--read-ahead 0, which
// leaves the kernel's at its default of 128 KiB) and, to show what the
// kernel's read-ahead alone does, read-ahead off with the kernel's forced
// to a chunk; then the defaults with no relay, the machine's ceiling.
var (
	rlDefaults   = rlSetting{readAhead: fusefs.DefaultReadAheadMax}
	rlOff        = rlSetting{}
	rlKernelOnly = rlSetting{kernelKB: kwikfsReadAheadKB}
	rlLoopback   = rlSetting{readAhead: fusefs.DefaultReadAheadMax, loopback: true}
)

// rlCat is what one cold read measured.
type rlCat struct {
	mbps            float64
	readAheadChunks int64 // FS.ReadAheadChunks after the read
	fetchErrors     int64
	mountedKB       int // read_ahead_kb as kwikfs left it, before the bench set it
}

// rlList is what one timed ls -lR or find measured.
type rlList struct {
	secs  float64
	lines int
	sum   [32]byte // of the output, mountpoint replaced
	calls int64    // List+Stat+Manifest calls the mount made to the primary
	stale int64    // metadata served from a kept copy, primary unavailable
	err   error
	// timedOut is set when the command ran past --rl-timeout (secs).
	timedOut bool
}

// runReadaheadLs prints the issue 5 read-ahead and listing table:
//
//   - a cold sequential read (128 KiB reads) of a --rl-size file through a
//     linkemu relay (--rl-mbit, --rl-rtt) in front of a kwik-primary, with
//     read-ahead at its default and off (--read-ahead 0); the target is
//     default / off >= 1.5. Also read-ahead off with the kernel's own
//     read-ahead forced to a chunk, and a read straight from the primary
//     over loopback (no relay), the machine's ceiling: read-ahead can only
//     gain over a link when the ceiling is well above what one chunk per
//     round trip gives;
//   - ls -lR and find of a --rl-files tree: first run on an empty cache,
//     after a remount on the same cache, and after a remount with the
//     primary stopped (the relay stays, so the daemon's dials time out as
//     they would on a dead network). Each figure is its own mount, so the
//     kernel's caches never help.
func runReadaheadLs(c rlConfig) error {
	work, err := os.MkdirTemp("", "kwikbench-rl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	fmt.Fprintf(os.Stderr, "writing a %d MiB file and a %d-file tree ...\n", c.size>>20, c.files)
	if err := writeSeededFile(filepath.Join(tree, "big.bin"), c.size, 5); err != nil {
		return err
	}
	dirs, err := writeManyFiles(filepath.Join(tree, "many"), c.files)
	if err != nil {
		return err
	}
	certDir, err := writeCerts(work)
	if err != nil {
		return err
	}
	relay, target, stopServer, err := startRelayedPrimary(c.bin, tree, certDir, c.link)
	if err != nil {
		return err
	}
	defer relay.Close()
	var stopOnce sync.Once
	stopPrimary := func() { stopOnce.Do(stopServer) }
	defer stopPrimary()
	r := &rlRunner{c: c, work: work, certs: certDir, relay: relay.Addr(), primary: target}

	// Sequential reads.
	settings := []rlSetting{rlDefaults, rlOff, rlKernelOnly, rlLoopback}
	cats := make(map[rlSetting][]rlCat)
	relayBefore := relay.Stats().ServerToClient
	for i := range max(c.runs, 1) {
		for _, s := range settings {
			fmt.Fprintf(os.Stderr, "run %d: cold cat, --read-ahead %d, kernel read_ahead_kb %d, loopback %v ...\n", i+1, s.readAhead, s.kernelKB, s.loopback)
			v, err := r.cat(s)
			if err != nil {
				return fmt.Errorf("cat with --read-ahead %d, read_ahead_kb %d: %w", s.readAhead, s.kernelKB, err)
			}
			cats[s] = append(cats[s], v)
		}
	}

	relayAfter := relay.Stats().ServerToClient // (the loopback reads do not pass it)

	// Listings: one cache for ls -lR, one for find.
	lsCache, findCache := filepath.Join(work, "cache-ls"), filepath.Join(work, "cache-find")
	phases := []string{"first run (cold cache)", "remount (same cache)", "remount, primary stopped"}
	ls := make([]rlList, len(phases))
	find := make([]rlList, len(phases))
	for i, phase := range phases {
		if i == 2 {
			stopPrimary()
		}
		fmt.Fprintf(os.Stderr, "%s: ls -lR ...\n", phase)
		ls[i] = r.list(lsCache, "ls", "-lR")
		fmt.Fprintf(os.Stderr, "%s: find ...\n", phase)
		find[i] = r.list(findCache, "find")
	}

	// The tables.
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "cold cat %d MiB, %d KiB reads, link %s\tmedian MB/s\truns\tread-ahead chunks\tvs --read-ahead 0\ttarget\tmet\t\n",
		c.size>>20, rlCatBuf>>10, linkName(c.link))
	med := func(s rlSetting) float64 {
		var v []float64
		for _, x := range cats[s] {
			v = append(v, x.mbps)
		}
		return median(v)
	}
	for _, s := range settings {
		var runsText []string
		var raChunks int64
		for _, x := range cats[s] {
			runsText = append(runsText, fmt.Sprintf("%.1f", x.mbps))
			raChunks = x.readAheadChunks
		}
		ratio, target, met := "", "", ""
		if s != rlOff && !s.loopback {
			v := med(s) / med(rlOff)
			ratio = fmt.Sprintf("%.2f", v)
			if s == rlDefaults {
				target, met = ">= 1.50", yesNo(v >= 1.5)
			}
		}
		var name string
		switch s {
		case rlDefaults:
			name = fmt.Sprintf("read-ahead on (defaults: --read-ahead %d)", s.readAhead)
		case rlOff:
			name = "read-ahead off (--read-ahead 0)"
		case rlKernelOnly:
			name = fmt.Sprintf("--read-ahead 0, kernel's forced to %d KiB", s.kernelKB)
		case rlLoopback:
			name = "no relay (loopback), defaults"
		}
		fmt.Fprintf(w, "%s\t%.1f\t%s\t%d\t%s\t%s\t%s\t\n", name, med(s), strings.Join(runsText, " "), raChunks, ratio, target, met)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var mountedKB []string
	for _, s := range settings {
		var kb []string
		for _, x := range cats[s] {
			kb = append(kb, strconv.Itoa(x.mountedKB))
		}
		mountedKB = append(mountedKB, strings.Join(uniq(kb), "/"))
	}
	pkts := relayAfter.Forwarded.Packets - relayBefore.Forwarded.Packets
	late := time.Duration(0)
	if pkts > 0 {
		late = (relayAfter.TotalLate - relayBefore.TotalLate) / time.Duration(pkts)
	}
	fmt.Printf("(read_ahead_kb as kwikfs mounted, in row order: %s; fetch errors: %d; relay server->client during the reads: mean lateness %v, max %v, %d queue drops)\n\n",
		strings.Join(mountedKB, ","), sumErrors(cats), late.Round(time.Microsecond), relayAfter.MaxLate.Round(time.Microsecond),
		relayAfter.DroppedQueue.Packets-relayBefore.DroppedQueue.Packets)

	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "tree of %d files, %d dirs, link %s\tls -lR s\tfind s\tprimary calls (ls/find)\tkept copies (ls/find)\tsame output\t\n", c.files, dirs, linkName(c.link))
	for i, phase := range phases {
		same := "-"
		if i > 0 {
			same = yesNo(ls[i].err == nil && find[i].err == nil && ls[i].sum == ls[0].sum && find[i].sum == find[0].sum)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%d/%d\t%s\t\n", phase, ls[i].text(), find[i].text(),
			ls[i].calls, find[i].calls, ls[i].stale, find[i].stale, same)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("(output lines: ls -lR %d, find %d)\n", ls[0].lines, find[0].lines)
	for i, phase := range phases {
		for _, x := range []struct {
			name string
			l    rlList
		}{{"ls -lR", ls[i]}, {"find", find[i]}} {
			if x.l.err != nil {
				fmt.Printf("%s, %s: %v\n", phase, x.name, x.l.err)
			}
		}
	}
	return nil
}

func (l rlList) text() string {
	if l.timedOut {
		return fmt.Sprintf("> %.0f", l.secs)
	}
	if l.err != nil {
		return "failed"
	}
	return fmt.Sprintf("%.2f", l.secs)
}

// uniq returns v's distinct values in their first order.
func uniq(v []string) []string {
	var out []string
	for _, s := range v {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func sumErrors(cats map[rlSetting][]rlCat) int64 {
	var n int64
	for _, v := range cats {
		for _, x := range v {
			n += x.fetchErrors
		}
	}
	return n
}

// rlRunner mounts the primary, through the relay or not, with the bench's
// certificates.
type rlRunner struct {
	c              rlConfig
	work, certs    string
	relay, primary string // addresses
}

// mount starts `kwikfs mount` of addr on cache with extra flags (see
// startMount).
func (r *rlRunner) mount(addr, cache string, extra ...string) (*benchMount, error) {
	return startMount(r.c.bin, r.certs, r.work, addr, cache, append([]string{"--log-level", "error"}, extra...)...)
}

// cat mounts an empty cache with setting s and reads big.bin once.
func (r *rlRunner) cat(s rlSetting) (rlCat, error) {
	cache, err := os.MkdirTemp(r.work, "cache-")
	if err != nil {
		return rlCat{}, err
	}
	defer os.RemoveAll(cache)
	addr := r.relay
	if s.loopback {
		addr = r.primary
	}
	m, err := r.mount(addr, cache, "--read-ahead", strconv.Itoa(s.readAhead))
	if err != nil {
		return rlCat{}, err
	}
	defer m.close()
	var out rlCat
	if out.mountedKB, err = kernelReadAhead(m.dir, s.readAhead > 0, s.kernelKB); err != nil {
		return rlCat{}, fmt.Errorf("set read_ahead_kb: %w", err)
	}
	path := filepath.Join(m.dir, "big.bin")
	// The session comes up on the first request.
	if _, err := os.Stat(path); err != nil {
		return rlCat{}, err
	}
	if out.mbps, err = readLoop(path, rlCatBuf, r.c.size); err != nil {
		return rlCat{}, err
	}
	st, err := m.ctl.Status(context.Background())
	if err != nil {
		return rlCat{}, err
	}
	out.readAheadChunks, out.fetchErrors = st.FS.ReadAheadChunks, st.FS.FetchErrors
	return out, nil
}

// list mounts cache and times `name args... MNT/many` (output to memory).
func (r *rlRunner) list(cache, name string, args ...string) rlList {
	m, err := r.mount(r.relay, cache)
	if err != nil {
		return rlList{err: err}
	}
	defer m.close()
	ctx, cancel := context.WithTimeout(context.Background(), r.c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append(args, filepath.Join(m.dir, "many"))...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	var out rlList
	out.secs = time.Since(start).Seconds()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("not done after %v", r.c.timeout)
			out.timedOut = true
		}
		out.err = fmt.Errorf("%s: %w: %s", name, err, firstLines(stderr.String(), 1))
	}
	text := strings.ReplaceAll(stdout.String(), m.dir, "MNT")
	out.lines = strings.Count(text, "\n")
	out.sum = sha256.Sum256([]byte(text))
	if st, err := m.ctl.Status(context.Background()); err == nil {
		out.calls = st.FS.ListCalls + st.FS.StatCalls + st.FS.ManifestCalls
		out.stale = st.FS.StaleMeta
	} else if out.err == nil {
		out.err = err
	}
	return out
}

// kwikfsReadAheadKB is the read_ahead_kb a kwikfs daemon running as root
// sets on its mount just after mounting (fusefs.RaiseReadAhead).
const kwikfsReadAheadKB = 1024

// kernelReadAhead returns read_ahead_kb of the FUSE mount at mnt as
// kwikfs set it and, if kb is not 0, then sets it to kb. A daemon with
// read-ahead on (raised) raises it just after the mount appears, which can
// be after the mount answers: then this first waits (up to 5 s) for
// kwikfs's value, so that no read starts before it and the daemon does
// not overwrite ours. A daemon with read-ahead off leaves it alone.
func kernelReadAhead(mnt string, raised bool, kb int) (int, error) {
	dev, err := fuseDevice(mnt)
	if err != nil {
		return 0, err
	}
	p := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	was := 0
	for deadline := time.Now().Add(5 * time.Second); ; {
		old, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		if was, err = strconv.Atoi(strings.TrimSpace(string(old))); err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
		if !raised || was == kwikfsReadAheadKB || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if kb != 0 {
		if err := os.WriteFile(p, []byte(strconv.Itoa(kb)), 0); err != nil {
			return 0, err
		}
	}
	return was, nil
}

// writeManyFiles writes n small files (0 to 4 KiB) under dir, in 10
// directories of 10 subdirectories each, and returns the number of
// directories made (dir included).
func writeManyFiles(dir string, n int) (int, error) {
	const top, sub = 10, 10
	dirs := 1
	content := bytes.Repeat([]byte("kwikfs listing bench\n"), 200)
	for i := 0; i < n; i++ {
		leaf := i % (top * sub)
		d := filepath.Join(dir, fmt.Sprintf("d%02d", leaf/sub), fmt.Sprintf("e%02d", leaf%sub))
		if i < top*sub {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return 0, err
			}
			if leaf%sub == 0 {
				dirs++
			}
			dirs++
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d.txt", i)), content[:i*37%4097], 0o644); err != nil {
			return 0, err
		}
	}
	return dirs, nil
}
