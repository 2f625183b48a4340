package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
	"golang.org/x/sys/unix"
)

// The load test's tree: one file of its own per client and two files every
// client copies. Sizes are chosen so that the whole test stays within a few
// minutes with -race on two busy cores.
const (
	loadClients     = 32
	loadOwnSize     = 2 << 20   // client i's own file: loadOwnSize + i*4099 bytes
	loadSharedBig   = 16 << 20  // shared/big.bin
	loadSharedSmall = 1<<20 + 7 // shared/small.bin
	loadChunkSize   = 262144    // startClusterRoots' --chunk-size
)

// Bounds on the peak resident set (VmHWM) of the servers over the whole
// load test (binaries without the race detector: see usePlainBinaries).
//
// The primary's per-session footprint is bounded by design
// (server/limits.go): at most 64 requests served at once, each holding one
// chunk buffer (256 KiB here), so 16 MiB, plus reply data waiting in kwik
// and QUIC, which the client's flow-control windows bound. Measured on 2
// cores with binaries built without -race: 9 MiB idle, 114 MiB with 32
// clients (with -race: 500-585 MiB). 300 MiB is that plus about 160%: room
// for scheduling noise, while a primary that kept the 230 MiB of replies
// it sends itself, or whose per-session memory grew with the bytes
// served, would cross it.
//
// The secondary sends the chunks the primary delegates (about 380 MiB in
// this test): measured 8 MiB idle, 62 MiB with 32 clients (with -race
// about 200). 160 MiB is 2.5 times that; a secondary that kept what it
// sent would cross it.
const (
	loadPrimaryHWMKiB   = 300 << 10
	loadSecondaryHWMKiB = 160 << 10
)

