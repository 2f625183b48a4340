package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Ports inside the namespaces (each namespace has its own port space).
const (
	linksAlonePort = 4433 // the primary without secondaries, in each namespace
	linksMultiPort = 4434 // the primary with a secondary (in A), the secondary (in B)
	linksHTTPPort  = 8080 // nginx
	linksPprofBase = 6061 // pprof on the namespace's loopback: 6061 alone, 6062 multi
)

// linksCase is one row of the links table: the rates of link A (the
// primary's) and link B, and the efficiency target of kwikfs over both.
type linksCase struct {
	name         string
	mbitA, mbitB int64
	target       float64
}

func linksCases() []linksCase {
	return []linksCase{
		{name: "500M + 500M", mbitA: 500, mbitB: 500, target: 0.95},
		{name: "1G + 1G", mbitA: 1000, mbitB: 1000, target: 0.90},
		{name: "1G + 250M", mbitA: 1000, mbitB: 250, target: 0.90},
	}
}

// linksConfig says what the links table measures.
type linksConfig struct {
	bin        string
	size       int64  // bytes of the file read in every measurement
	runs       int    // rounds; medians are reported
	profileDir string // where the 1G + 1G profiles go; "" for none
}

// linksMode is what a kwikfs measurement reads through.
type linksMode int

const (
	linksOnlyA linksMode = iota // a primary in A alone
	linksOnlyB                  // a primary in B alone
	linksBoth                   // a primary in A with a secondary in B
)

func (m linksMode) String() string { return [...]string{"A alone", "B alone", "both"}[m] }

// linksRead is what one cold read through a kwikfs mount measured.
type linksRead struct {
	mbit      float64  // Mbit/s of the read
	delivered []uint64 // bytes each path delivered first, primary's first
	rtt       []float64
	// CPU seconds per GiB read of the daemon, the primary and the
	// secondary (-1: none).
	cpuDaemon, cpuPrimary, cpuSecondary float64
	// cpuReader is the same for the reading process (the bench itself:
	// its read(2) calls copy the bytes out of the FUSE page cache).
	cpuReader float64
	// busy is the fraction of all the machine's CPU time spent outside
	// idle and iowait during the read; softirq the part in softirq.
	busy, softirq float64
	// oursCores is the CPU the daemon, the servers of the read and the
	// reader used, in cores; othersCores the rest of busy (other
	// processes, kernel threads such as the store's writeback), in cores.
	oursCores, othersCores float64
	// starved is, per link (A, B), the fraction of 10 ms slots of the
	// read in which it carried less than half its rate; -1 when unused.
	starved [2]float64
	// UDP counters (/proc/net/snmp) during the read: RcvbufErrors of the
	// client's namespace (the root), SndbufErrors of the servers' ones
	// (an ENOBUFS from a full tbf queue counts there too).
	rcvbufErrs, sndbufErrs uint64
	// tbf drops during the read: of the namespace-side qdiscs (the data
	// direction) and the root-side ones (requests, acknowledgements).
	dataDrops, ackDrops uint64
	// dataSent is the bytes the namespace-side qdiscs sent during the read.
	dataSent uint64
	// maxRxQueue is the most bytes seen waiting in the daemon's UDP
	// receive queues, sockDrops the drops those sockets counted (sampled
	// every 50 ms from /proc/PID/net/udp); maxTxQueue the most bytes seen
	// in the servers' send queues.
	maxRxQueue, maxTxQueue, sockDrops uint64
	fetchErrors                       int64
	load                              float64 // 1-minute load average before the read
}

// linksRound is one round of one case.
type linksRound struct {
	kw          [3]linksRead // by linksMode
	curl, aria2 refRun
}

// linksBench holds what every measurement shares.
type linksBench struct {
	c               linksConfig
	bin, work, tree string
	certs           string
	lab             *linksLab
	pA, pB, pAB, sB *linksServer
	file            string       // the served file, in tree
	rateA, rateB    int64        // Mbit/s of the links as shaped now
	nginx           [2]*exec.Cmd // in A, in B
}

