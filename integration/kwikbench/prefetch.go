package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/control"
)

// pfConfig says what the prefetch table (issue 5) measures.
type pfConfig struct {
	bin      string
	catSize  int64          // the file read in the foreground
	bulkSize int64          // the directory prefetched meanwhile
	runs     int            // pairs of reads; medians are reported
	link     linkemu.Config // the relay in front of the primary
}

// pfRun is what one pair of reads measured.
type pfRun struct {
	alone, during float64 // cat MB/s
	// prefetchRate is the job's fetch rate (MB/s) before the cat started;
	// prefetchDuring the bytes the job fetched while the cat ran.
	prefetchRate   float64
	prefetchDuring int64
	waits          int64 // background fetches that waited for the cat (from FS stats)
	fetchErrors    int64 // failed fetches of the mount (both reads)
}

// runPrefetchBench prints the prefetch table: through a linkemu relay in
// front of a kwik-primary, the cold-read throughput of a file read alone
// (fresh cache) and read while a prefetch job of a larger directory runs
// in the same mount, and the fraction during/alone against its target
// (>= 0.8). Each run reads alone then during, on fresh caches.
func runPrefetchBench(c pfConfig) error {
	work, err := os.MkdirTemp("", "kwikbench-pf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	if err := writeSeededFile(filepath.Join(tree, "cat.bin"), c.catSize, 1); err != nil {
		return err
	}
	const bulkFiles = 4
	for i := range bulkFiles {
		if err := writeSeededFile(filepath.Join(tree, "bulk", fmt.Sprintf("part-%d.bin", i)), c.bulkSize/bulkFiles, uint64(2+i)); err != nil {
			return err
		}
	}
	certDir, err := writeCerts(work)
	if err != nil {
		return err
	}
	relay, target, stop, err := startRelayedPrimary(c.bin, tree, certDir, c.link)
	if err != nil {
		return err
	}
	defer relay.Close()
	defer stop()

	fmt.Fprintf(os.Stderr, "prefetch of the whole %d MiB over loopback with --memory %d MiB ...\n", c.bulkSize>>20, pfMemoryBudget>>20)
	mem, err := pfMemory(c, work, certDir, target)
	if err != nil {
		return fmt.Errorf("whole prefetch: %w", err)
	}

	var results []pfRun
	for i := range max(c.runs, 1) {
		fmt.Fprintf(os.Stderr, "prefetch run %d: cat alone ...\n", i+1)
		var r pfRun
		if r.alone, err = pfCat(c, work, certDir, relay.Addr(), nil); err != nil {
			return fmt.Errorf("cat alone: %w", err)
		}
		fmt.Fprintf(os.Stderr, "prefetch run %d: cat during a prefetch ...\n", i+1)
		if r.during, err = pfCat(c, work, certDir, relay.Addr(), &r); err != nil {
			return fmt.Errorf("cat during a prefetch: %w", err)
		}
		results = append(results, r)
	}
	med := func(f func(pfRun) float64) float64 {
		var v []float64
		for _, r := range results {
			v = append(v, f(r))
		}
		return median(v)
	}
	runsOf := func(f func(pfRun) float64, format string) string {
		var s []string
		for _, r := range results {
			s = append(s, fmt.Sprintf(format, f(r)))
		}
		return strings.Join(s, " ")
	}
	alone := func(r pfRun) float64 { return r.alone }
	during := func(r pfRun) float64 { return r.during }
	frac := func(r pfRun) float64 { return r.during / r.alone }
	rate := func(r pfRun) float64 { return r.prefetchRate }
	bgMiB := func(r pfRun) float64 { return float64(r.prefetchDuring) / (1 << 20) }
	waits := func(r pfRun) float64 { return float64(r.waits) }
	errs := func(r pfRun) float64 { return float64(r.fetchErrors) }

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "prefetch (link %s, cat %d MiB, prefetch of %d MiB)\tmedian\truns\ttarget\tmet\t\n", linkName(c.link), c.catSize>>20, c.bulkSize>>20)
	fmt.Fprintf(w, "cat alone MB/s\t%.1f\t%s\t\t\t\n", med(alone), runsOf(alone, "%.1f"))
	fmt.Fprintf(w, "cat during prefetch MB/s\t%.1f\t%s\t\t\t\n", med(during), runsOf(during, "%.1f"))
	fmt.Fprintf(w, "fraction (during / alone)\t%.2f\t%s\t>= 0.80\t%s\t\n", med(frac), runsOf(frac, "%.2f"), yesNo(med(frac) >= 0.8))
	fmt.Fprintf(w, "prefetch MB/s before the cat\t%.1f\t%s\t\t\t\n", med(rate), runsOf(rate, "%.1f"))
	fmt.Fprintf(w, "prefetch MiB fetched during the cat\t%.1f\t%s\t\t\t\n", med(bgMiB), runsOf(bgMiB, "%.1f"))
	fmt.Fprintf(w, "background waits for the cat\t%.0f\t%s\t\t\t\n", med(waits), runsOf(waits, "%.0f"))
	fmt.Fprintf(w, "fetch errors during the cat\t%.0f\t%s\t\t\t\n", med(errs), runsOf(errs, "%.0f"))
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("(memory: the whole %d MiB prefetched over loopback, no relay, at %.0f MB/s with --memory %d MiB: daemon VmHWM %d MiB, %d MiB when mounted and idle)\n",
		c.bulkSize>>20, mem.mbps, pfMemoryBudget>>20, mem.peakKiB>>10, mem.idleKiB>>10)
	return nil
}

