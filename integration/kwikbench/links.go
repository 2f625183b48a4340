package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/daemon"
	"golang.org/x/sys/unix"
)

// The links table (--links) runs every server in a network namespace of
// its own behind a veth pair shaped by the kernel's tbf on both ends (no
// user-space relay): the kwikfs daemon and the reader stay in the root
// namespace (a FUSE mount must be in the root mount namespace), each server
// runs under `ip netns exec`, and the reference rows use nginx, curl and
// aria2c over the same links.
//
// Everything the bench creates is named with linksPrefix: namespaces
// kwbl-a and kwbl-b, veth pairs kwbl-a0 (root side) / kwbl-a1 (namespace
// side) and kwbl-b0 / kwbl-b1. Leftovers of an earlier run that died are
// removed at start; the bench removes its own on every exit path (return,
// panic in the bench's goroutine, SIGINT, SIGTERM). Addresses come from
// 198.18.0.0/15 (RFC 2544 benchmarking) only.
const linksPrefix = "kwbl-"

// linksEnd is one shaped link: a veth pair from the root namespace to ns.
type linksEnd struct {
	ns             string // network namespace of the link's servers
	hostDev, nsDev string // root-side and namespace-side veth
	hostIP, nsIP   string // in a /30 of 198.19.0.0/16
}

var (
	linkA = linksEnd{ns: linksPrefix + "a", hostDev: linksPrefix + "a0", nsDev: linksPrefix + "a1", hostIP: "198.19.71.1", nsIP: "198.19.71.2"}
	linkB = linksEnd{ns: linksPrefix + "b", hostDev: linksPrefix + "b0", nsDev: linksPrefix + "b1", hostIP: "198.19.72.1", nsIP: "198.19.72.2"}
)

// Ports inside the namespaces (each namespace has its own port space).
const (
	linksAlonePort = 4433 // the primary without secondaries, in each namespace
	linksMultiPort = 4434 // the primary with a secondary (in A), the secondary (in B)
	linksHTTPPort  = 8080 // nginx
	linksPprofBase = 6061 // pprof on the namespace's loopback: 6061 alone, 6062 multi
)

// Shaping. tbf runs on the egress of both ends of each veth at the same
// rate: the namespace side shapes the data (server to client), the root
// side the requests and acknowledgements.
//
//   - burst: 2 ms of the rate, at least 64 KiB (1 Gbit/s: 250 KB, 500
//     Mbit/s: 125 KB, 250 Mbit/s: 64 KiB). It must hold a whole GSO/TSO
//     super-packet (64 KiB), or tbf cuts every one into MTU segments, and
//     it must not be so small that a late softirq run (the veth has no
//     wire clock) leaves tokens unused. Measured on this machine with
//     curl from nginx over one shaped veth, 2 runs each: at 1 Gbit/s a
//     15 KB burst gave 906-916 Mbit/s, 64 KB 920-928, 256 KB 942-956 and
//     1 MB 956-959; at 500 Mbit/s 125 KB gave 478, at 250 Mbit/s 64 KiB
//     238-239. TCP's goodput ceiling on the wire is 1448/1514 = 0.956 of
//     the rate, so these reach it.
//   - latency 10 ms: the queue tbf keeps in front of the shaper (its
//     bfifo limit is rate * latency + burst, 1.5 MB at 1 Gbit/s). Enough
//     for one TCP flow to keep the link busy (5 ms at 1 Gbit/s gave the
//     same 941-947 Mbit/s); deeper only adds delay. The veth itself adds
//     none, so the RTT a sender sees is this queue's delay.
//   - txqueuelen is left at the veth's 1000: with tbf at the root the
//     queue is tbf's own bfifo, sized by latency above, and txqueuelen
//     plays no part.
const (
	linksTBFLatency = "10ms"
	linksMinBurst   = 64 << 10
)

