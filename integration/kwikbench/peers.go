package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/daemon"
)

// peersConfig says what the loopback comparison (--peers) measures.
type peersConfig struct {
	bin        string
	size       int64  // the file read
	runs       int    // rounds; medians are reported
	profileDir string // where --peers-profile saves CPU profiles; "" for none
}

// peersReadBuf is the read(2) size of the reader: 1 MiB, as readFile's.
const peersReadBuf = 1 << 20

// The rows of the throughput table, in print order.
const (
	rowDisk      = "the file on the servers' disk, read directly"
	rowOnePath   = "kwikfs, 1 path (kwik-primary)"
	rowThreePath = "kwikfs, 3 paths (primary + 2 secondaries)"
	rowSSHFS     = "sshfs (aes128-gcm, max_conns=4)"
	rowRclone    = "rclone mount :http: of nginx (--vfs-cache-mode off)"
	rowPageCache = "kwikfs re-read, same mount (page cache)"
	rowStore     = "kwikfs re-read after remount (store)"
	rowManifest  = "kwik-primary: manifest on first open (hashes the file)"
)

// storeTargetMiB is the target of the re-read from the store, MiB/s.
const storeTargetMiB = 600

// peerTargets: kwikfs (one path) / peer must reach these.
var peerTargets = map[string]float64{rowSSHFS: 1.0, rowRclone: 0.8}