// runLinks prints the links tables: kwikfs over link A alone, link B alone
// and both (a primary in A with a secondary in B), curl over A and aria2c
// over both from nginx, every figure in the same run, rounds interleaved,
// medians reported; then what the median kwikfs runs saw in the kernel
// (CPU, UDP buffer errors, tbf drops, socket queues).
func runLinks(c linksConfig) error {
	if os.Geteuid() != 0 {
		return errors.New("--links needs root (network namespaces, tc, FUSE mounts, drop_caches)")
	}
	if err := ensureLinksTools(); err != nil {
		return err
	}
	bin, err := filepath.Abs(c.bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kwikbench-links-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	lab := &linksLab{procs: map[*exec.Cmd]struct{}{}, mounts: map[string]struct{}{}}
	if err := removeLinksLeftovers(work); err != nil {
		return fmt.Errorf("remove an earlier run's namespaces: %w", err)
	}
	defer lab.teardown()
	stopSignals := lab.teardownOnSignal(work)
	defer stopSignals()
	if err := lab.setup(); err != nil {
		return fmt.Errorf("set up the links: %w", err)
	}

	b := &linksBench{c: c, bin: bin, work: work, tree: filepath.Join(work, "tree"), lab: lab}
	b.file = filepath.Join(b.tree, "big.bin")
	fmt.Fprintf(os.Stderr, "writing a %d MiB file ...\n", c.size>>20)
	if err := writeSeededFile(b.file, c.size, 11); err != nil {
		return err
	}
	if b.certs, err = writeCerts(work, linkA.nsIP, linkB.nsIP); err != nil {
		return err
	}
	if err := b.startServers(); err != nil {
		return err
	}
	// The primaries compute the file's manifest on its first open: do it
	// now, so that no measured read includes the hashing.
	cases := linksCases()
	if err := b.shape(cases[0]); err != nil {
		return err
	}
	for _, p := range []*linksServer{b.pA, b.pB, b.pAB} {
		if err := b.warmManifest(p); err != nil {
			return fmt.Errorf("warm the manifest of %s: %w", p.label, err)
		}
	}

	uptimeStart := uptime()
	rounds := make([][]linksRound, len(cases))
	for r := range max(c.runs, 1) {
		for i, lc := range cases {
			fmt.Fprintf(os.Stderr, "round %d, %s ...\n", r+1, lc.name)
			rd, err := b.round(lc)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, lc.name, err)
			}
			rounds[i] = append(rounds[i], rd)
		}
	}
	var profiled *linksRead
	if c.profileDir != "" {
		lc := cases[1]
		fmt.Fprintf(os.Stderr, "%s, both, with profiles into %s ...\n", lc.name, c.profileDir)
		if err := b.shape(lc); err != nil {
			return err
		}
		kr, err := b.kwikfs(linksBoth, c.profileDir)
		if err != nil {
			return fmt.Errorf("profiled run: %w", err)
		}
		profiled = &kr
	}
	printLinksTables(c, cases, rounds, uptimeStart, uptime())
	if profiled != nil {
		fmt.Printf("(profiled 1G + 1G both read, not in the tables: %.0f Mbit/s, cores ours / others %.2f / %.2f; in %s: 5 s CPU profiles\n"+
			" daemon.pprof, primary.pprof, secondary.pprof from the read's start; trace.tsv, each link's Mbit/s and each path's delivered\n"+
			" and in-flight bytes every 100 ms; 0.5 s in: *-goroutines.txt, ss-*.txt, tc-midread.txt, status-midread.json)\n",
			profiled.mbit, profiled.oursCores, profiled.othersCores, c.profileDir)
	}
	return nil
}

// round measures one case once: kwikfs over A, B and both, curl over A,
// aria2c over both.
func (b *linksBench) round(lc linksCase) (linksRound, error) {
	var rd linksRound
	if err := b.shape(lc); err != nil {
		return rd, err
	}
	for _, m := range []linksMode{linksOnlyA, linksOnlyB, linksBoth} {
		kr, err := b.kwikfs(m, "")
		if err != nil {
			return rd, fmt.Errorf("kwikfs %s: %w", m, err)
		}
		rd.kw[m] = kr
	}
	var err error
	if rd.curl, err = b.curl(); err != nil {
		return rd, err
	}
	if rd.aria2, err = b.aria2(); err != nil {
		return rd, err
	}
	return rd, nil
}