// pfMemoryBudget is the --memory of the mount that prefetches the whole
// directory in pfMemory.
const pfMemoryBudget = 64 << 20

// pfMem is what pfMemory measured.
type pfMem struct {
	mbps             float64 // prefetch rate
	idleKiB, peakKiB int64   // daemon VmHWM before and after the prefetch
}

// pfMemory mounts addr (the primary itself: loopback, so that fetching
// outpaces the store writer and memory is tested hardest) with
// --memory pfMemoryBudget and a fresh cache, prefetches bulk/ to the end
// with `kwikfs prefetch` (which waits), and returns the daemon's peak
// memory before and after.
func pfMemory(c pfConfig, work, certDir, addr string) (pfMem, error) {
	var out pfMem
	cache, err := os.MkdirTemp(work, "cache-")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(cache)
	m, err := startMount(c.bin, certDir, work, addr, cache, "--log-level", "warn", "--memory", strconv.Itoa(pfMemoryBudget>>20)+"M")
	if err != nil {
		return out, err
	}
	defer m.close()
	mnt := m.dir
	if _, err := os.Stat(filepath.Join(mnt, "bulk")); err != nil {
		return out, err
	}
	if out.idleKiB, err = vmHWM(m.cmd.Process.Pid); err != nil {
		return out, err
	}
	start := time.Now()
	if msg, err := exec.Command(filepath.Join(c.bin, "kwikfs"), "prefetch", filepath.Join(mnt, "bulk")).CombinedOutput(); err != nil {
		return out, fmt.Errorf("kwikfs prefetch: %w: %s", err, msg)
	}
	out.mbps = float64(c.bulkSize) / time.Since(start).Seconds() / 1e6
	if out.peakKiB, err = vmHWM(m.cmd.Process.Pid); err != nil {
		return out, err
	}
	return out, nil
}

// pfCat mounts addr with a fresh cache and reads cat.bin once, returning
// its MB/s. With r non-nil it first starts a prefetch of bulk/ and waits
// until the job fetches steadily; r gets the job's figures.
func pfCat(c pfConfig, work, certDir, addr string, r *pfRun) (float64, error) {
	cache, err := os.MkdirTemp(work, "cache-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(cache)
	m, err := startMount(c.bin, certDir, work, addr, cache, "--log-level", "warn")
	if err != nil {
		return 0, err
	}
	defer m.close()
	mnt, ctl := m.dir, m.ctl
	ctx := context.Background()
	// The session comes up on the first request.
	if _, err := os.Stat(filepath.Join(mnt, "cat.bin")); err != nil {
		return 0, err
	}
	var job control.PrefetchJob
	if r != nil {
		out, err := exec.Command(filepath.Join(c.bin, "kwikfs"), "prefetch", "--detach", filepath.Join(mnt, "bulk")).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("kwikfs prefetch --detach: %w: %s", err, out)
		}
		jobs, err := ctl.Prefetches(ctx)
		if err != nil || len(jobs) != 1 {
			return 0, fmt.Errorf("prefetch jobs %+v: %v", jobs, err)
		}
		// Let the job reach its steady rate: 2 s of fetching.
		job = jobs[0]
		var first control.PrefetchJob
		var firstAt time.Time
		for {
			if job, err = ctl.Prefetch(ctx, job.ID); err != nil {
				return 0, err
			}
			if job.Ended() {
				return 0, fmt.Errorf("prefetch ended before the cat: %+v (make --pf-bulk-size larger)", job)
			}
			if firstAt.IsZero() && job.BytesFetched > 0 {
				first, firstAt = job, time.Now()
			}
			if !firstAt.IsZero() && time.Since(firstAt) >= 2*time.Second {
				r.prefetchRate = float64(job.BytesFetched-first.BytesFetched) / time.Since(firstAt).Seconds() / 1e6
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	mbps, err := readFile(filepath.Join(mnt, "cat.bin"))
	if err != nil {
		return 0, err
	}
	if r != nil {
		after, err := ctl.Prefetch(ctx, job.ID)
		if err != nil {
			return 0, err
		}
		r.prefetchDuring = after.BytesFetched - job.BytesFetched
		if after.Ended() {
			return 0, fmt.Errorf("prefetch ended during the cat: %+v (make --pf-bulk-size larger)", after)
		}
		st, err := ctl.Status(ctx)
		if err != nil {
			return 0, err
		}
		r.waits = st.Foreground.BackgroundWaits
		r.fetchErrors = st.FS.FetchErrors
		if _, err := ctl.CancelPrefetch(ctx, job.ID); err != nil {
			return 0, err
		}
	}
	return mbps, nil
}

// writeSeededFile writes size pseudo-random bytes drawn from seed to path:
// files of distinct seeds share no chunk.
func writeSeededFile(path string, size int64, seed uint64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := seededRand(seed)
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; {
		fillRandom(rng, buf)
		n := min(int64(len(buf)), size-done)
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		done += n
	}
	return f.Close()
}

// seededRand returns the bench's generator of pseudo-random bytes for
// seed: the same seed gives the same bytes.
func seededRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))
}

// fillRandom fills buf with bytes from rng, 8 at a time (a tail shorter
// than 8 bytes is left as it is).
func fillRandom(rng *rand.Rand, buf []byte) {
	for i := 0; i+8 <= len(buf); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			buf[i+k] = byte(v >> (8 * k))
		}
	}
}