// runPeers prints the loopback comparison: a cold sequential read
// (peersReadBuf reads, in a child process) of a --peers-size file through
// kwikfs with one path (a kwik-primary alone) and three (a primary and two
// kwik-secondaries), sshfs (an sshd the bench starts) and rclone mount of
// an nginx HTTP export, all on 127.0.0.1 and reading the same file, with the
// page cache dropped before each read and fresh mounts; also kwikfs's
// re-reads from the page cache and, after a remount, from its store. Each
// round takes every read in turn; medians of --peers-runs rounds are
// reported. The second table is the CPU time (utime+stime from
// /proc/PID/stat) each process spent per GiB delivered to the reader, and
// the primary's for computing the file's manifest on its first open, which
// the cold reads do not include (a warm-up open computes it first).
func runPeers(c peersConfig) error {
	if err := peersTools(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kwikbench-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	e := &peersEnv{c: c, work: work, tree: filepath.Join(work, "tree")}
	e.file = filepath.Join(e.tree, "big.bin")
	fmt.Fprintf(os.Stderr, "writing a %d MiB file ...\n", c.size>>20)
	if err := writeSeededFile(e.file, c.size, 11); err != nil {
		return err
	}
	if e.certs, err = writeCerts(work); err != nil {
		return err
	}
	loadStart := loadAvg()

	ssh, err := startSSHD(work)
	if err != nil {
		return fmt.Errorf("sshd: %w", err)
	}
	defer ssh.stop()
	web, err := startNginx(work, e.tree)
	if err != nil {
		return fmt.Errorf("nginx: %w", err)
	}
	defer web.stop()

	for i := range max(c.runs, 1) {
		steps := []struct {
			name string
			f    func() error
		}{
			{"the file on disk", e.disk},
			{"kwikfs, 1 path", e.kwikOnePath},
			{"kwikfs, 3 paths", e.kwikThreePaths},
			{"sshfs", func() error { return e.sshfs(ssh) }},
			{"rclone", func() error { return e.rclone(web) }},
		}
		for _, s := range steps {
			fmt.Fprintf(os.Stderr, "round %d: %s (load %s) ...\n", i+1, s.name, loadAvg())
			if err := s.f(); err != nil {
				return fmt.Errorf("round %d, %s: %w", i+1, s.name, err)
			}
		}
	}
	if c.profileDir != "" {
		fmt.Fprintln(os.Stderr, "profiled cold read, 1 path ...")
		if err := e.profileRun(); err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
	}
	return e.print(loadStart, loadAvg())
}

// peersTools checks that the peers' programs are installed.
func peersTools() error {
	var missing []string
	for _, t := range []string{"sshfs", "ssh-keygen", "/usr/sbin/sshd", "rclone", "nginx", "fusermount3"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run make bench-peers, which installs sshfs, openssh-server, rclone and nginx", strings.Join(missing, ", "))
	}
	return nil
}

// peersEnv holds what the rounds share and what they measured.
type peersEnv struct {
	c                       peersConfig
	work, tree, file, certs string
	n                       int // caches and mountpoints made so far
	// tput: MiB/s by throughput row; cpu: CPU seconds per GiB by
	// "set-up: process" row; openSecs: wall time of the primary's first
	// open; shares: for each 3-path read, each path's share of the bytes
	// delivered, in path order.
	tput, cpu results
	openSecs  []float64
	// storeNotes: for each store re-read, what it fetched from the
	// network and the corrupt chunks it found (none of either expected).
	storeNotes []string
	shares     [][]pathShare
	profiled   [2]float64 // MiB/s of the profiled cold read and store re-read
}

// pathShare is a path's share of the bytes delivered first (Paths[].
// BytesDelivered of the mount's status).
type pathShare struct {
	id     int // 0: the primary
	remote string
	frac   float64
}

// results keeps the figures of each row, in the order rows first appear.
type results struct {
	order []string
	vals  map[string][]float64
}

func (r *results) add(name string, v float64) {
	if r.vals == nil {
		r.vals = map[string][]float64{}
	}
	if _, ok := r.vals[name]; !ok {
		r.order = append(r.order, name)
	}
	r.vals[name] = append(r.vals[name], v)
}

func (r *results) median(name string) float64 { return median(r.vals[name]) }

func (r *results) runs(name, format string) string {
	var s []string
	for _, v := range r.vals[name] {
		s = append(s, fmt.Sprintf(format, v))
	}
	return strings.Join(s, " ")
}

// cachePath returns a new, not yet existing, cache directory under work.
func (e *peersEnv) cachePath() string {
	e.n++
	return filepath.Join(e.work, fmt.Sprintf("cache-%d", e.n))
}

// disk reads the file straight from the disk the servers read it from,
// page cache dropped: the ceiling of every cold read. (On a virtual
// machine the host may cache the disk, so it varies.)
func (e *peersEnv) disk() error {
	r, err := e.coldCat(e.tree, nil)
	if err != nil {
		return err
	}
	e.record(rowDisk, "disk", r)
	return nil
}

// kwikOnePath starts a fresh kwik-primary and measures its manifest on the
// first open, a cold read, a re-read on the same mount and, after a
// remount on the same cache, a re-read from the store.
func (e *peersEnv) kwikOnePath() error {
	primary, err := e.startServer("kwik-primary", "")
	if err != nil {
		return err
	}
	defer primary.stop()
	if err := e.warmUp(primary, true); err != nil {
		return err
	}
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(primary.addr, cache)
	if err != nil {
		return err
	}
	r, err := e.coldCat(m.dir, []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}, {"kwik-primary", primary.pid}})
	if err != nil {
		m.close()
		return err
	}
	e.record(rowOnePath, "kwikfs 1 path", r)
	again, _, err := readChild(filepath.Join(m.dir, "big.bin"), peersReadBuf, e.c.size)
	m.close()
	if err != nil {
		return fmt.Errorf("page-cache re-read: %w", err)
	}
	e.tput.add(rowPageCache, again)

	if m, err = e.mount(primary.addr, cache); err != nil {
		return err
	}
	defer m.close()
	r, err = e.coldCat(m.dir, []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}})
	if err != nil {
		return fmt.Errorf("store re-read: %w", err)
	}
	e.record(rowStore, "kwikfs store re-read", r)
	st, err := m.ctl.Status(context.Background())
	if err != nil {
		return err
	}
	e.storeNotes = append(e.storeNotes, fmt.Sprintf("%.0f MiB fetched from the primary, %d stored chunks found corrupt",
		float64(st.Client.DataBytes)/(1<<20), st.Store.Corrupt))
	return nil
}