// shape shapes the links for lc.
func (b *linksBench) shape(lc linksCase) error {
	b.rateA, b.rateB = lc.mbitA, lc.mbitB
	return b.lab.shape(lc.mbitA, lc.mbitB)
}

// linksServer is a kwik-primary or kwik-secondary in a namespace.
type linksServer struct {
	*kwikServer
	label string // for messages and profile names
	ns    string
	pprof string // inside ns
}

// pid returns the server's PID; 0 for a nil server (no such server).
func (s *linksServer) pid() int {
	if s == nil {
		return 0
	}
	return s.kwikServer.pid()
}

// startServers starts the three primaries (A alone, B alone, A with a
// secondary), the secondary in B and nginx in both namespaces. They run
// for the whole bench: the servers' per-session state is made anew by
// every mount, and a server not read from is idle.
func (b *linksBench) startServers() error {
	hostPort := func(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
	var err error
	start := func(label, name string, l linksEnd, port int, extra ...string) *linksServer {
		if err != nil {
			return nil
		}
		s := &linksServer{label: label, ns: l.ns, pprof: hostPort("127.0.0.1", linksPprofBase+port-linksAlonePort)}
		args := serverArgs(name, b.tree, b.certs, hostPort(l.nsIP, port), append([]string{"--pprof", s.pprof}, extra...)...)
		if s.kwikServer, err = startKwikServer(b.bin, name, l.ns, args); err == nil {
			err = b.lab.track(s.cmd)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", label, err)
		}
		return s
	}
	b.pA = start("primary A", "kwik-primary", linkA, linksAlonePort)
	b.pB = start("primary B", "kwik-primary", linkB, linksAlonePort)
	b.sB = start("secondary B", "kwik-secondary", linkB, linksMultiPort, "--advertise", hostPort(linkB.nsIP, linksMultiPort))
	if err != nil {
		return err
	}
	b.pAB = start("primary A+B", "kwik-primary", linkA, linksMultiPort, "--secondary", b.sB.addr)
	if err != nil {
		return err
	}
	for i, l := range []linksEnd{linkA, linkB} {
		if b.nginx[i], err = b.startNginx(l); err != nil {
			return err
		}
	}
	return nil
}

// startNginx runs nginx in l's namespace as a single process, serving
// the tree on port linksHTTPPort with its configuration under the work
// dir, and waits until it accepts connections. The lab stops it.
func (b *linksBench) startNginx(l linksEnd) (*exec.Cmd, error) {
	addr := net.JoinHostPort(l.nsIP, strconv.Itoa(linksHTTPPort))
	cmd, err := nginxSpec{dir: filepath.Join(b.work, "nginx-"+l.ns), listen: addr, root: b.tree, ns: l.ns, oneProcess: true}.command()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nginx in %s: %w", l.ns, err)
	}
	if err := b.lab.track(cmd); err != nil {
		return nil, err
	}
	if err := waitTCP(addr); err != nil {
		return nil, fmt.Errorf("nginx in %s not listening on %s after 10s: %w", l.ns, addr, err)
	}
	return cmd, nil
}