// linksBurst returns the tbf burst in bytes for a rate in Mbit/s.
func linksBurst(mbit int64) int64 {
	return max(linksMinBurst, mbit*1_000_000/8*2/1000)
}

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
	bundle, err := certgen.Generate([]string{linkA.nsIP, linkB.nsIP})
	if err != nil {
		return err
	}
	b.certs = filepath.Join(work, "certs")
	if err := bundle.WriteDir(b.certs); err != nil {
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

	uptimeStart := linksUptime()
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
	printLinksTables(c, cases, rounds, uptimeStart, linksUptime())
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
	label string // for messages and profile names
	ns    string
	addr  string // what clients dial
	pprof string // inside ns
	cmd   *exec.Cmd
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
		s := &linksServer{label: label, ns: l.ns, addr: hostPort(l.nsIP, port), pprof: hostPort("127.0.0.1", linksPprofBase+port-linksAlonePort)}
		args := append([]string{"--root", b.tree, "--listen", s.addr,
			"--cert", filepath.Join(b.certs, certgen.CertFile), "--key", filepath.Join(b.certs, certgen.KeyFile),
			"--cluster-key", filepath.Join(b.certs, certgen.ClusterKeyFile), "--log-level", "warn", "--pprof", s.pprof}, extra...)
		s.cmd, err = b.lab.startInNS(l.ns, filepath.Join(b.bin, name), args...)
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

// startNginx runs nginx in l's namespace serving the tree on port
// linksHTTPPort (a minimal config in the work dir, daemon off, one
// process) and waits until it accepts connections.
func (b *linksBench) startNginx(l linksEnd) (*exec.Cmd, error) {
	dir := filepath.Join(b.work, "nginx-"+l.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
	access_log off;
	default_type application/octet-stream;
	sendfile on;
	tcp_nopush on;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s:%[3]d;
		root %[4]s;
	}
}
`, dir, l.nsIP, linksHTTPPort, b.tree)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", l.ns, "nginx", "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.lab.start(cmd); err != nil {
		return nil, fmt.Errorf("nginx in %s: %w", l.ns, err)
	}
	addr := net.JoinHostPort(l.nsIP, strconv.Itoa(linksHTTPPort))
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return cmd, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nginx in %s not listening on %s after 10s: %w", l.ns, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		return fmt.Errorf("drop the page cache: %w", err)
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
	if err := linksWaitPaths(m.ctl, len(servers)); err != nil {
		return out, err
	}

	daemonPID := m.cmd.Process.Pid
	out.load = linksLoad()
	var rates [2]float64
	if mode != linksOnlyB {
		rates[0] = float64(b.rateA) * 1e6
	}
	if mode != linksOnlyA {
		rates[1] = float64(b.rateB) * 1e6
	}
	pids := []int{daemonPID, primary.cmd.Process.Pid, linksPID(secondary), os.Getpid()}
	cpuBefore := linksProcCPU(pids...)
	statBefore := linksMachineCPU()
	netBefore := b.lab.counters(linksPID(b.pA), linksPID(b.pB))
	sampler := linksStartSampler(rates, daemonPID, linksPID(primary), linksPID(secondary))
	var prof *linksProfiler
	if profileDir != "" {
		prof = linksStartProfiles(profileDir, m, servers)
	}

	start := time.Now()
	mbps, readErr := readLoop(path, 1<<20, b.c.size)
	secs := time.Since(start).Seconds()

	out.maxRxQueue, out.maxTxQueue, out.sockDrops, out.starved = sampler.stop()
	cpuAfter := linksProcCPU(pids...)
	statAfter := linksMachineCPU()
	netAfter := b.lab.counters(linksPID(b.pA), linksPID(b.pB))
	if prof != nil {
		if err := prof.wait(); err != nil {
			return out, err
		}
	}
	if readErr != nil {
		return out, readErr
	}
	out.mbit = mbps * 8
	gib := float64(b.c.size) / (1 << 30)
	perGiB := func(i int) float64 { return (cpuAfter[i] - cpuBefore[i]) / gib }
	out.cpuDaemon, out.cpuPrimary, out.cpuSecondary, out.cpuReader = perGiB(0), perGiB(1), -1, perGiB(3)
	if secondary != nil {
		out.cpuSecondary = perGiB(2)
	}
	out.busy, out.softirq = statAfter.since(statBefore)
	for i := range pids {
		out.oursCores += (cpuAfter[i] - cpuBefore[i]) / secs
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

// linksWaitPaths waits (up to 10 s) until want paths of the mount are up.
func linksWaitPaths(ctl *daemon.ControlClient, want int) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := ctl.Status(context.Background())
		if err != nil {
			return err
		}
		up := 0
		for _, p := range st.Paths {
			if p.State == "up" {
				up++
			}
		}
		if up >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d paths up after 10s", up, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func linksPID(s *linksServer) int {
	if s == nil {
		return 0
	}
	return s.cmd.Process.Pid
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
	nginxBefore := linksProcCPU(b.nginx[0].Process.Pid)
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("curl: %w", err)
	}
	nginxAfter := linksProcCPU(b.nginx[0].Process.Pid)
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != "200" || f[1] != strconv.FormatInt(b.c.size, 10) {
		return r, fmt.Errorf("curl: got %q, want 200 and %d bytes", out, b.c.size)
	}
	bps, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		return r, fmt.Errorf("curl speed %q: %w", f[2], err)
	}
	gib := float64(b.c.size) / (1 << 30)
	r.mbit = bps * 8 / 1e6
	r.cpuClient = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds() / gib
	r.cpuNginx = (nginxAfter[0] - nginxBefore[0]) / gib
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
	nginxBefore := linksProcCPU(b.nginx[0].Process.Pid, b.nginx[1].Process.Pid)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("aria2c: %w", err)
	}
	secs := time.Since(start).Seconds()
	nginxAfter := linksProcCPU(b.nginx[0].Process.Pid, b.nginx[1].Process.Pid)
	fi, err := os.Stat(filepath.Join(dir, "big.bin"))
	if err != nil {
		return r, err
	}
	if fi.Size() != b.c.size {
		return r, fmt.Errorf("aria2c wrote %d bytes, want %d", fi.Size(), b.c.size)
	}
	gib := float64(b.c.size) / (1 << 30)
	r.mbit = float64(b.c.size) * 8 / secs / 1e6
	r.cpuClient = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds() / gib
	r.cpuNginx = (nginxAfter[0] + nginxAfter[1] - nginxBefore[0] - nginxBefore[1]) / gib
	return r, nil
}

// printLinksTables prints the two tables and the kernel's view of the
// median kwikfs runs.
func printLinksTables(c linksConfig, cases []linksCase, rounds [][]linksRound, uptimeStart, uptimeEnd string) {
	med := func(rs []linksRound, f func(linksRound) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	// medianRun returns the run of mode m with the median Mbit/s: its
	// shares, CPU and kernel counters are reported together.
	medianRun := func(rs []linksRound, m linksMode) linksRead {
		var v []linksRead
		for _, r := range rs {
			v = append(v, r.kw[m])
		}
		slices.SortFunc(v, func(a, b linksRead) int { return cmp.Compare(a.mbit, b.mbit) })
		return v[len(v)/2]
	}
	runs := len(rounds[0])
	fmt.Printf("uptime before: %s\n", uptimeStart)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "kwikfs, cold cat %d MiB, median of %d\tA alone Mbit/s\tB alone Mbit/s\tboth Mbit/s\tboth runs\tefficiency both/(A+B)\ttarget\tmet\tshare A / B %%\tCPU s/GiB A alone (daemon/primary)\tB alone (daemon/primary)\tboth (daemon/primary/secondary)\tload\t\n",
		c.size>>20, runs)
	for i, lc := range cases {
		rs := rounds[i]
		a := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyA].mbit })
		bb := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyB].mbit })
		both := med(rs, func(r linksRound) float64 { return r.kw[linksBoth].mbit })
		var bothRuns []string
		for _, r := range rs {
			bothRuns = append(bothRuns, fmt.Sprintf("%.0f", r.kw[linksBoth].mbit))
		}
		eff := both / (a + bb)
		mb := medianRun(rs, linksBoth)
		share := "-"
		if len(mb.delivered) == 2 {
			sum := float64(mb.delivered[0] + mb.delivered[1])
			share = fmt.Sprintf("%.0f / %.0f", 100*float64(mb.delivered[0])/sum, 100*float64(mb.delivered[1])/sum)
		}
		ma, mbB := medianRun(rs, linksOnlyA), medianRun(rs, linksOnlyB)
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.0f\t%s\t%.2f\t>= %.2f\t%s\t%s\t%.2f / %.2f\t%.2f / %.2f\t%.2f / %.2f / %.2f\t%s\t\n",
			lc.name, a, bb, both, strings.Join(bothRuns, " "), eff, lc.target, yesNo(eff >= lc.target), share,
			ma.cpuDaemon, ma.cpuPrimary, mbB.cpuDaemon, mbB.cpuPrimary, mb.cpuDaemon, mb.cpuPrimary, mb.cpuSecondary,
			linksLoadRange(rs))
	}
	w.Flush()
	fmt.Println()

	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "references, same links, median of %d\tcurl A Mbit/s\tcurl A / rate\taria2 both Mbit/s\taria2 / (A+B rate)\tkwikfs A alone / curl A\ttarget\tmet\tkwikfs both / aria2\tCPU s/GiB curl / nginx\taria2c / nginx\tload\t\n", runs)
	for i, lc := range cases {
		rs := rounds[i]
		cu := med(rs, func(r linksRound) float64 { return r.curl.mbit })
		ar := med(rs, func(r linksRound) float64 { return r.aria2.mbit })
		a := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyA].mbit })
		both := med(rs, func(r linksRound) float64 { return r.kw[linksBoth].mbit })
		fmt.Fprintf(w, "%s\t%.0f\t%.3f\t%.0f\t%.3f\t%.2f\t>= 0.90\t%s\t%.2f\t%.2f / %.2f\t%.2f / %.2f\t%s\t\n", lc.name, cu, cu/float64(lc.mbitA),
			ar, ar/float64(lc.mbitA+lc.mbitB), a/cu, yesNo(a/cu >= 0.9), both/ar,
			med(rs, func(r linksRound) float64 { return r.curl.cpuClient }), med(rs, func(r linksRound) float64 { return r.curl.cpuNginx }),
			med(rs, func(r linksRound) float64 { return r.aria2.cpuClient }), med(rs, func(r linksRound) float64 { return r.aria2.cpuNginx }),
			linksLoadRange(rs))
	}
	w.Flush()
	fmt.Println()

	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "kernel view of the median kwikfs run\tMbit/s\tmachine busy %% (softirq)\tcores ours / others\treader CPU s/GiB\tlink bytes / capacity\t10 ms slots < half rate %% A / B\tRTT ms per path\tUDP RcvbufErrors client\tUDP SndbufErrors servers\ttbf drops data / acks\tdaemon rx queue max KiB (drops)\tserver tx queue max KiB\tfetch errors\t\n")
	for i, lc := range cases {
		for _, m := range []linksMode{linksOnlyA, linksOnlyB, linksBoth} {
			r := medianRun(rounds[i], m)
			var rtts []string
			for _, v := range r.rtt {
				rtts = append(rtts, fmt.Sprintf("%.1f", v))
			}
			var starved []string
			for _, v := range r.starved {
				if v < 0 {
					starved = append(starved, "-")
				} else {
					starved = append(starved, fmt.Sprintf("%.0f", 100*v))
				}
			}
			// Capacity of the links the mode uses, over the read's time.
			rate := map[linksMode]int64{linksOnlyA: lc.mbitA, linksOnlyB: lc.mbitB, linksBoth: lc.mbitA + lc.mbitB}[m]
			secs := float64(c.size) * 8 / (r.mbit * 1e6)
			util := float64(r.dataSent) * 8 / (float64(rate) * 1e6 * secs)
			fmt.Fprintf(w, "%s, %s\t%.0f\t%.0f (%.0f)\t%.2f / %.2f\t%.2f\t%.2f\t%s\t%s\t%d\t%d\t%d / %d\t%d (%d)\t%d\t%d\t\n", lc.name, m, r.mbit,
				100*r.busy, 100*r.softirq, r.oursCores, r.othersCores, r.cpuReader, util, strings.Join(starved, " / "), strings.Join(rtts, " / "),
				r.rcvbufErrs, r.sndbufErrs, r.dataDrops, r.ackDrops, r.maxRxQueue>>10, r.sockDrops, r.maxTxQueue>>10, r.fetchErrors)
		}
	}
	w.Flush()
	fmt.Printf("(CPU s/GiB: user+system CPU seconds of the process during the read, per GiB read; a sender's system time includes\n" +
		" veth and tbf softirq work the kernel runs in its context. Machine busy: both cores, /proc/stat; cores ours: daemon, servers\n" +
		" of the read and reader; others: the rest (other processes, kernel threads such as writeback). Link bytes: what the data\n" +
		" direction's tbf sent, over the shaped capacity for the read's time. Load: 1-minute load average before each kwikfs read,\n" +
		" min-max over the case's rounds.)\n")
	fmt.Printf("uptime after: %s\n", uptimeEnd)
}

// linksLoadRange returns the range of the load averages of rs's kwikfs reads.
func linksLoadRange(rs []linksRound) string {
	lo, hi := -1.0, 0.0
	for _, r := range rs {
		for _, k := range r.kw {
			if lo < 0 || k.load < lo {
				lo = k.load
			}
			hi = max(hi, k.load)
		}
	}
	return fmt.Sprintf("%.1f-%.1f", lo, hi)
}

// ensureLinksTools installs iproute2, nginx, curl and aria2 with apt-get
// when a command of theirs is missing (apt-get update once first).
func ensureLinksTools() error {
	var missing []string
	for _, t := range []struct{ cmd, pkg string }{{"ip", "iproute2"}, {"tc", "iproute2"}, {"nginx", "nginx"}, {"curl", "curl"}, {"aria2c", "aria2"}} {
		if _, err := exec.LookPath(t.cmd); err != nil && !slices.Contains(missing, t.pkg) {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "installing %s ...\n", strings.Join(missing, " "))
	for _, args := range [][]string{
		{"-qq", "update"},
		append([]string{"-qq", "-y", "-o", "DPkg::Lock::Timeout=300", "install"}, missing...),
	} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

// linksLab owns the namespaces, the veths and the processes and mounts
// that must not outlive the bench.
type linksLab struct {
	mu     sync.Mutex // guards procs, mounts and down
	procs  map[*exec.Cmd]struct{}
	mounts map[string]struct{}
	down   bool // teardown ran
}

// run runs a command (ip, tc) and returns its error with its output.
func linksCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setup makes the namespaces and the veth pairs, with their addresses.
func (l *linksLab) setup() error {
	for _, e := range []linksEnd{linkA, linkB} {
		for _, args := range [][]string{
			{"netns", "add", e.ns},
			{"link", "add", e.hostDev, "type", "veth", "peer", "name", e.nsDev, "netns", e.ns},
			{"addr", "add", e.hostIP + "/30", "dev", e.hostDev},
			{"link", "set", e.hostDev, "up"},
			{"-n", e.ns, "addr", "add", e.nsIP + "/30", "dev", e.nsDev},
			{"-n", e.ns, "link", "set", e.nsDev, "up"},
			{"-n", e.ns, "link", "set", "lo", "up"}, // for the servers' pprof
		} {
			if err := linksCmd("ip", args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// shape sets tbf at mbitA on both ends of link A and at mbitB on link B
// (see linksTBFLatency for the parameters).
func (l *linksLab) shape(mbitA, mbitB int64) error {
	for _, x := range []struct {
		e    linksEnd
		mbit int64
	}{{linkA, mbitA}, {linkB, mbitB}} {
		tbf := []string{"root", "tbf", "rate", fmt.Sprintf("%dmbit", x.mbit), "burst", strconv.FormatInt(linksBurst(x.mbit), 10), "latency", linksTBFLatency}
		if err := linksCmd("tc", append([]string{"qdisc", "replace", "dev", x.e.hostDev}, tbf...)...); err != nil {
			return err
		}
		if err := linksCmd("tc", append([]string{"-n", x.e.ns, "qdisc", "replace", "dev", x.e.nsDev}, tbf...)...); err != nil {
			return err
		}
	}
	return nil
}

// start starts cmd and tracks it until teardown.
func (l *linksLab) start(cmd *exec.Cmd) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("bench is stopping")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	l.procs[cmd] = struct{}{}
	return nil
}

// startInNS starts the server binary with args in namespace ns and waits
// for its "listening on" line.
func (l *linksLab) startInNS(ns, binary string, args ...string) (*exec.Cmd, error) {
	// ip netns exec execs the command in its own process: the PID is the
	// server's, for /proc/PID/stat.
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, binary}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := l.start(cmd); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening on ") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("no listening line (%q): %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, nil
}

func (l *linksLab) trackMount(m *benchMount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs[m.cmd] = struct{}{}
	l.mounts[m.dir] = struct{}{}
}

func (l *linksLab) untrackMount(m *benchMount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.procs, m.cmd)
	delete(l.mounts, m.dir)
}

// teardown stops the tracked processes (SIGTERM, then SIGKILL after 3 s),
// detaches the tracked mounts and deletes the namespaces and veths. It
// runs once; later calls return at once.
func (l *linksLab) teardown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return
	}
	l.down = true
	for cmd := range l.procs {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		alive := false
		for cmd := range l.procs {
			if cmd.Process.Signal(syscall.Signal(0)) == nil {
				alive = true
			}
		}
		if !alive {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for cmd := range l.procs {
		cmd.Process.Kill()
	}
	for mnt := range l.mounts {
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err := removeLinksLeftovers(""); err != nil {
		fmt.Fprintln(os.Stderr, "kwikbench: remove the links:", err)
	}
}

// teardownOnSignal tears the lab down, removes work and exits 130 on
// SIGINT or SIGTERM; the returned func stops watching.
func (l *linksLab) teardownOnSignal(work string) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "kwikbench: %v: removing the links\n", s)
			l.teardown()
			os.RemoveAll(work)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}

// removeLinksLeftovers removes what an earlier run left: FUSE mounts under
// a kwikbench-links- work dir, processes in the bench's namespaces (by
// PID, as `ip netns pids` lists them), the namespaces and the veths. With
// keep set, it removes the other kwikbench-links- work dirs in the temp
// dir too (an earlier run killed before its deferred removal).
func removeLinksLeftovers(keep string) error {
	if info, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4], "/kwikbench-links-") &&
				(keep == "" || !strings.HasPrefix(f[4], keep+"/")) {
				unix.Unmount(strings.ReplaceAll(f[4], `\040`, " "), unix.MNT_DETACH)
			}
		}
	}
	if keep != "" {
		stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "kwikbench-links-*"))
		for _, dir := range stale {
			if dir != keep {
				os.RemoveAll(dir)
			}
		}
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], linksPrefix) {
			continue
		}
		ns := f[0]
		if pids, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := linksCmd("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	out, err = exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ip link show: %w", err))...)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "7: kwbl-a0@if6: <...> ..."
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, linksPrefix) {
			// Deleting one end of a veth deletes the pair; the pair may
			// already be gone with its namespace.
			if err := linksCmd("ip", "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// linksCounters are the kernel counters sampled around a read.
type linksCounters struct {
	rcvbufRoot, sndbufNS           uint64
	dataDrops, ackDrops, dataBytes uint64
}

// counters reads the UDP counters of the root namespace and of A and B
// (through /proc/PID/net of a process in each: pidA, pidB) and the tbf
// counters of both ends of both links.
func (l *linksLab) counters(pidA, pidB int) linksCounters {
	var c linksCounters
	c.rcvbufRoot = linksUDPCounter("/proc/self/net/snmp", "RcvbufErrors")
	for _, pid := range []int{pidA, pidB} {
		c.sndbufNS += linksUDPCounter(fmt.Sprintf("/proc/%d/net/snmp", pid), "SndbufErrors")
	}
	for _, e := range []linksEnd{linkA, linkB} {
		d, _ := linksTBF("", e.hostDev)
		c.ackDrops += d
		d, sent := linksTBF(e.ns, e.nsDev)
		c.dataDrops += d
		c.dataBytes += sent
	}
	return c
}

// linksUDPCounter returns the Udp: field name of an snmp file, 0 if unreadable.
func linksUDPCounter(path, name string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == name && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// linksTBF returns the drops and bytes sent of the tbf qdisc
// on dev (in namespace ns, "" for the root one); zeros if unreadable.
func linksTBF(ns, dev string) (drops, bytes uint64) {
	args := []string{"-s", "-j", "qdisc", "show", "dev", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("tc", args...).Output()
	if err != nil {
		return 0, 0
	}
	var qs []struct {
		Kind  string `json:"kind"`
		Bytes uint64 `json:"bytes"`
		Drops uint64 `json:"drops"`
	}
	if json.Unmarshal(out, &qs) != nil {
		return 0, 0
	}
	for _, q := range qs {
		if q.Kind == "tbf" {
			return q.Drops, q.Bytes
		}
	}
	return 0, 0
}

// linksProcCPU returns the user+system CPU seconds of each pid (0 for pid 0 or
// an unreadable one), from /proc/PID/stat in clock ticks of 1/100 s (the
// USER_HZ of Linux's user ABI).
func linksProcCPU(pids ...int) []float64 {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		if pid == 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after "(comm) ": state is the first; utime and stime
		// are the 12th and 13th (fields 14 and 15 of proc(5)).
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		s, _ := strconv.ParseUint(f[12], 10, 64)
		out[i] = float64(u+s) / 100
	}
	return out
}

// linksCPUStat is the first line of /proc/stat, in ticks.
type linksCPUStat struct{ total, idle, softirq uint64 }

func linksMachineCPU() linksCPUStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return linksCPUStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var s linksCPUStat
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		s.total += n
		switch i {
		case 3, 4:
			s.idle += n
		case 6:
			s.softirq = n
		}
	}
	return s
}

// since returns the busy and softirq fractions between before and s.
func (s linksCPUStat) since(before linksCPUStat) (busy, softirq float64) {
	total := float64(s.total - before.total)
	if total == 0 {
		return 0, 0
	}
	return 1 - float64(s.idle-before.idle)/total, float64(s.softirq-before.softirq) / total
}

func linksLoad() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func linksUptime() string {
	out, err := exec.Command("uptime").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// linksSampler samples, every 10 ms, the bytes each link delivered to the
// root namespace (the root-side veth's rx_bytes: what passed the data
// direction's tbf) and, every 50 ms, the receive queues of the daemon's
// UDP sockets and the send queues of the servers' ones.
type linksSampler struct {
	done, finished chan struct{}
	// Written by the sampling goroutine, read after finished is closed.
	maxRx, maxTx      uint64
	dropsAt, dropsEnd uint64
	slots, starved    [2]int // 10 ms slots of each link, and those below half its rate
}

// linksStartSampler starts sampling; rates are the links' rates in bit/s
// (0: a link the read does not use).
func linksStartSampler(rates [2]float64, daemonPID int, serverPIDs ...int) *linksSampler {
	s := &linksSampler{done: make(chan struct{}), finished: make(chan struct{})}
	s.dropsAt = linksSockets(daemonPID).drops
	devs := [2]string{linkA.hostDev, linkB.hostDev}
	var last [2]uint64
	for i, d := range devs {
		last[i] = linksRxBytes(d)
	}
	go func() {
		defer close(s.finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		lastAt := time.Now()
		for tick := 0; ; tick++ {
			if tick%5 == 0 {
				d := linksSockets(daemonPID)
				s.maxRx = max(s.maxRx, d.maxRx)
				for _, pid := range serverPIDs {
					if pid != 0 {
						s.maxTx = max(s.maxTx, linksSockets(pid).maxTx)
					}
				}
				s.dropsEnd = d.drops
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			now := time.Now()
			secs := now.Sub(lastAt).Seconds()
			lastAt = now
			for i, d := range devs {
				b := linksRxBytes(d)
				if rates[i] > 0 {
					s.slots[i]++
					if float64(b-last[i])*8/secs < rates[i]/2 {
						s.starved[i]++
					}
				}
				last[i] = b
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the daemon's largest receive queue,
// the servers' largest send queue, the daemon's socket drops meanwhile and,
// per link, the fraction of 10 ms slots in which it carried less than half
// its rate (-1 for a link not used).
func (s *linksSampler) stop() (maxRx, maxTx, drops uint64, starved [2]float64) {
	close(s.done)
	<-s.finished
	for i := range starved {
		starved[i] = -1
		if s.slots[i] > 0 {
			starved[i] = float64(s.starved[i]) / float64(s.slots[i])
		}
	}
	return s.maxRx, s.maxTx, s.dropsEnd - s.dropsAt, starved
}

// linksRxBytes returns the bytes dev received, 0 if unreadable.
func linksRxBytes(dev string) uint64 {
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/rx_bytes")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

type linksSockSum struct{ maxRx, maxTx, drops uint64 }

// linksSockets reads the UDP sockets of pid (the socket inodes of its open
// files, found in /proc/PID/net/udp and udp6, which show the process's
// namespace): the largest receive and send queue and the sum of the drops.
func linksSockets(pid int) linksSockSum {
	var s linksSockSum
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(t, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		// sl local rem st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ref pointer drops
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 || !inodes[f[9]] {
				continue
			}
			txS, rxS, _ := strings.Cut(f[4], ":")
			tx, _ := strconv.ParseUint(txS, 16, 64)
			rx, _ := strconv.ParseUint(rxS, 16, 64)
			drops, _ := strconv.ParseUint(f[12], 10, 64)
			s.maxRx, s.maxTx = max(s.maxRx, rx), max(s.maxTx, tx)
			s.drops += drops
		}
	}
	return s
}

// linksProfiler collects the profiles and snapshots of one read.
type linksProfiler struct {
	wg        sync.WaitGroup
	stopTrace chan struct{} // closed by wait: ends the status trace
	mu        sync.Mutex    // guards errs
	errs      []error
}

func (p *linksProfiler) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// linksStartProfiles starts, in dir: 5 s CPU profiles of the daemon (from its
// control socket) and of each server (from its --pprof address, fetched
// with curl inside the server's namespace) and, 0.5 s later, goroutine
// dumps of the three, `ss -uamn` of the three namespaces and the daemon's
// status. The read starts right after.
func linksStartProfiles(dir string, m *benchMount, servers []*linksServer) *linksProfiler {
	p := &linksProfiler{stopTrace: make(chan struct{})}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.fail(err)
		return p
	}
	sock, err := daemon.FindMount(m.dir)
	if err != nil {
		p.fail(err)
		return p
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock.Socket)
	}}}
	daemonGet := func(path, file string) {
		defer p.wg.Done()
		resp, err := hc.Get("http://kwikfs" + path)
		if err != nil {
			p.fail(fmt.Errorf("daemon %s: %w", path, err))
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			p.fail(fmt.Errorf("daemon %s: %s", path, resp.Status))
			return
		}
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			p.fail(err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			p.fail(err)
		}
	}
	// run runs a command (in a namespace when ns is set) into file.
	run := func(ns, file string, args ...string) {
		defer p.wg.Done()
		if ns != "" {
			args = append([]string{"ip", "netns", "exec", ns}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			p.fail(fmt.Errorf("%s: %w", strings.Join(args, " "), err))
		}
		if err := os.WriteFile(filepath.Join(dir, file), out, 0o644); err != nil {
			p.fail(err)
		}
	}
	name := func(s *linksServer) string { return strings.Fields(s.label)[0] } // primary, secondary
	p.wg.Add(1 + len(servers))
	go daemonGet("/debug/pprof/profile?seconds=5", "daemon.pprof")
	for _, s := range servers {
		go run(s.ns, name(s)+".pprof", "curl", "-sSf", "--max-time", "30", "http://"+s.pprof+"/debug/pprof/profile?seconds=5")
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		time.Sleep(500 * time.Millisecond)
		p.wg.Add(4 + 2*len(servers))
		go daemonGet("/debug/pprof/goroutine?debug=1", "daemon-goroutines.txt")
		go daemonGet("/status", "status-midread.json")
		go run("", "ss-root.txt", "ss", "-uamni")
		for _, s := range servers {
			go run(s.ns, name(s)+"-goroutines.txt", "curl", "-sSf", "--max-time", "30", "http://"+s.pprof+"/debug/pprof/goroutine?debug=1")
			go run(s.ns, "ss-"+s.ns+".txt", "ss", "-uamni")
		}
		go run("", "tc-midread.txt", "sh", "-c", fmt.Sprintf("tc -s qdisc show dev %s; tc -s qdisc show dev %s; tc -n %s -s qdisc show dev %s; tc -n %s -s qdisc show dev %s",
			linkA.hostDev, linkB.hostDev, linkA.ns, linkA.nsDev, linkB.ns, linkB.nsDev))
	}()
	p.wg.Add(1)
	go p.trace(filepath.Join(dir, "trace.tsv"), hc)
	// Give the profile requests a moment to reach the processes.
	time.Sleep(100 * time.Millisecond)
	return p
}

// trace writes to file, every 100 ms until wait, what each link carried
// in the data direction (Mbit/s over the interval) and, per path, the bytes
// delivered, the bytes in flight (assigned by the primary, not yet
// reported delivered) and the RTT, from the daemon's status (hc).
func (p *linksProfiler) trace(file string, hc *http.Client) {
	defer p.wg.Done()
	f, err := os.Create(file)
	if err != nil {
		p.fail(err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "ms\tA Mbit/s\tB Mbit/s\tper path: delivered MiB, in flight MiB, RTT ms\n")
	start, last := time.Now(), time.Now()
	lastA, lastB := linksRxBytes(linkA.hostDev), linksRxBytes(linkB.hostDev)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stopTrace:
			return
		case <-t.C:
		}
		now := time.Now()
		a, b := linksRxBytes(linkA.hostDev), linksRxBytes(linkB.hostDev)
		secs := now.Sub(last).Seconds()
		line := fmt.Sprintf("%d\t%.0f\t%.0f", now.Sub(start).Milliseconds(), float64(a-lastA)*8/secs/1e6, float64(b-lastB)*8/secs/1e6)
		last, lastA, lastB = now, a, b
		var st daemon.Status
		if resp, err := hc.Get("http://kwikfs/status"); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				p.fail(fmt.Errorf("status: %w", err))
			}
		}
		for _, ps := range st.Paths {
			inFlight := uint64(0)
			if ps.InFlightBytes != nil {
				inFlight = *ps.InFlightBytes
			}
			line += fmt.Sprintf("\t%.1f, %.1f, %.1f", float64(ps.BytesDelivered)/(1<<20), float64(inFlight)/(1<<20), ps.RTTMillis)
		}
		fmt.Fprintln(f, line)
	}
}

// wait waits for the profiles (5 s from their start) and returns their
// errors.
func (p *linksProfiler) wait() error {
	close(p.stopTrace)
	p.wg.Wait()
	return errors.Join(p.errs...)
}