// kwikThreePaths starts two kwik-secondaries and a fresh primary naming
// them, computes the manifest, and measures a cold read through a mount
// with the three paths up.
func (e *peersEnv) kwikThreePaths() error {
	var secs []*kwikServer
	defer func() {
		for _, s := range secs {
			s.stop()
		}
	}()
	var args []string
	for range 2 {
		port, err := freeUDPPort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s, err := e.startServer("kwik-secondary", addr, "--advertise", addr)
		if err != nil {
			return err
		}
		secs = append(secs, s)
		args = append(args, "--secondary", addr)
	}
	primary, err := e.startServer("kwik-primary", "", args...)
	if err != nil {
		return err
	}
	defer primary.stop()
	if err := e.warmUp(primary, false); err != nil {
		return err
	}
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(primary.addr, cache)
	if err != nil {
		return err
	}
	defer m.close()
	if err := waitPathsUp(m, 3); err != nil {
		return err
	}
	procs := []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}, {"kwik-primary", primary.pid}}
	for i, s := range secs {
		procs = append(procs, proc{fmt.Sprintf("kwik-secondary %d", i+1), s.pid})
	}
	r, err := e.coldCat(m.dir, procs)
	if err != nil {
		return err
	}
	e.record(rowThreePath, "kwikfs 3 paths", r)
	st, err := m.ctl.Status(context.Background())
	if err != nil {
		return err
	}
	var total uint64
	for _, p := range st.Paths {
		total += p.BytesDelivered
	}
	var shares []pathShare
	for _, p := range st.Paths {
		shares = append(shares, pathShare{p.ID, p.Remote, float64(p.BytesDelivered) / float64(max(total, 1))})
	}
	e.shares = append(e.shares, shares)
	return nil
}

