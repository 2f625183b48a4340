package main

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
)

// mpCase is one row group of the multipath table (issue 3): the links in
// front of the primary (links[0]) and of each secondary (links[1:]), and the
// efficiency the multipath read must reach. neverSlower replaces the
// efficiency target by "multipath goodput >= best single-path goodput".
type mpCase struct {
	name        string
	links       []linkemu.Config
	target      float64
	neverSlower bool
}

func link(mbit int64, rtt time.Duration, loss float64) linkemu.Config {
	return linkemu.Config{RateBitsPerSec: mbit * 1_000_000, Delay: rtt / 2, Loss: loss, Seed: 1}
}

func mpCases() []mpCase {
	fast := link(100, 10*time.Millisecond, 0)
	lossy := link(100, 10*time.Millisecond, 0.01)
	return []mpCase{
		{name: "2 equal paths", links: []linkemu.Config{fast, fast}, target: 0.95},
		{name: "3 equal paths", links: []linkemu.Config{fast, fast, fast}, target: 0.93},
		{name: "100M/10ms + 25M/40ms", links: []linkemu.Config{fast, link(25, 40*time.Millisecond, 0)}, target: 0.90},
		{name: "100M/10ms + 10M/200ms", links: []linkemu.Config{fast, link(10, 200*time.Millisecond, 0)}, neverSlower: true},
		{name: "2 equal paths, 1% loss", links: []linkemu.Config{lossy, lossy}, target: 0.85},
	}
}

func linkName(c linkemu.Config) string {
	s := fmt.Sprintf("%dM/%s", c.RateBitsPerSec/1_000_000, 2*c.Delay)
	if c.Loss > 0 {
		s += fmt.Sprintf("/%g%%", c.Loss*100)
	}
	return s
}

// mpResult is what one cold read through a mount measured.
type mpResult struct {
	mbps     float64
	hwmKiB   int64     // VmHWM of the kwikfs mount process after the read
	dupBytes uint64    // sum of Paths[].DuplicateBytes
	perPath  []uint64  // Paths[].BytesReceived, in path order
	rtts     []float64 // Paths[].RTTMillis (smoothed RTT) after the read
	// relayLate is the worst mean lateness of a relay's server-to-client
	// deliveries (a starved relay makes the link burstier than configured);
	// queueDrops counts datagrams dropped by the relays' bottleneck queues.
	relayLate  time.Duration
	queueDrops uint64
	fetchErrs  int64
	// Aggregation latency (frame arrival to Read), p99 in ms: of frames
	// readable on arrival, and of all frames (these also waited for
	// earlier bytes on slower paths); -1 when not reported.
	readyP99, allP99 float64
}

