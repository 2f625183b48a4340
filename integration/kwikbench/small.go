package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/control"
)

// smallConfig says what the small-files bench (--small) measures.
type smallConfig struct {
	bin   string
	files int           // files of the tree, smallFileSize bytes each
	dirs  int           // directories the files are spread over
	runs  int           // rounds; medians are reported
	rtt   time.Duration // RTT of the relay the last cp -r goes through
}

// smallCheck is what is checked of an operation's copy.
type smallCheck int

const (
	checkNone     smallCheck = iota // the operation copies nothing
	checkContents                   // every file's sha256
	checkAttrs                      // every file's sha256, permission bits and mtime
)

// smallOp is one operation of the small-files table, run on a mount.
type smallOp struct {
	// name is the command as the table prints it: MNT the mountpoint,
	// DEST a new directory on the local disk.
	name string
	// argv returns the command line for the mountpoint mnt; dest is a
	// path under the work directory that does not exist yet.
	argv func(mnt, dest string) []string
	// entries: the rate counts files and directories, not files.
	entries bool
	check   smallCheck
	// ratio is the target of kwikfs / sshfs, minRate that of kwikfs's
	// rate; 0 for none.
	ratio, minRate float64
	// linked: kwikfs only, through a linkemu relay (smallConfig.rtt).
	linked bool
}

// smallOps returns the operations of the table in print order; the first
// is cp -r, which the request counts and CPU figures are taken of.
func smallOps(rtt time.Duration) []smallOp {
	cp := smallOp{
		name:  "cp -r MNT/tree DEST",
		argv:  func(mnt, dest string) []string { return []string{"cp", "-r", filepath.Join(mnt, "tree"), dest} },
		check: checkContents, ratio: 2.0, minRate: 2500,
	}
	linked := cp
	linked.name = fmt.Sprintf("cp -r MNT/tree DEST, %v RTT (kwikfs only)", rtt)
	linked.ratio, linked.minRate, linked.linked = 0, 1500, true
	return []smallOp{
		cp,
		{
			name: "rsync -a MNT/tree/ DEST/",
			argv: func(mnt, dest string) []string {
				return []string{"rsync", "-a", filepath.Join(mnt, "tree") + "/", dest + "/"}
			},
			check: checkAttrs, ratio: 2.0,
		},
		{
			// GNU tar does not read the files when the archive is
			// /dev/null: it goes to a pipe.
			name: "tar cf - -C MNT tree | cat >/dev/null",
			argv: func(mnt, _ string) []string {
				return []string{"bash", "-o", "pipefail", "-c", `tar cf - -C "$0" tree | cat >/dev/null`, mnt}
			},
		},
		{
			name:    "ls -lR MNT/tree >/dev/null",
			argv:    func(mnt, _ string) []string { return []string{"ls", "-lR", filepath.Join(mnt, "tree")} },
			entries: true, ratio: 1.5,
		},
		{
			name:    "find MNT/tree >/dev/null",
			argv:    func(mnt, _ string) []string { return []string{"find", filepath.Join(mnt, "tree")} },
			entries: true, ratio: 1.5,
		},
		linked,
	}
}

// smallCounters are the mount's request counters reported per file that
// cp -r copies, in print order. A counter that fusefs.Stats or
// transfer.ClientStats gains is one more line.
var smallCounters = []struct {
	name string
	get  func(*control.Status) int64
}{
	{"list calls", func(s *control.Status) int64 { return s.FS.ListCalls }},
	{"manifest calls", func(s *control.Status) int64 { return s.FS.ManifestCalls }},
	{"stat calls", func(s *control.Status) int64 { return s.FS.StatCalls }},
	{"fetch calls (ReadChunks, READ)", func(s *control.Status) int64 { return s.FS.FetchCalls }},
	{"FILES calls (manifests and content ahead of opens)", func(s *control.Status) int64 { return s.FS.FilesCalls }},
	{"manifests brought by FILES", func(s *control.Status) int64 { return s.FS.FilesManifests }},
	{"chunks fetched", func(s *control.Status) int64 { return s.FS.ChunksFetched }},
	{"client requests, all kinds", func(s *control.Status) int64 { return s.Transfer.Requests }},
}

// smallOpTimeout bounds one operation.
const smallOpTimeout = 10 * time.Minute