// startLoadMounts starts n `kwikfs mount` processes against addr, each with
// its own cache directory and mountpoint, all at once, and waits until every
// one is mounted. Every mount is detached and its process killed at cleanup.
func startLoadMounts(t *testing.T, n int, addr, caFile string) []*mount {
	t.Helper()
	base := t.TempDir()
	mounts := make([]*mount, n)
	for i := range mounts {
		mnt := filepath.Join(base, fmt.Sprintf("mnt-%02d", i))
		cache := filepath.Join(base, fmt.Sprintf("cache-%02d", i))
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"mount", "--primary", addr, "--ca", caFile}, clientCertArgs(filepath.Dir(caFile))...)
		p := start(t, "kwikfs", append(args, "--cache", cache, "--log-level", "warn", mnt)...)
		mounts[i] = &mount{proc: p, dir: mnt, cache: cache}
		t.Cleanup(func() {
			if isMounted(mnt) {
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, m := range mounts {
		for !isMounted(m.dir) {
			if time.Now().After(deadline) {
				t.Fatalf("%s not mounted after 60s:\n%s", m.dir, m.Output())
			}
			select {
			case <-m.done:
				t.Fatalf("kwikfs mount %s exited: %v\n%s", m.dir, m.err, m.Output())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return mounts
}

// waitAllPathsUp waits, polling every mount's `kwikfs status --json` in
// parallel, until each session has want paths up.
func waitAllPathsUp(t *testing.T, mounts []*mount, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	errs := make([]error, len(mounts))
	var wg sync.WaitGroup
	for i, m := range mounts {
		wg.Go(func() { errs[i] = pollPathsUp(ctx, m, want) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
}

// pollPathsUp polls m's status until its session has want paths up or ctx
// ends.
func pollPathsUp(ctx context.Context, m *mount, want int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		st, err := readStatus(ctx, m)
		if err == nil {
			up := 0
			for _, p := range st.Paths {
				if p.State == "up" {
					up++
				}
			}
			if up >= want {
				return nil
			}
			err = fmt.Errorf("%d of %d paths up: %+v", up, want, st.Paths)
		}
		last = err
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", m.dir, last)
		}
	}
}

// readStatus runs `kwikfs status --json` on m and decodes its output
// strictly: a field the documented type lacks is an error.
func readStatus(ctx context.Context, m *mount) (control.Status, error) {
	var st control.Status
	out, err := exec.CommandContext(ctx, bin("kwikfs"), "status", "--json", m.dir).CombinedOutput()
	if err != nil {
		return st, fmt.Errorf("kwikfs status: %w: %s", err, out)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("kwikfs status output: %w: %s", err, out)
	}
	return st, nil
}

// statusAll reads every mount's status, in parallel (each `kwikfs status`
// of a race-built binary takes about a second on a busy machine).
func statusAll(t *testing.T, mounts []*mount) []control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sts := make([]control.Status, len(mounts))
	errs := make([]error, len(mounts))
	var wg sync.WaitGroup
	for i, m := range mounts {
		wg.Go(func() { sts[i], errs[i] = readStatus(ctx, m) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	return sts
}

// vmHWMKiB returns the peak resident set size (VmHWM) of the running
// process p, in KiB, from /proc/PID/status.
func vmHWMKiB(t *testing.T, p *proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: VmHWM %q: %v", p.name, rest, err)
			}
			return kib
		}
	}
	t.Fatalf("%s: no VmHWM in /proc/%d/status", p.name, p.cmd.Process.Pid)
	return 0
}

// loadAvg returns the first three fields of /proc/loadavg, for the log.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// loadCopy is one cp of a file out of a mount.
type loadCopy struct {
	client   int
	src, dst string // src relative to the tree's root
	cmd      *exec.Cmd
	stderr   bytes.Buffer
	err      error // cp's exit, valid once the copies are done
}

// TestLoad32Clients runs 32 mount daemons (separate processes, each with its
// own cache and mountpoint) against one kwik-primary with one kwik-secondary
// on loopback. Each client copies, with three cp processes started together
// with everybody else's, its own file and the two shared files. Every copy
// is byte-identical; every mount fetched exactly the chunks of the files it
// copied, each once, without a failed fetch; the secondary delivered a share
// of the data; the servers' peak resident memory stays under
// loadPrimaryHWMKiB and loadSecondaryHWMKiB; every mount unmounts and exits 0. The aggregate
// throughput (bytes copied / wall time of the copies) and each server's
// VmHWM are logged. The processes are built without the race detector (see
// usePlainBinaries): 34 race-instrumented processes on 2 cores ran at a
// load average of 40-50 and starved each other for seconds.
func TestLoad32Clients(t *testing.T) {
	usePlainBinaries(t)
	testStart := time.Now()
	root := filepath.Join(t.TempDir(), "tree")
	shared := []struct {
		name string
		size int
	}{{"shared/big.bin", loadSharedBig}, {"shared/small.bin", loadSharedSmall}}
	sizes := make(map[string]int)
	for i, f := range shared {
		writeRandomFile(t, filepath.Join(root, f.name), f.size, uint64(9000+i))
		sizes[f.name] = f.size
	}
	own := func(i int) string { return fmt.Sprintf("own/client-%02d.bin", i) }
	for i := range loadClients {
		n := loadOwnSize + i*4099
		writeRandomFile(t, filepath.Join(root, own(i)), n, uint64(9100+i))
		sizes[own(i)] = n
	}
	wantSHA := make(map[string][32]byte, len(sizes))
	for name := range sizes {
		wantSHA[name] = fileSHA(t, filepath.Join(root, name))
	}

	t.Logf("tree of %d files written and hashed in %v", len(sizes), time.Since(testStart).Round(time.Millisecond))

	certDir := certs(t)
	sec := startServer(t, "kwik-secondary", root, certDir)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(loadChunkSize), "--secondary", sec.addr)
	idlePrimary, idleSecondary := vmHWMKiB(t, p.proc), vmHWMKiB(t, sec.proc)

	mountStart := time.Now()
	mounts := startLoadMounts(t, loadClients, p.addr, filepath.Join(certDir, certgen.CAFile))
	t.Logf("%d mounts mounted in %v", loadClients, time.Since(mountStart).Round(time.Millisecond))
	waitAllPathsUp(t, mounts, 2)
	t.Logf("%d mounts up with 2 paths each in %v", loadClients, time.Since(mountStart).Round(time.Millisecond))

	// Every client copies its own file and the shared ones; all cp
	// processes start together.
	out := t.TempDir()
	var copies []*loadCopy
	wantFetched := make([]int64, loadClients)
	wantChunks := make([]int64, loadClients)
	for i := range loadClients {
		names := []string{own(i), shared[0].name, shared[1].name}
		for _, name := range names {
			copies = append(copies, &loadCopy{
				client: i, src: name,
				dst: filepath.Join(out, fmt.Sprintf("%02d-%s", i, filepath.Base(name))),
			})
			wantFetched[i] += int64(sizes[name])
			wantChunks[i] += int64((sizes[name] + loadChunkSize - 1) / loadChunkSize)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, c := range copies {
		c.cmd = exec.CommandContext(ctx, "cp", filepath.Join(mounts[c.client].dir, c.src), c.dst)
		c.cmd.Stderr = &c.stderr
	}
	var wg sync.WaitGroup
	copyStart := time.Now()
	for _, c := range copies {
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("start %v: %v", c.cmd.Args, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.err = c.cmd.Wait()
		}()
	}
	wg.Wait()
	wall := time.Since(copyStart)
	t.Logf("load average after the copies: %s", loadAvg())
	if ctx.Err() != nil {
		t.Fatalf("copies still running after 4 minutes (killed)")
	}

	var copied int64
	for _, c := range copies {
		if c.err != nil {
			t.Errorf("client %d: %v: %v: %s", c.client, c.cmd.Args, c.err, bytes.TrimSpace(c.stderr.Bytes()))
			continue
		}
		if got, want := fileSHA(t, c.dst), wantSHA[c.src]; got != want {
			t.Errorf("client %d: copy of %s has sha %x, want %x", c.client, c.src, got[:6], want[:6])
		}
		copied += int64(sizes[c.src])
	}
	t.Logf("aggregate throughput: %d copies, %.1f MiB in %v = %.1f MiB/s",
		len(copies), float64(copied)/(1<<20), wall.Round(time.Millisecond), float64(copied)/(1<<20)/wall.Seconds())
	if t.Failed() {
		t.FailNow()
	}

	// What each mount fetched, and from which path.
	var fromPrimary, fromSecondary, duplicates uint64
	stalled := 0         // secondary paths a client closed as stalled (and the primary re-added)
	worstReceived := 0.0 // the highest ratio of a mount's received payload to its file bytes
	for i, st := range statusAll(t, mounts) {
		fs := st.FS
		if fs.BytesFetched != wantFetched[i] || fs.ChunksFetched != wantChunks[i] || fs.FetchErrors != 0 || fs.CorruptRefetches != 0 {
			t.Errorf("client %d fetched %d bytes in %d chunks (%d fetch errors, %d corrupt refetches); want exactly %d bytes in %d chunks, no errors",
				i, fs.BytesFetched, fs.ChunksFetched, fs.FetchErrors, fs.CorruptRefetches, wantFetched[i], wantChunks[i])
		}
		if len(st.Paths) != 2 {
			t.Errorf("client %d: session has %d paths, want 2: %+v", i, len(st.Paths), st.Paths)
		}
		var received uint64
		for _, path := range st.Paths {
			if path.Stalled {
				stalled++
			}
			if path.ID == 0 {
				fromPrimary += path.BytesDelivered
			} else {
				fromSecondary += path.BytesDelivered
			}
			duplicates += path.Duplicates
			received += path.BytesReceived
		}
		worstReceived = max(worstReceived, float64(received)/float64(wantFetched[i]))
	}
	var fetched int64
	for _, n := range wantFetched {
		fetched += n
	}
	t.Logf("secondary paths closed as stalled: %d", stalled)
	t.Logf("delivered first: primary %.1f MiB, secondary %.1f MiB (%.1f%%); duplicate bytes %.2f MiB (%.2f%% of %.1f MiB fetched)",
		float64(fromPrimary)/(1<<20), float64(fromSecondary)/(1<<20), 100*float64(fromSecondary)/float64(fromPrimary+fromSecondary),
		float64(duplicates)/(1<<20), 100*float64(duplicates)/float64(fetched), float64(fetched)/(1<<20))
	t.Logf("the mount that received the most got %.3f times its file bytes on the wire (payload, duplicates and metadata included)", worstReceived)
	// docs/architecture.md (Scheduling): tail hedging keeps duplicate bytes under a few percent
	// (measured 2.4-3.8% here). A mount's wire bytes add the metadata
	// replies and its share of the duplicates.
	if limit := float64(fetched) / 10; float64(duplicates) > limit {
		t.Errorf("duplicate bytes %d exceed 10%% of the %d bytes fetched", duplicates, fetched)
	}
	if worstReceived > 1.25 {
		t.Errorf("a mount received %.3f times its file bytes on the wire, want at most 1.25", worstReceived)
	}
	if fromSecondary == 0 {
		t.Errorf("the secondary delivered nothing to any of the %d clients", loadClients)
	}

	hwmPrimary, hwmSecondary := vmHWMKiB(t, p.proc), vmHWMKiB(t, sec.proc)
	t.Logf("VmHWM: kwik-primary %d MiB (idle %d MiB, bound %d MiB), kwik-secondary %d MiB (idle %d MiB, bound %d MiB)",
		hwmPrimary>>10, idlePrimary>>10, loadPrimaryHWMKiB>>10, hwmSecondary>>10, idleSecondary>>10, loadSecondaryHWMKiB>>10)
	if hwmPrimary > loadPrimaryHWMKiB {
		t.Errorf("kwik-primary peak resident memory %d KiB exceeds the bound of %d KiB", hwmPrimary, loadPrimaryHWMKiB)
	}
	if hwmSecondary > loadSecondaryHWMKiB {
		t.Errorf("kwik-secondary peak resident memory %d KiB exceeds the bound of %d KiB", hwmSecondary, loadSecondaryHWMKiB)
	}

	// Every mount unmounts on SIGINT and exits 0.
	unmountStart := time.Now()
	for _, m := range mounts {
		m.cmd.Process.Signal(syscall.SIGINT)
	}
	for i, m := range mounts {
		if err := waitExit(t, m.proc, 30*time.Second); err != nil {
			t.Errorf("client %d: kwikfs mount exited with %v after SIGINT:\n%s", i, err, tail([]byte(m.Output())))
		}
		if isMounted(m.dir) {
			t.Errorf("client %d: %s still mounted after the daemon exited", i, m.dir)
		}
	}
	t.Logf("%d mounts unmounted in %v", loadClients, time.Since(unmountStart).Round(time.Millisecond))
}