// warmManifest mounts primary p and reads the first MiB of the file, so
// that p has computed the file's manifest before the measured reads.
func (b *linksBench) warmManifest(p *linksServer) error {
	cache, err := os.MkdirTemp(b.work, "cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	m, err := b.mount(p.addr, cache)
	if err != nil {
		return err
	}
	defer b.unmount(m)
	f, err := os.Open(filepath.Join(m.dir, "big.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.ReadFull(f, make([]byte, min(b.c.size, 1<<20)))
	return err
}

func (b *linksBench) mount(addr, cache string) (*benchMount, error) {
	m, err := startMount(b.bin, b.certs, b.work, addr, cache, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	b.lab.trackMount(m)
	return m, nil
}

func (b *linksBench) unmount(m *benchMount) {
	m.close()
	b.lab.untrackMount(m)
}

// coldSource drops the page cache (so no measurement profits from an
// earlier one's pages), then reads the served file once: every server,
// kwik's and nginx, then serves it from memory, so the links and the
// programs are measured, not the disk.
func (b *linksBench) coldSource() error {
	if err := dropCaches(dropPageCache); err != nil {
		return err
	}
	f, err := os.Open(b.file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// kwikfs mounts the primary of mode with a fresh cache, waits for its
// paths, and reads the file once with 1 MiB reads. With profileDir set it
// also saves 5 s CPU profiles of the daemon and the servers, taken from
// the start of the read, and snapshots taken 0.5 s into it.
func (b *linksBench) kwikfs(mode linksMode, profileDir string) (linksRead, error) {
	var out linksRead
	primary, secondary := b.pA, (*linksServer)(nil)
	switch mode {
	case linksOnlyB:
		primary = b.pB
	case linksBoth:
		primary, secondary = b.pAB, b.sB
	}
	servers := []*linksServer{primary}
	if secondary != nil {
		servers = append(servers, secondary)
	}
	if err := b.coldSource(); err != nil {
		return out, err
	}
	cache, err := os.MkdirTemp(b.work, "cache-")
	if err != nil {
		return out, err
	}
	defer os.RemoveAll(cache)
	m, err := b.mount(primary.addr, cache)
	if err != nil {
		return out, err
	}
	defer b.unmount(m)
	path := filepath.Join(m.dir, "big.bin")
	// The session (and its secondary path) comes up on the first request.
	if _, err := os.Stat(path); err != nil {
		return out, err
	}
	if err := m.waitPathsUp(len(servers)); err != nil {
		return out, err
	}

	daemonPID := m.cmd.Process.Pid
	out.load = load1()
	var rates [2]float64
	if mode != linksOnlyB {
		rates[0] = float64(b.rateA) * 1e6
	}
	if mode != linksOnlyA {
		rates[1] = float64(b.rateB) * 1e6
	}
	pids := []int{daemonPID, primary.pid(), secondary.pid(), os.Getpid()}
	cpuBefore := processCPU(pids...)
	statBefore := readMachineCPU()
	netBefore := b.lab.counters(b.pA.pid(), b.pB.pid())
	sampler := linksStartSampler(rates, daemonPID, primary.pid(), secondary.pid())
	var prof *linksProfiler
	if profileDir != "" {
		prof = linksStartProfiles(profileDir, m, servers)
	}

	start := time.Now()
	mbps, readErr := readLoop(path, 1<<20, b.c.size)
	secs := time.Since(start).Seconds()

	out.maxRxQueue, out.maxTxQueue, out.sockDrops, out.starved = sampler.stop()
	cpuAfter := processCPU(pids...)
	statAfter := readMachineCPU()
	netAfter := b.lab.counters(b.pA.pid(), b.pB.pid())
	if prof != nil {
		if err := prof.wait(); err != nil {
			return out, err
		}
	}
	if readErr != nil {
		return out, readErr
	}
	out.mbit = mbps * 8
	perGiB := func(i int) float64 { return (cpuAfter[i] - cpuBefore[i]).Seconds() / gib(b.c.size) }
	out.cpuDaemon, out.cpuPrimary, out.cpuSecondary, out.cpuReader = perGiB(0), perGiB(1), -1, perGiB(3)
	if secondary != nil {
		out.cpuSecondary = perGiB(2)
	}
	out.busy, out.softirq = statAfter.since(statBefore)
	for i := range pids {
		out.oursCores += (cpuAfter[i] - cpuBefore[i]).Seconds() / secs
	}
	// Tick granularity (10 ms) can make a small remainder negative.
	out.othersCores = max(0, out.busy*float64(runtime.NumCPU())-out.oursCores)
	out.rcvbufErrs = netAfter.rcvbufRoot - netBefore.rcvbufRoot
	out.sndbufErrs = netAfter.sndbufNS - netBefore.sndbufNS
	out.dataDrops = netAfter.dataDrops - netBefore.dataDrops
	out.ackDrops = netAfter.ackDrops - netBefore.ackDrops
	out.dataSent = netAfter.dataBytes - netBefore.dataBytes
	st, err := m.ctl.Status(context.Background())
	if err != nil {
		return out, err
	}
	for _, p := range st.Paths {
		out.delivered = append(out.delivered, p.BytesDelivered)
		out.rtt = append(out.rtt, p.RTTMillis)
	}
	out.fetchErrors = st.FS.FetchErrors
	return out, nil
}

// refRun is what one curl or aria2c download measured.
type refRun struct {
	mbit float64
	// CPU seconds per GiB of the client (curl or aria2c) and of the
	// nginx processes together.
	cpuClient, cpuNginx float64
}

// curl fetches the file from nginx in A to /dev/null and returns curl's
// own rate (speed_download).
func (b *linksBench) curl() (refRun, error) {
	var r refRun
	if err := b.coldSource(); err != nil {
		return r, err
	}
	url := fmt.Sprintf("http://%s/big.bin", net.JoinHostPort(linkA.nsIP, strconv.Itoa(linksHTTPPort)))
	cmd := exec.Command("curl", "-sS", "--max-time", "600", "-o", "/dev/null",
		"-w", "%{http_code} %{size_download} %{speed_download}", url)
	nginxBefore := processCPU(b.nginx[0].Process.Pid)
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("curl: %w", err)
	}
	nginxAfter := processCPU(b.nginx[0].Process.Pid)
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != "200" || f[1] != strconv.FormatInt(b.c.size, 10) {
		return r, fmt.Errorf("curl: got %q, want 200 and %d bytes", out, b.c.size)
	}
	bps, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return r, fmt.Errorf("curl speed %q: %w", f[2], err)
	}
	r.mbit = bps * 8 / 1e6
	r.cpuClient = rusageCPU(cmd.ProcessState).Seconds() / gib(b.c.size)
	r.cpuNginx = (nginxAfter[0] - nginxBefore[0]).Seconds() / gib(b.c.size)
	return r, nil
}

// aria2 downloads the file from nginx in A and in B at once (aria2c
// splitting it over both mirrors: two connections to each, 1 MiB pieces
// at the least, so the faster mirror takes more) to a file in the work
// dir, and returns Mbit/s from the wall time of the aria2c process.
func (b *linksBench) aria2() (refRun, error) {
	var r refRun
	if err := b.coldSource(); err != nil {
		return r, err
	}
	dir := filepath.Join(b.work, "aria2")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	url := func(l linksEnd) string {
		return fmt.Sprintf("http://%s/big.bin", net.JoinHostPort(l.nsIP, strconv.Itoa(linksHTTPPort)))
	}
	cmd := exec.Command("aria2c", "--quiet", "--allow-overwrite=true", "--auto-file-renaming=false",
		"--file-allocation=none", "--max-tries=1", "--split=4", "--max-connection-per-server=2", "--min-split-size=1M",
		"--dir", dir, "--out", "big.bin", url(linkA), url(linkB))
	cmd.Stderr = os.Stderr
	nginxBefore := processCPU(b.nginx[0].Process.Pid, b.nginx[1].Process.Pid)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("aria2c: %w", err)
	}
	secs := time.Since(start).Seconds()
	nginxAfter := processCPU(b.nginx[0].Process.Pid, b.nginx[1].Process.Pid)
	fi, err := os.Stat(filepath.Join(dir, "big.bin"))
	if err != nil {
		return r, err
	}
	if fi.Size() != b.c.size {
		return r, fmt.Errorf("aria2c wrote %d bytes, want %d", fi.Size(), b.c.size)
	}
	r.mbit = float64(b.c.size) * 8 / secs / 1e6
	r.cpuClient = rusageCPU(cmd.ProcessState).Seconds() / gib(b.c.size)
	r.cpuNginx = (nginxAfter[0] + nginxAfter[1] - nginxBefore[0] - nginxBefore[1]).Seconds() / gib(b.c.size)
	return r, nil
}
