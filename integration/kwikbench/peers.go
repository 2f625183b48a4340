package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
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
	rowFallback  = "kwikfs, 3 paths, kwik-primary --serve-data fallback"
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
	e := &peersEnv{c: c, loopEnv: loopEnv{bin: c.bin, work: work, root: filepath.Join(work, "tree"), probe: "big.bin"}}
	e.file = filepath.Join(e.root, "big.bin")
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
	web, err := startPeersNginx(work, e.root)
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
			{"kwikfs, 3 paths", func() error { return e.kwikThreePaths(rowThreePath, "kwikfs 3 paths") }},
			{"kwikfs, 3 paths, primary coordinating only", func() error {
				return e.kwikThreePaths(rowFallback, "kwikfs 3 paths, --serve-data fallback", "--serve-data", "fallback")
			}},
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

// peersEnv holds what the rounds share and what they measured.
type peersEnv struct {
	loopEnv
	c    peersConfig
	file string // big.bin in root
	// tput: MiB/s by throughput row; cpu: CPU seconds per GiB by
	// "set-up: process" row; openSecs: wall time of the primary's first
	// open; shares: for each 3-path read, each path's share of the bytes
	// delivered, in path order.
	tput, cpu results
	openSecs  []float64
	// storeNotes: for each store re-read, what it fetched from the
	// network and the corrupt chunks it found (none of either expected).
	storeNotes []string
	shares     []labeledShares
	profiled   [2]float64 // MiB/s of the profiled cold read and store re-read
}

// labeledShares are the shares of the paths in one read of the set-up
// label names.
type labeledShares struct {
	label  string
	shares []pathShare
}

// pathShare is a path's share of the bytes delivered first (Paths[].
// BytesDelivered of the mount's status).
type pathShare struct {
	id     int // 0: the primary
	remote string
	frac   float64
}

// disk reads the file straight from the disk the servers read it from,
// page cache dropped: the ceiling of every cold read. (On a virtual
// machine the host may cache the disk, so it varies.)
func (e *peersEnv) disk() error {
	r, err := e.coldCat(e.root, nil)
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
	primary, err := e.freshPrimary(true)
	if err != nil {
		return err
	}
	defer primary.stop()
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(primary.addr, cache)
	if err != nil {
		return err
	}
	r, err := e.coldCat(m.dir, []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}, {"kwik-primary", primary.pid()}})
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
		float64(st.Transfer.DataBytes)/(1<<20), st.Store.Corrupt))
	return nil
}

// kwikThreePaths starts two kwik-secondaries and a fresh primary naming
// them (with extra flags), computes the manifest, and measures a cold read
// through a mount with the three paths up: its MiB/s as row, its CPU as
// label's, and each path's share of the bytes.
func (e *peersEnv) kwikThreePaths(row, label string, extra ...string) error {
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
	primary, err := e.freshPrimary(false, append(args, extra...)...)
	if err != nil {
		return err
	}
	defer primary.stop()
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(primary.addr, cache)
	if err != nil {
		return err
	}
	defer m.close()
	if err := m.waitPathsUp(3); err != nil {
		return err
	}
	procs := []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}, {"kwik-primary", primary.pid()}}
	for i, s := range secs {
		procs = append(procs, proc{fmt.Sprintf("kwik-secondary %d", i+1), s.pid()})
	}
	r, err := e.coldCat(m.dir, procs)
	if err != nil {
		return err
	}
	e.record(row, label, r)
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
	e.shares = append(e.shares, labeledShares{label, shares})
	return nil
}

// freshPrimary starts a kwik-primary on a free port with extra flags and
// makes it compute the file's manifest (warmUp, recording its CPU and
// wall time with record set), so that no measured read includes the
// hashing. The caller stops it.
func (e *peersEnv) freshPrimary(record bool, extra ...string) (*kwikServer, error) {
	primary, err := e.startServer("kwik-primary", "", extra...)
	if err != nil {
		return nil, err
	}
	if err := e.warmUp(primary, record); err != nil {
		primary.stop()
		return nil, err
	}
	return primary, nil
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
	if err := dropCaches(dropAll); err != nil {
		return err
	}
	before, err := groupCPU([]proc{{"", primary.pid()}})
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
	after, err := groupCPU([]proc{{"", primary.pid()}})
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

// sshfs mounts the tree with sshfs (see sshfsCommand) and reads the file.
func (e *peersEnv) sshfs(s *sshd) error {
	cmd, mnt, err := e.sshfsCommand(s)
	if err != nil {
		return err
	}
	return e.readThrough(rowSSHFS, "sshfs", cmd, mnt, "sshfs + ssh", proc{"sshd + sftp-server", s.cmd.Process.Pid})
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
	return e.readThrough(rowRclone, "rclone", cmd, mnt, "rclone", proc{"nginx", web.cmd.Process.Pid})
}

// readThrough starts cmd, a FUSE filesystem serving the tree at mnt,
// cold-reads the file through it counting the CPU of cmd's process (as
// mountName) and of server, records the read under row and setup, and
// unmounts.
func (e *peersEnv) readThrough(row, setup string, cmd *exec.Cmd, mnt, mountName string, server proc) error {
	stop, err := startFUSE(cmd, mnt, "big.bin")
	if err != nil {
		return fmt.Errorf("%s: %w", setup, err)
	}
	defer stop()
	r, err := e.coldCat(mnt, []proc{{mountName, cmd.Process.Pid}, server})
	if err != nil {
		return err
	}
	e.record(row, setup, r)
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
	if err := dropCaches(dropAll); err != nil {
		return peerRead{}, err
	}
	before, err := groupCPU(procs)
	if err != nil {
		return peerRead{}, err
	}
	mibps, reader, err := readChild(filepath.Join(dir, "big.bin"), peersReadBuf, e.c.size)
	if err != nil {
		return peerRead{}, err
	}
	after, err := groupCPU(procs)
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
	primary, err := e.freshPrimary(false, "--pprof", pprofAddr)
	if err != nil {
		return err
	}
	defer primary.stop()
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
	if err := dropCaches(dropAll); err != nil {
		return 0, err
	}
	var g errgroup.Group
	g.Go(func() error {
		return saveDaemon(m.ctl, cpuProfilePath, filepath.Join(e.c.profileDir, daemonFile))
	})
	for name, url := range others {
		g.Go(func() error {
			return saveURL(http.DefaultClient, url+cpuProfilePath, filepath.Join(e.c.profileDir, name))
		})
	}
	time.Sleep(200 * time.Millisecond) // the profiles are running
	mibps, _, readErr := readChild(filepath.Join(m.dir, "big.bin"), peersReadBuf, e.c.size)
	if err := errors.Join(g.Wait(), readErr); err != nil {
		return 0, err
	}
	return mibps, nil
}