// runSmall prints the small-files table: a seeded tree of --small-files
// files of 4 KiB in --small-dirs directories, served by one kwik-primary
// and an sshd on 127.0.0.1; each round runs every operation of smallOps
// on kwikfs (a fresh cache and mount each time) and on sshfs (a fresh
// mount), the page cache, dentries and inodes dropped before each, and
// times it from start to exit; the copies are checked against the tree.
// Last in each round, kwikfs's cp -r through a linkemu relay of --small-rtt.
// Also the daemon's requests per file copied by cp -r, and the CPU time
// per 1000 files of every process of the cp -r. Medians of --small-runs
// rounds are reported.
func runSmall(c smallConfig) error {
	if err := needTools([]string{"sshfs", "ssh-keygen", "/usr/sbin/sshd", "fusermount3", "rsync", "tar", "cp", "ls", "find", "bash"},
		"make bench-small, which installs sshfs, openssh-server, rsync and tar"); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kwikbench-small-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "src")
	e := &smallEnv{c: c, loopEnv: loopEnv{bin: c.bin, work: work, root: root, probe: "tree"}}
	fmt.Fprintf(os.Stderr, "writing %d files of %d KiB in %d directories ...\n", c.files, smallFileSize>>10, c.dirs)
	if e.tree, err = writeSmallTree(filepath.Join(root, "tree"), c.files, c.dirs, 13); err != nil {
		return err
	}
	if e.certs, err = writeCerts(work); err != nil {
		return err
	}
	loadStart := loadAvg()
	if e.ssh, err = startSSHD(work); err != nil {
		return fmt.Errorf("sshd: %w", err)
	}
	defer e.ssh.stop()
	if e.primary, err = e.startServer("kwik-primary", ""); err != nil {
		return err
	}
	defer e.primary.stop()
	if e.relay, err = linkemu.New(e.primary.addr, link(0, c.rtt, 0)); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	defer e.relay.Close()

	ops := smallOps(c.rtt)
	for i := range max(c.runs, 1) {
		for k, op := range ops {
			fmt.Fprintf(os.Stderr, "round %d: %s on kwikfs (load %s) ...\n", i+1, op.name, loadAvg())
			if err := e.kwikfs(op, k == 0); err != nil {
				return fmt.Errorf("round %d, kwikfs, %s: %w", i+1, op.name, err)
			}
			if op.linked {
				continue
			}
			fmt.Fprintf(os.Stderr, "round %d: %s on sshfs (load %s) ...\n", i+1, op.name, loadAvg())
			if err := e.sshfs(op, k == 0); err != nil {
				return fmt.Errorf("round %d, sshfs, %s: %w", i+1, op.name, err)
			}
		}
	}
	return e.print(ops, loadStart, loadAvg())
}

// smallEnv holds what the rounds share and what they measured.
type smallEnv struct {
	loopEnv
	c       smallConfig
	tree    *smallTree
	ssh     *sshd
	primary *kwikServer
	relay   *linkemu.Relay // in front of primary
	dests   int            // copy destinations made so far
	// rate: files (or entries) per second by "kwikfs "/"sshfs " + op
	// name; cpu: CPU seconds per 1000 files of cp -r by "file system:
	// process"; calls: per file of cp -r, by smallCounters name.
	rate, cpu, calls results
}

// kwikfs runs op on a fresh mount with a fresh cache, of the primary or,
// for a linked op, of the relay. With count set it also records the
// daemon's requests per file and the CPU time of the daemon, the primary
// and the command.
func (e *smallEnv) kwikfs(op smallOp, count bool) error {
	addr := e.primary.addr
	if op.linked {
		addr = e.relay.Addr()
	}
	cache := e.cachePath()
	defer os.RemoveAll(cache)
	m, err := e.mount(addr, cache)
	if err != nil {
		return err
	}
	defer m.close()
	var procs []proc
	var before *control.Status
	if count {
		procs = []proc{{"kwikfs mount (daemon)", m.cmd.Process.Pid}, {"kwik-primary", e.primary.pid()}}
		if before, err = m.ctl.Status(context.Background()); err != nil {
			return err
		}
	}
	if err := e.timed(op, "kwikfs", m.dir, procs); err != nil {
		return err
	}
	if !count {
		return nil
	}
	after, err := m.ctl.Status(context.Background())
	if err != nil {
		return err
	}
	for _, c := range smallCounters {
		e.calls.add(c.name+" per file", float64(c.get(after)-c.get(before))/float64(len(e.tree.files)))
	}
	return nil
}

// sshfs runs op on a fresh sshfs mount (see sshfsCommand). With count set
// it also records the CPU time of sshfs, sshd and the command.
func (e *smallEnv) sshfs(op smallOp, count bool) error {
	cmd, mnt, err := e.sshfsCommand(e.ssh)
	if err != nil {
		return err
	}
	stop, err := startFUSE(cmd, mnt, e.probe)
	if err != nil {
		return fmt.Errorf("sshfs: %w", err)
	}
	defer stop()
	var procs []proc
	if count {
		procs = []proc{{"sshfs + ssh", cmd.Process.Pid}, {"sshd + sftp-server", e.ssh.cmd.Process.Pid}}
	}
	return e.timed(op, "sshfs", mnt, procs)
}

// timed drops the page cache, dentries and inodes, runs op on mnt (named
// fs in the rows) and records its files (or entries) per second; then it
// checks the copy the op made, if any, and removes it. With procs it also
// records their CPU time per 1000 files and the command's.
func (e *smallEnv) timed(op smallOp, fs, mnt string, procs []proc) error {
	e.dests++
	dest := filepath.Join(e.work, fmt.Sprintf("dest-%d", e.dests))
	defer os.RemoveAll(dest)
	if err := dropCaches(dropAll); err != nil {
		return err
	}
	before, err := groupCPU(procs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), smallOpTimeout)
	defer cancel()
	argv := op.argv(mnt, dest)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	secs := time.Since(start).Seconds()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("not done after %v: %w", smallOpTimeout, err)
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, firstLines(stderr.String(), 5))
	}
	after, err := groupCPU(procs)
	if err != nil {
		return err
	}
	perK := 1000 / float64(len(e.tree.files))
	for i, p := range procs {
		e.cpu.add(fs+": "+p.name, (after[i]-before[i]).Seconds()*perK)
	}
	if procs != nil {
		e.cpu.add(fs+": "+argv[0], rusageCPU(cmd.ProcessState).Seconds()*perK)
	}
	n := len(e.tree.files)
	if op.entries {
		n = e.tree.entries()
	}
	e.rate.add(fs+" "+op.name, float64(n)/secs)
	if op.check == checkNone {
		return nil
	}
	if err := e.tree.checkCopy(dest, op.check == checkAttrs); err != nil {
		return fmt.Errorf("%s on %s: %w", op.name, fs, err)
	}
	return nil
}

// firstLines returns the first n lines of s, trimmed.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[:min(n, len(lines))], " / ")
}