// runMultipath prints the issue-3 table: for every case, the goodput of each
// link alone (a primary without secondaries behind that link), the goodput
// of all links together (a primary and secondaries, each behind its own
// relay), and the efficiency multipath / sum of singles. Single-path
// goodputs of identical links are measured once per run and shared.
func runMultipath(binDir string, size int64, runs int, only string, trace bool) error {
	work, err := os.MkdirTemp("", "kwikbench-mp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if err := writeSeededFile(filepath.Join(tree, "big.bin"), size, 7); err != nil {
		return err
	}
	certDir, err := writeCerts(work)
	if err != nil {
		return err
	}
	env := &mpEnv{bin: binDir, work: work, tree: tree, certs: certDir, size: size, runs: max(runs, 1), trace: trace}

	singles := map[string]mpResult{}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "multipath case (%d MiB cold read, median of %d)\tsingle-path MB/s\tmultipath MB/s\tefficiency\ttarget\tmet\tduplicate %%\tbytes per path (MiB)\tsRTT per path (ms)\trelay mean late ms\tqueue drops\taggregation p99 ms (ready / all)\tclient VmHWM MiB\t\n", size>>20, env.runs)
	for _, c := range mpCases() {
		if only != "" && !strings.Contains(c.name, only) {
			continue
		}
		var single []float64
		var sum, best float64
		for _, l := range c.links {
			key := linkName(l)
			r, ok := singles[key]
			if !ok {
				fmt.Fprintf(os.Stderr, "single path %s ...\n", key)
				r, err = env.median([]linkemu.Config{l})
				if err != nil {
					return fmt.Errorf("single path %s: %w", key, err)
				}
				singles[key] = r
			}
			single = append(single, r.mbps)
			sum += r.mbps
			best = max(best, r.mbps)
		}
		fmt.Fprintf(os.Stderr, "multipath %s ...\n", c.name)
		m, err := env.median(c.links)
		if err != nil {
			return fmt.Errorf("multipath %s: %w", c.name, err)
		}
		var singleText, perPath, rtts []string
		for i, v := range single {
			singleText = append(singleText, fmt.Sprintf("%s %.1f", linkName(c.links[i]), v))
		}
		for _, v := range m.perPath {
			perPath = append(perPath, fmt.Sprintf("%.1f", float64(v)/(1<<20)))
		}
		for _, v := range m.rtts {
			rtts = append(rtts, fmt.Sprintf("%.0f", v))
		}
		eff := m.mbps / sum
		target, met := fmt.Sprintf(">= %.2f", c.target), eff >= c.target
		if c.neverSlower {
			target, met = fmt.Sprintf(">= best single %.1f MB/s", best), m.mbps >= best
		}
		errNote := ""
		if m.fetchErrs > 0 {
			errNote = fmt.Sprintf(" (%d fetch errors)", m.fetchErrs)
		}
		fmt.Fprintf(w, "%s\t%s\t%.1f\t%.3f\t%s\t%s\t%.2f\t%s\t%s\t%.2f\t%d\t%.3f / %.1f\t%.1f%s\t\n", c.name, strings.Join(singleText, " + "),
			m.mbps, eff, target, yesNo(met), 100*float64(m.dupBytes)/float64(size), strings.Join(perPath, " / "), strings.Join(rtts, " / "),
			float64(m.relayLate.Microseconds())/1000, m.queueDrops, m.readyP99, m.allP99,
			float64(m.hwmKiB)/1024, errNote)
	}
	return w.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// mpEnv holds what every measurement shares: binaries, the exported tree
// (which the secondaries mirror by exporting the same directory) and certs.
type mpEnv struct {
	bin, work, tree, certs string
	size                   int64
	runs                   int  // reads per figure; the median is reported
	trace                  bool // print each relay's server-to-client MB/s every 250 ms
	n                      int
}

// median measures links e.runs times and returns the run with the median
// goodput (its memory and duplicate figures come from that same run).
func (e *mpEnv) median(links []linkemu.Config) (mpResult, error) {
	var rs []mpResult
	for range e.runs {
		r, err := e.measure(links)
		if err != nil {
			return mpResult{}, err
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b mpResult) int { return cmp.Compare(a.mbps, b.mbps) })
	return rs[len(rs)/2], nil
}

// measure starts one relay per link, a kwik-primary behind links[0] with a
// kwik-secondary behind each further link, mounts the primary's relay with
// a fresh cache and reads the file once.
func (e *mpEnv) measure(links []linkemu.Config) (mpResult, error) {
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	var relays []*linkemu.Relay
	var targets []string // where each relay forwards to: its server's --listen
	for i, l := range links {
		port, err := freeUDPPort()
		if err != nil {
			return mpResult{}, err
		}
		target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		targets = append(targets, target)
		r, err := linkemu.New(target, l)
		if err != nil {
			return mpResult{}, fmt.Errorf("relay %d: %w", i, err)
		}
		cleanup = append(cleanup, func() { r.Close() })
		relays = append(relays, r)
		if i == 0 {
			continue // the primary starts last, once it can name the secondaries
		}
		stop, err := e.startServer("kwik-secondary", target, "--advertise", r.Addr())
		if err != nil {
			return mpResult{}, err
		}
		cleanup = append(cleanup, stop)
	}
	args := []string{}
	for _, r := range relays[1:] {
		args = append(args, "--secondary", r.Addr())
	}
	stop, err := e.startServer("kwik-primary", targets[0], args...)
	if err != nil {
		return mpResult{}, err
	}
	cleanup = append(cleanup, stop)
	e.n++
	if e.trace {
		stopTrace := traceRelays(relays)
		cleanup = append(cleanup, stopTrace)
	}
	res, err := e.coldRead(relays[0].Addr(), filepath.Join(e.work, fmt.Sprintf("mpcache-%d", e.n)), len(links))
	if err != nil {
		return mpResult{}, err
	}
	for _, r := range relays {
		st := r.Stats()
		for _, d := range []linkemu.DirStats{st.ClientToServer, st.ServerToClient} {
			res.queueDrops += d.DroppedQueue.Packets
			if d.Forwarded.Packets > 0 {
				res.relayLate = max(res.relayLate, d.TotalLate/time.Duration(d.Forwarded.Packets))
			}
		}
	}
	return res, nil
}