// waitPathsUp waits (up to 10 s) until want paths of m are up: the
// session and its secondary paths come up on the mount's first request
// (peersEnv.mount's stat).
func waitPathsUp(m *benchMount, want int) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := m.ctl.Status(context.Background())
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
			return fmt.Errorf("%d of %d paths up after 10s", up, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warmUp makes primary compute the file's manifest: it mounts a throw-away
// cache, drops the page cache, opens the file (kwikfs's Open fetches the
// manifest) and reads a byte. With record set, the primary's CPU time and
// the wall time of the open are recorded.
func (e *peersEnv) warmUp(primary *kwikServer, record bool) error {
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(primary.addr, cache)
	if err != nil {
		return err
	}
	defer m.close()
	if err := dropCaches(); err != nil {
		return err
	}
	before, err := cpuOf([]proc{{"", primary.pid}})
	if err != nil {
		return err
	}
	start := time.Now()
	f, err := os.Open(filepath.Join(m.dir, "big.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	open := time.Since(start)
	after, err := cpuOf([]proc{{"", primary.pid}})
	if err != nil {
		return err
	}
	if _, err := f.Read(make([]byte, 1)); err != nil {
		return err
	}
	if record {
		e.cpu.add(rowManifest, (after[0]-before[0]).Seconds()/gib(e.c.size))
		e.openSecs = append(e.openSecs, open.Seconds())
	}
	return nil
}

// mount starts `kwikfs mount` of addr on cache and stats the file (the
// session comes up on the first request).
func (e *peersEnv) mount(addr, cache string) (*benchMount, error) {
	m, err := startMount(e.c.bin, e.certs, e.work, addr, cache, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(m.dir, "big.bin")); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// record adds a read's MiB/s to row and its CPU figures to the CPU rows
// "setup: process".
func (e *peersEnv) record(row, setup string, r peerRead) {
	e.tput.add(row, r.mibps)
	var all float64
	for _, p := range r.cpu {
		e.cpu.add(setup+": "+p.name, p.perGiB)
		all += p.perGiB
	}
	if len(r.cpu) > 1 {
		e.cpu.add(setup+": all", all)
	}
}

// sshfs mounts the tree with sshfs (as root over ssh to the bench's sshd,
// AES-128-GCM, up to 4 connections, read-only) and reads the file.
func (e *peersEnv) sshfs(s *sshd) error {
	mnt, err := os.MkdirTemp(e.work, "sshfs-")
	if err != nil {
		return err
	}
	cmd := exec.Command("sshfs", "-f", "-F", s.clientConfig,
		"-o", "ro,Ciphers=aes128-gcm@openssh.com,max_conns=4", "127.0.0.1:"+e.tree, mnt)
	// sshfs runs ssh in a grandchild; its own process group keeps them
	// together for the CPU figures.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stop, err := startFUSE(cmd, mnt, "big.bin")
	if err != nil {
		return fmt.Errorf("sshfs: %w", err)
	}
	defer stop()
	r, err := e.coldCat(mnt, []proc{{"sshfs + ssh", cmd.Process.Pid}, {"sshd + sftp-server", s.cmd.Process.Pid}})
	if err != nil {
		return err
	}
	e.record(rowSSHFS, "sshfs", r)
	return nil
}

// rclone mounts the nginx export with rclone's HTTP backend, as a user
// would: read-only, no VFS cache (--vfs-cache-mode off, the default), the
// other settings at their defaults (--buffer-size 16M, chunked reads
// from 128 MiB), and reads the file.
func (e *peersEnv) rclone(web *nginx) error {
	mnt, err := os.MkdirTemp(e.work, "rclone-")
	if err != nil {
		return err
	}
	conf := filepath.Join(e.work, "rclone.conf") // empty: the remote is on the command line
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		return err
	}
	cmd := exec.Command("rclone", "mount", ":http:", mnt, "--http-url", "http://"+web.addr+"/",
		"--read-only", "--vfs-cache-mode", "off", "--config", conf,
		"--cache-dir", filepath.Join(e.work, "rclone-cache"), "--log-level", "ERROR")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stop, err := startFUSE(cmd, mnt, "big.bin")
	if err != nil {
		return fmt.Errorf("rclone: %w", err)
	}
	defer stop()
	r, err := e.coldCat(mnt, []proc{{"rclone", cmd.Process.Pid}, {"nginx", web.cmd.Process.Pid}})
	if err != nil {
		return err
	}
	e.record(rowRclone, "rclone", r)
	return nil
}

// peerRead is what one read measured.
type peerRead struct {
	mibps float64
	cpu   []procCPU // the processes', then the reader's
}

type procCPU struct {
	name   string
	perGiB float64 // CPU seconds per GiB read
}

// coldCat drops the page cache and reads big.bin in dir to the end in a
// child process, returning its MiB/s and the CPU time per GiB of procs and
// of the reader.
func (e *peersEnv) coldCat(dir string, procs []proc) (peerRead, error) {
	if err := dropCaches(); err != nil {
		return peerRead{}, err
	}
	before, err := cpuOf(procs)
	if err != nil {
		return peerRead{}, err
	}
	mibps, reader, err := readChild(filepath.Join(dir, "big.bin"), peersReadBuf, e.c.size)
	if err != nil {
		return peerRead{}, err
	}
	after, err := cpuOf(procs)
	if err != nil {
		return peerRead{}, err
	}
	r := peerRead{mibps: mibps}
	for i, p := range procs {
		r.cpu = append(r.cpu, procCPU{p.name, (after[i] - before[i]).Seconds() / gib(e.c.size)})
	}
	r.cpu = append(r.cpu, procCPU{"reader", reader.Seconds() / gib(e.c.size)})
	return r, nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// profileRun measures one more cold read through one path, not counted in
// the tables, while saving 5-second CPU profiles of the daemon (from its
// control socket) and of a kwik-primary started with --pprof to
// --peers-profile as daemon.pprof and primary.pprof; then, after a
// remount on the same cache, one of the daemon during a re-read from the
// store, daemon-store.pprof.
func (e *peersEnv) profileRun() error {
	if err := os.MkdirAll(e.c.profileDir, 0o755); err != nil {
		return err
	}
	port, err := freeTCPPort()
	if err != nil {
		return err
	}
	pprofAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	primary, err := e.startServer("kwik-primary", "", "--pprof", pprofAddr)
	if err != nil {
		return err
	}
	defer primary.stop()
	if err := e.warmUp(primary, false); err != nil {
		return err
	}
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	primaryProfile := map[string]string{"primary.pprof": "http://" + pprofAddr}
	if e.profiled[0], err = e.profiledCat(primary.addr, cache, "daemon.pprof", primaryProfile); err != nil {
		return err
	}
	e.profiled[1], err = e.profiledCat(primary.addr, cache, "daemon-store.pprof", nil)
	return err
}

// profiledCat mounts addr on cache, drops the page cache and reads the
// file while saving a 5-second CPU profile of the daemon to daemonFile
// and, for each file name in others, one from the pprof server at its
// URL; it returns the read's MiB/s.
func (e *peersEnv) profiledCat(addr, cache, daemonFile string, others map[string]string) (float64, error) {
	m, err := e.mount(addr, cache)
	if err != nil {
		return 0, err
	}
	defer m.close()
	found, err := daemon.FindMount(m.dir)
	if err != nil {
		return 0, err
	}
	if err := dropCaches(); err != nil {
		return 0, err
	}
	daemonClient := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", found.Socket)
		},
	}}
	defer daemonClient.CloseIdleConnections()
	const query = "/debug/pprof/profile?seconds=5"
	var g errgroup.Group
	g.Go(func() error {
		return saveProfile(daemonClient, "http://kwikfs"+query, filepath.Join(e.c.profileDir, daemonFile))
	})
	for name, url := range others {
		g.Go(func() error {
			return saveProfile(http.DefaultClient, url+query, filepath.Join(e.c.profileDir, name))
		})
	}
	time.Sleep(200 * time.Millisecond) // the profiles are running
	mibps, _, readErr := readChild(filepath.Join(m.dir, "big.bin"), peersReadBuf, e.c.size)
	if err := errors.Join(g.Wait(), readErr); err != nil {
		return 0, err
	}
	return mibps, nil
}

// saveProfile GETs url with hc and writes the body to path.
func saveProfile(hc *http.Client, url, path string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// print writes the throughput and CPU tables.
func (e *peersEnv) print(loadStart, loadEnd string) error {
	fmt.Printf("loopback, cold cat of a %d MiB file (%d KiB reads, page cache dropped first, fresh mounts), median of %d rounds; load average (1/5/15 min) at start %s, at end %s\n",
		e.c.size>>20, peersReadBuf>>10, max(e.c.runs, 1), loadStart, loadEnd)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "read\tmedian MiB/s\truns\tthis / kwikfs\tkwikfs / this\ttarget\tmet\t\n")
	kwik := e.tput.median(rowOnePath)
	for _, row := range []string{rowDisk, rowOnePath, rowThreePath, rowSSHFS, rowRclone, rowPageCache, rowStore} {
		v := e.tput.median(row)
		ratio, inverse, target, met := "", "", "", ""
		if row != rowOnePath {
			ratio, inverse = fmt.Sprintf("%.2f", v/kwik), fmt.Sprintf("%.2f", kwik/v)
		}
		if t, ok := peerTargets[row]; ok {
			target, met = fmt.Sprintf("kwikfs / this >= %.2f", t), yesNo(kwik/v >= t)
		}
		if row == rowStore {
			target, met = fmt.Sprintf(">= %d MiB/s", storeTargetMiB), yesNo(v >= storeTargetMiB)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", row, v, e.tput.runs(row, "%.0f"), ratio, inverse, target, met)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "CPU s per GiB read (utime+stime)\tmedian\truns\t\n")
	for _, row := range e.cpu.order {
		fmt.Fprintf(w, "%s\t%.2f\t%s\t\n", row, e.cpu.median(row), e.cpu.runs(row, "%.2f"))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println("(on loopback the kernel delivers a datagram or segment to the receiving socket in the sender's system call, so a sender's CPU includes part of its receiver's network stack; reader: the child process's rusage; others: utime+stime deltas of the process, its process group and their descendants)")
	fmt.Printf("(manifest: CPU of the primary during the first open of the file on a fresh primary, page cache dropped, per GiB of file; the open took %s s)\n",
		joinFloats(e.openSecs, "%.2f"))
	fmt.Printf("(store re-read, by round: %s)\n", strings.Join(e.storeNotes, "; "))
	for i, shares := range e.shares {
		var s []string
		for _, p := range shares {
			role := "secondary"
			if p.id == 0 {
				role = "primary"
			}
			s = append(s, fmt.Sprintf("path %d (%s, %s) %.1f%%", p.id, role, p.remote, 100*p.frac))
		}
		fmt.Printf("(kwikfs 3 paths, round %d: share of the bytes each path delivered first: %s)\n", i+1, strings.Join(s, ", "))
	}
	if e.c.profileDir != "" {
		fmt.Printf("(profiles in %s: daemon.pprof and primary.pprof of a further 1-path cold read at %.0f MiB/s, daemon-store.pprof of its re-read from the store at %.0f MiB/s; go tool pprof -top -cum FILE)\n",
			e.c.profileDir, e.profiled[0], e.profiled[1])
	}
	return nil
}

func joinFloats(v []float64, format string) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf(format, x))
	}
	return strings.Join(s, " ")
}

// kwikServer is a running kwik-primary or kwik-secondary.
type kwikServer struct {
	addr string // as clients dial it
	pid  int
	stop func()
}

// startServer starts bin/name serving the tree with the bench's
// certificates and extra flags, listening on listen (a free port of
// 127.0.0.1 when ""), and waits for its "listening on" line.
func (e *peersEnv) startServer(name, listen string, extra ...string) (*kwikServer, error) {
	if listen == "" {
		port, err := freeUDPPort()
		if err != nil {
			return nil, err
		}
		listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	args := append([]string{"--root", e.tree, "--listen", listen,
		"--cert", filepath.Join(e.certs, certgen.CertFile), "--key", filepath.Join(e.certs, certgen.KeyFile),
		"--cluster-key", filepath.Join(e.certs, certgen.ClusterKeyFile), "--log-level", "warn"}, extra...)
	cmd := exec.Command(filepath.Join(e.c.bin, name), args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		stop()
		return nil, fmt.Errorf("%s: no listening line (%q): %v", name, line, err)
	}
	go io.Copy(io.Discard, rd)
	return &kwikServer{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}

// sshd is an sshd the bench started on a free port of 127.0.0.1, with its
// own host key, authorized_keys and configuration under work/ssh, and the
// matching ssh client configuration (the bench's key, the host key pinned):
// nothing of the system's ssh configuration is read or changed.
type sshd struct {
	cmd          *exec.Cmd
	clientConfig string
}

func startSSHD(work string) (*sshd, error) {
	dir := filepath.Join(work, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "id_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kwikbench", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return nil, err
	}
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	serverConfig := filepath.Join(dir, "sshd_config")
	clientConfig := filepath.Join(dir, "ssh_config")
	files := map[string]string{
		filepath.Join(dir, "authorized_keys"): string(clientPub),
		filepath.Join(dir, "known_hosts"):     fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub),
		serverConfig: fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
`, port, hostKey, filepath.Join(dir, "authorized_keys")),
		clientConfig: fmt.Sprintf(`Host 127.0.0.1
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
`, port, clientKey, filepath.Join(dir, "known_hosts")),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	// sshd refuses to start without its privilege separation directory,
	// which the Debian package makes only when its service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", serverConfig)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sshd{cmd: cmd, clientConfig: clientConfig}
	if err := waitSSH(net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *sshd) stop() { stopProcess(s.cmd, syscall.SIGTERM) }

// nginx is an nginx the bench started (daemon off) on a free port of
// 127.0.0.1, exporting the tree with its configuration under work/nginx.
type nginx struct {
	cmd  *exec.Cmd
	addr string
}

func startNginx(work, tree string) (*nginx, error) {
	dir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// user root: the workers must read the tree under the bench's 0700
	// work directory.
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s;
    root %[3]s;
    autoindex on;
  }
}
`, dir, addr, tree)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("nginx", "-e", "stderr", "-p", dir, "-c", confPath)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &nginx{cmd: cmd, addr: addr}
	if err := waitTCP(addr); err != nil {
		n.stop()
		return nil, err
	}
	return n, nil
}

func (n *nginx) stop() { stopProcess(n.cmd, syscall.SIGTERM) }

// startFUSE starts cmd, a FUSE file system serving mnt in the foreground,
// and waits (up to 20 s) until mnt is mounted and has file. The returned
// func stops cmd, which unmounts, and removes mnt.
func startFUSE(cmd *exec.Cmd, mnt, file string) (stop func(), err error) {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		// An unmount ends the file system as a user's umount does
		// (rclone logs an error on SIGTERM); the signal is the fallback.
		var sig syscall.Signal
		if err := unix.Unmount(mnt, 0); err != nil {
			sig = syscall.SIGTERM
		}
		stopProcess(cmd, sig)
		unix.Unmount(mnt, unix.MNT_DETACH)
		os.Remove(mnt)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := fuseDevice(mnt); err == nil {
			if _, err := os.Stat(filepath.Join(mnt, file)); err == nil {
				return stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s not mounted with %s after 20s", mnt, file)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopProcess sends cmd sig, unless 0, and waits for it to exit, killing
// it after 10 s.
func stopProcess(cmd *exec.Cmd, sig syscall.Signal) {
	if sig != 0 {
		cmd.Process.Signal(sig)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// waitTCP waits (up to 10 s) until addr accepts connections.
func waitTCP(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSSH waits (up to 10 s) until an SSH server answers at addr, and
// says a version (sshd logs a connection closed before it as an error).
func waitSSH(addr string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			var banner string
			if banner, err = bufio.NewReader(c).ReadString('\n'); err == nil && !strings.HasPrefix(banner, "SSH-") {
				err = fmt.Errorf("not an SSH server at %s: %q", addr, banner)
			}
			if err == nil {
				_, err = io.WriteString(c, "SSH-2.0-kwikbench\r\n")
			}
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeTCPPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// dropCaches writes dirty pages back and drops the page cache, dentries
// and inodes (sync; echo 3 > /proc/sys/vm/drop_caches).
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop page cache (needs root): %w", err)
	}
	return nil
}

// loadAvg returns the 1, 5 and 15 minute load averages, as uptime prints
// them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// readChild reads path to the end in a child process (`kwikbench
// read-file`, see readFileChild) with bufSize read(2) calls, checks it got
// want bytes, and returns MiB/s and the child's CPU time (its rusage).
func readChild(path string, bufSize int, want int64) (mibps float64, cpu time.Duration, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "read-file", path, strconv.Itoa(bufSize), strconv.FormatInt(want, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	mbps, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return mbps * 1e6 / (1 << 20), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// readFileChild is `kwikbench read-file PATH BUFSIZE WANT`: it reads PATH
// with readLoop and prints its MB/s.
func readFileChild(args []string) error {
	bufSize, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	want, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil {
		return err
	}
	mbps, err := readLoop(args[0], bufSize, want)
	if err != nil {
		return err
	}
	fmt.Println(mbps)
	return nil
}

// proc names a process whose CPU time is measured, with its process
// group and descendants (see cpuOf).
type proc struct {
	name string
	pid  int
}

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture (sysconf(_SC_CLK_TCK) would need cgo).
const clkTck = 100

// cpuOf returns, for each of procs, the CPU time (utime+stime, all
// threads) used so far by the process, the members of its process group
// and their descendants, as /proc shows them now: sshfs's ssh and sshd's
// per-connection processes count for them. Processes that exited are not
// counted.
func cpuOf(procs []proc) ([]time.Duration, error) {
	type stat struct {
		ppid, pgrp int
		ticks      int64
	}
	all := map[int]stat{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp session tty tpgid flags minflt
		// cminflt majflt cmajflt utime stime ...; comm may hold spaces.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		all[pid] = stat{ppid, pgrp, utime + stime}
	}
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		in := map[int]bool{p.pid: true}
		for pid, s := range all {
			if s.pgrp == p.pid {
				in[pid] = true
			}
		}
		for grown := true; grown; {
			grown = false
			for pid, s := range all {
				if !in[pid] && in[s.ppid] {
					in[pid], grown = true, true
				}
			}
		}
		if _, ok := all[p.pid]; !ok {
			return nil, fmt.Errorf("process %d (%s) is gone", p.pid, p.name)
		}
		var ticks int64
		for pid := range in {
			ticks += all[pid].ticks
		}
		out[i] = time.Duration(ticks) * time.Second / clkTck
	}
	return out, nil
}