// startServer starts a kwik-primary or kwik-secondary serving e.tree on
// listen and waits for its "listening on" line; the returned func stops it.
func (e *mpEnv) startServer(name, listen string, extra ...string) (func(), error) {
	s, err := startKwikServer(e.bin, name, "", serverArgs(name, e.tree, e.certs, listen, extra...))
	if err != nil {
		return nil, err
	}
	return s.stop, nil
}

// coldRead mounts addr with an empty cache, waits for wantPaths paths to be
// up (so the multipath read does not start on the primary alone), reads
// big.bin once and collects the mount's status and peak memory.
func (e *mpEnv) coldRead(addr, cache string, wantPaths int) (mpResult, error) {
	defer os.RemoveAll(cache)
	m, err := startMount(e.bin, e.certs, e.work, addr, cache, "--log-level", "warn")
	if err != nil {
		return mpResult{}, err
	}
	defer m.close()
	mnt := m.dir
	// The session (and its secondary paths) comes up on the first request;
	// a stat of the file makes it, then the paths get a moment to join.
	if _, err := os.Stat(filepath.Join(mnt, "big.bin")); err != nil {
		return mpResult{}, err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := m.ctl.Status(context.Background())
		if err != nil {
			return mpResult{}, err
		}
		if len(st.Paths) >= wantPaths {
			break
		}
		if time.Now().After(deadline) {
			return mpResult{}, fmt.Errorf("only %d of %d paths up after 10s", len(st.Paths), wantPaths)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mbps, err := readFile(filepath.Join(mnt, "big.bin"))
	if err != nil {
		return mpResult{}, err
	}
	st, err := m.ctl.Status(context.Background())
	if err != nil {
		return mpResult{}, err
	}
	hwm, err := vmHWM(m.cmd.Process.Pid)
	if err != nil {
		return mpResult{}, err
	}
	r := mpResult{mbps: mbps, hwmKiB: hwm, fetchErrs: st.FS.FetchErrors, readyP99: -1, allP99: -1}
	if l := st.ReadLatency; l != nil {
		r.allP99 = l.P99Millis
		if l.ReadyFrames > 0 {
			r.readyP99 = l.ReadyP99
		}
	}
	for _, p := range st.Paths {
		r.dupBytes += p.Duplicates
		r.perPath = append(r.perPath, p.BytesReceived)
		r.rtts = append(r.rtts, p.RTTMillis)
	}
	return r, nil
}

// startRelayedPrimary starts a kwik-primary serving tree with the
// certificates in certs (see writeCerts) on a free port of 127.0.0.1
// (target) behind a linkemu relay with link, and returns the relay
// (clients dial relay.Addr()), target and a func that stops the primary.
// The caller closes the relay.
func startRelayedPrimary(bin, tree, certs string, link linkemu.Config) (relay *linkemu.Relay, target string, stop func(), err error) {
	port, err := freeUDPPort()
	if err != nil {
		return nil, "", nil, err
	}
	target = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if relay, err = linkemu.New(target, link); err != nil {
		return nil, "", nil, err
	}
	s, err := startKwikServer(bin, "kwik-primary", "", serverArgs("kwik-primary", tree, certs, target))
	if err != nil {
		relay.Close()
		return nil, "", nil, err
	}
	return relay, target, s.stop, nil
}

// traceRelays prints, every 250 ms until the returned func is called, the
// MB/s each relay forwarded from its server to the client: where a path sat
// idle shows as a dip in its column.
func traceRelays(relays []*linkemu.Relay) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		const every = 250 * time.Millisecond
		t := time.NewTicker(every)
		defer t.Stop()
		last := make([]uint64, len(relays))
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-t.C:
			}
			line := fmt.Sprintf("%6.2fs", float64(i+1)*every.Seconds())
			for k, r := range relays {
				b := r.Stats().ServerToClient.Forwarded.Bytes
				line += fmt.Sprintf(" %6.1f", float64(b-last[k])/every.Seconds()/1e6)
				last[k] = b
			}
			fmt.Fprintln(os.Stderr, line)
		}
	}()
	return func() { close(done); <-finished }
}
