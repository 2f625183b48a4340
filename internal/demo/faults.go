package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/internal/backoff"
	"github.com/kwikfs/kwikfs/internal/control"
)

// DefaultFaultsSize is the size of each file the faults story copies when
// Config.FaultsSize is 0.
const DefaultFaultsSize = 256 << 20

const (
	// copyTime is the shortest time a copy of the story takes: copies are
	// paced to it, so that a small file's copy lasts a few of the
	// watcher's lines and a fault injected halfway meets a transfer still
	// in progress. Longer would hide the split: a paced copy well below
	// what loopback carries is served by the primary alone.
	copyTime = 3 * time.Second
	// storyReadAhead is the --read-ahead of the story's mounts, in chunks:
	// small, so that what the daemon has fetched stays close to what the
	// copy has read when a fault strikes.
	storyReadAhead = "4"
	// pathRetryMax is the primary's --path-retry-max in the story, so that
	// a restarted secondary is added again within about a second.
	pathRetryMax = "1s"
	// pathFailWait bounds the wait for the client to give up on the path
	// of a killed secondary; readdWait the wait for a restarted secondary
	// to be added again.
	pathFailWait = 10 * time.Second
	readdWait    = 45 * time.Second
)

// RunFaults plays the faults story on out and returns at its end: the same
// servers as Run (a primary and two secondaries on loopback, exporting
// cfg.Tree or the sample tree), a mount by a `kwikfs mount` process of its
// own, and two files of cfg.FaultsSize random bytes made in the tree's
// faults/ directory when missing. Copy 1 reads the first file from the
// mount; halfway through, a secondary is killed with SIGKILL and the other
// servers carry the rest; the secondary is restarted on its address and
// the primary adds it again. Copy 2 reads the second file; halfway through,
// the mount daemon is killed with SIGKILL, its dead mount detached, the
// file system mounted again on the same cache, and the copy run again,
// fetching only what the cache lacks (the story prints how much). Each copy
// is written under cfg.Dir/copies and checked against the source's
// SHA-256. Once a second, a line shows each server's state and share.
//
// When ctx ends, every process the story started is stopped (SIGTERM, then
// SIGKILL after a few seconds), the mount is unmounted and RunFaults
// returns ctx's error. The cache (cfg.Dir/cache-faults) starts empty on
// every run.
func RunFaults(ctx context.Context, cfg Config, out io.Writer) error {
	size := cfg.FaultsSize
	if size <= 0 {
		size = DefaultFaultsSize
	}
	out = &syncWriter{w: out}
	certDir, tree, err := prepare(cfg, out)
	if err != nil {
		return err
	}
	mnt, err := filepath.Abs(cfg.Mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	switch live, dead := mounted(mnt); {
	case live:
		return fmt.Errorf("%s is mounted already: unmount it first", mnt)
	case dead:
		fmt.Fprintf(out, "detaching the dead mount left at %s\n", mnt)
		if err := detach(mnt); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "preparing two files of %s in %s ...\n", mib(size), filepath.Join(tree, faultsDir))
	files, err := makeFaultFiles(ctx, tree, size)
	if err != nil {
		return err
	}
	s := &story{
		out:     out,
		size:    size,
		mnt:     mnt,
		certDir: certDir,
		tree:    tree,
		cache:   filepath.Join(cfg.Dir, "cache-faults"),
		copies:  filepath.Join(cfg.Dir, "copies"),
	}
	if err := os.RemoveAll(s.cache); err != nil {
		return fmt.Errorf("empty the cache: %w", err)
	}
	if err := os.MkdirAll(s.copies, 0o755); err != nil {
		return fmt.Errorf("copies: %w", err)
	}
	defer s.close()
	err = s.play(ctx, files)
	if ctx.Err() != nil {
		fmt.Fprintln(out, "\ninterrupted: stopping everything")
		return ctx.Err()
	}
	return err
}

// faultsDir is the directory of the tree that holds the story's files.
const faultsDir = "faults"

// faultFile is a file of the story: its path in the tree and the SHA-256
// of its bytes.
type faultFile struct {
	rel string
	sum []byte
}

// makeFaultFiles makes, in tree/faults, the story's two files of size
// pseudo-random bytes (the same bytes every time for a name, different
// between the files) when they are missing or of another size, removes the
// files of other sizes earlier runs left there, and returns the files with
// their SHA-256.
func makeFaultFiles(ctx context.Context, tree string, size int64) ([]faultFile, error) {
	dir := filepath.Join(tree, faultsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var names []string
	for _, which := range []string{"first", "second"} {
		names = append(names, fmt.Sprintf("%s-%s.bin", which, sizeName(size)))
	}
	old, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range old {
		if !slices.Contains(names, e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("remove an earlier run's file: %w", err)
			}
		}
	}
	var files []faultFile
	for _, name := range names {
		p := filepath.Join(dir, name)
		var sum []byte
		if fi, err := os.Stat(p); err == nil && fi.Size() == size {
			sum, err = fileSHA256(ctx, p)
			if err != nil {
				return nil, err
			}
		} else if sum, err = writeRandomFile(ctx, p, name, size); err != nil {
			return nil, err
		}
		files = append(files, faultFile{rel: filepath.Join(faultsDir, name), sum: sum})
	}
	return files, nil
}

// sizeName writes size for a file name: 256MiB, or 1000B when it is not a
// whole number of MiB.
func sizeName(size int64) string {
	if size%(1<<20) == 0 {
		return fmt.Sprintf("%dMiB", size>>20)
	}
	return fmt.Sprintf("%dB", size)
}

// writeRandomFile writes size pseudo-random bytes, seeded by seed, to p
// (through a temporary file renamed into place) and returns their SHA-256.
func writeRandomFile(ctx context.Context, p, seed string, size int64) ([]byte, error) {
	var key [32]byte
	copy(key[:], seed)
	rng := rand.NewChaCha8(key)
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp) // after the rename: nothing to remove
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			f.Close()
			return nil, err
		}
		b := buf[:min(left, int64(len(buf)))]
		rng.Read(b)
		if _, err := w.Write(b); err != nil {
			f.Close()
			return nil, fmt.Errorf("write %s: %w", tmp, err)
		}
		left -= int64(len(b))
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// fileSHA256 returns the SHA-256 of the file at p.
func fileSHA256(ctx context.Context, p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return h.Sum(nil), nil
		}
		if err != nil {
			return nil, fmt.Errorf("hash %s: %w", p, err)
		}
	}
}

// story is one run of the faults story. The goroutine running play (and
// then close) owns its fields; the watcher goroutine reads only servers,
// fixed before it starts, and the current copy through live; the copy
// goroutines only copyCtx.
type story struct {
	out                       io.Writer
	size                      int64
	mnt, certDir, tree, cache string
	copies                    string
	primary                   *process
	secondaries               []*process
	servers                   []serverInfo // primary first; fixed once the servers run
	daemon                    *process     // the current `kwikfs mount`; nil when none
	live                      liveCopy
	copyWG, watchWG           sync.WaitGroup
	stopCopies, stopWatching  context.CancelFunc
	copyCtx                   context.Context
}

// serverInfo names a server in the story's lines.
type serverInfo struct {
	label string // "primary", "secondary 1", ...
	addr  string
}

// play runs the story's steps in order; close cleans up after it.
func (s *story) play(ctx context.Context, files []faultFile) error {
	s.copyCtx, s.stopCopies = context.WithCancel(ctx)
	if err := s.startServers(); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "\nservers on loopback, exporting %s:\n", s.tree)
	for _, sv := range s.servers {
		fmt.Fprintf(s.out, "  %-12s %s\n", sv.label, sv.addr)
	}
	if err := s.mount(ctx); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "mounted %s (kwikfs mount, pid %d; cache %s, empty)\n", s.mnt, s.daemon.cmd.Process.Pid, s.cache)
	fmt.Fprintf(s.out, "\nEvery second a line shows the copy's progress and, per server, its path's state,\nthe rate it delivered at over the last second and its share of the mount's bytes.\nCopies are paced to take at least %v.\n", copyTime)
	var watchCtx context.Context
	watchCtx, s.stopWatching = context.WithCancel(ctx)
	live := &display{servers: s.servers, out: s.out, head: s.live.head}
	s.watchWG.Go(func() { live.run(watchCtx, s.mnt) })
	s.waitSecondaries(ctx)

	// Act 1: a secondary dies halfway through a copy and comes back.
	first := files[0]
	fmt.Fprintf(s.out, "\n== copy 1: %s (%s) from the mount to %s\n", first.rel, mib(s.size), s.copies)
	c1 := s.startCopy("copy 1", first)
	if err := waitHalf(ctx, c1); err != nil {
		return err
	}
	before, err := s.status(ctx)
	if err != nil {
		return fmt.Errorf("status before the kill: %w", err)
	}
	// The secondary that carried the most so far: the others have work to
	// take over.
	vi := busiest(before, s.servers[1:])
	victim, survivor := s.servers[1+vi], s.servers[2-vi]
	oldIDs := pathIDs(before, victim.addr)
	s.secondaries[vi].kill()
	fmt.Fprintf(s.out, "== killed %s (%s) with SIGKILL at %d%% of copy 1; the primary and %s carry on\n",
		victim.label, victim.addr, c1.percent(), survivor.label)
	if s.waitPath(ctx, victim.addr, pathFailWait, func(p control.Path) bool {
		return slices.Contains(oldIDs, p.ID) && p.State != "up"
	}) {
		fmt.Fprintf(s.out, "== the client gave up the path to %s; its chunks went to the others\n", victim.label)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sec, err := startServer("kwik-secondary", s.tree, s.certDir, victim.addr, serverFlags...)
	if err != nil {
		return fmt.Errorf("restart %s: %w", victim.label, err)
	}
	s.secondaries[vi] = sec
	fmt.Fprintf(s.out, "== restarted %s on %s (pid %d)\n", victim.label, victim.addr, sec.cmd.Process.Pid)
	readded := s.waitPath(ctx, victim.addr, readdWait, func(p control.Path) bool {
		return !slices.Contains(oldIDs, p.ID) && p.State == "up"
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	if readded {
		fmt.Fprintf(s.out, "== %s re-added: the primary opened a new path to it\n", victim.label)
	} else {
		fmt.Fprintf(s.out, "== %s not re-added within %v; going on without it\n", victim.label, readdWait)
	}
	if err := s.finishCopy(ctx, c1, first); err != nil {
		return err
	}

	// Act 2: the daemon dies halfway through a copy; the copy is resumed
	// on a new mount over the same cache.
	second := files[1]
	fmt.Fprintf(s.out, "\n== copy 2: %s (%s) from the mount to %s\n", second.rel, mib(s.size), s.copies)
	c2 := s.startCopy("copy 2", second)
	if err := waitHalf(ctx, c2); err != nil {
		return err
	}
	s.daemon.kill()
	s.daemon = nil
	fmt.Fprintf(s.out, "== killed the daemon (kwikfs mount) with SIGKILL at %d%% of copy 2\n", c2.percent())
	<-c2.done
	s.live.set(nil)
	if c2.err != nil {
		fmt.Fprintf(s.out, "== copy 2 stopped after %s: %v\n", mib(c2.read.Load()), c2.err)
	} else {
		fmt.Fprintln(s.out, "== copy 2 had read everything before the daemon died")
	}
	if err := detach(s.mnt); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "== detached the dead mount at %s\n", s.mnt)
	if err := s.mount(ctx); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "== mounted again on the same cache (pid %d); copying %s again\n", s.daemon.cmd.Process.Pid, second.rel)
	c3 := s.startCopy("copy 2", second)
	if err := s.finishCopy(ctx, c3, second); err != nil {
		return err
	}
	st, err := s.status(ctx)
	if err != nil {
		return fmt.Errorf("status after the resumed copy: %w", err)
	}
	fetched := st.FS.BytesFetched
	fmt.Fprintf(s.out, "== resumed copy: fetched %s of %s (%d of %d bytes): the rest came from the cache\n",
		mib(fetched), mib(s.size), fetched, s.size)

	s.stopWatching()
	s.watchWG.Wait()
	s.daemon.stop()
	s.daemon = nil
	if live, dead := mounted(s.mnt); live || dead {
		return fmt.Errorf("%s still mounted after the daemon exited", s.mnt)
	}
	fmt.Fprintf(s.out, "\nunmounted %s. The story is complete: both copies identical, a secondary and the daemon killed and recovered.\n", s.mnt)
	return nil
}

// serverFlags are the flags the story's servers get beyond startServer's:
// their warnings (a path or a session lost) are what the story's own lines
// tell.
var serverFlags = []string{"--log-level", "error"}

// startServers starts two secondaries and a primary that delegates to
// them and adds a lost secondary again within pathRetryMax.
func (s *story) startServers() error {
	args := append(slices.Clone(serverFlags), "--path-retry-max", pathRetryMax)
	for range 2 {
		sec, err := startServer("kwik-secondary", s.tree, s.certDir, "127.0.0.1:0", serverFlags...)
		if err != nil {
			return err
		}
		s.secondaries = append(s.secondaries, sec)
		args = append(args, "--secondary", sec.addr)
	}
	p, err := startServer("kwik-primary", s.tree, s.certDir, "127.0.0.1:0", args...)
	if err != nil {
		return err
	}
	s.primary = p
	s.servers = []serverInfo{{"primary", p.addr}}
	for i, sec := range s.secondaries {
		s.servers = append(s.servers, serverInfo{fmt.Sprintf("secondary %d", i+1), sec.addr})
	}
	return nil
}

// mount starts the story's `kwikfs mount` on s.mnt and s.cache.
func (s *story) mount(ctx context.Context) error {
	d, err := startMount(ctx, mountArgs{
		primary:    s.primary.addr,
		certDir:    s.certDir,
		cache:      s.cache,
		mountpoint: s.mnt,
		extra:      []string{"--read-ahead", storyReadAhead},
	})
	if err != nil {
		return err
	}
	s.daemon = d
	return nil
}

// close stops what the story started, whatever step it reached: the
// copies, the watcher, the daemon (and a mount it left), the servers.
func (s *story) close() {
	if s.stopCopies != nil {
		s.stopCopies()
	}
	if s.stopWatching != nil {
		s.stopWatching()
	}
	s.watchWG.Wait()
	// A copy sees its context done between two reads; a read waiting for
	// data ends when the daemon goes.
	copied := make(chan struct{})
	go func() { s.copyWG.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(3 * time.Second):
	}
	if s.daemon != nil {
		s.daemon.stop()
	}
	<-copied
	if live, dead := mounted(s.mnt); live || dead {
		if err := detach(s.mnt); err != nil {
			fmt.Fprintln(s.out, err)
		}
	}
	for _, p := range append(slices.Clone(s.secondaries), s.primary) {
		if p != nil {
			p.stop()
		}
	}
}

// waitSecondaries waits up to 15 s for the mount to hold a path up to every
// secondary, so that copy 1 starts with all three servers.
func (s *story) waitSecondaries(ctx context.Context) {
	// The session starts with the first request that needs the primary.
	os.ReadDir(filepath.Join(s.mnt, faultsDir))
	for _, sv := range s.servers[1:] {
		s.waitPath(ctx, sv.addr, 15*time.Second, func(p control.Path) bool { return p.State == "up" })
	}
}

// waitPath polls the daemon's status until a path to addr satisfies ok,
// for at most timeout, and reports whether one did.
func (s *story) waitPath(ctx context.Context, addr string, timeout time.Duration, ok func(control.Path) bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if st, err := s.status(ctx); err == nil {
			for _, p := range st.Paths {
				if p.Remote == addr && ok(p) {
					return true
				}
			}
		}
		if time.Now().After(deadline) || backoff.Sleep(ctx, 100*time.Millisecond) != nil {
			return false
		}
	}
}

// busiest returns the index in servers of the one whose paths delivered
// the most bytes in st (the first when none delivered any).
func busiest(st *control.Status, servers []serverInfo) int {
	best, most := 0, uint64(0)
	for i, sv := range servers {
		var n uint64
		for _, p := range st.Paths {
			if p.Remote == sv.addr {
				n += p.BytesDelivered
			}
		}
		if n > most {
			best, most = i, n
		}
	}
	return best
}

// pathIDs returns the IDs of the paths to addr in st.
func pathIDs(st *control.Status, addr string) []int {
	var ids []int
	for _, p := range st.Paths {
		if p.Remote == addr {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// startCopy starts copying f from the mount to s.copies in a goroutine the
// story owns, and shows it in the watcher's lines.
func (s *story) startCopy(label string, f faultFile) *copyJob {
	c := &copyJob{label: label, size: s.size, half: make(chan struct{}), done: make(chan struct{})}
	src := filepath.Join(s.mnt, f.rel)
	dst := filepath.Join(s.copies, filepath.Base(f.rel))
	s.live.set(c)
	s.copyWG.Add(1)
	go func() {
		defer s.copyWG.Done()
		defer close(c.done)
		c.sum, c.err = c.run(s.copyCtx, src, dst)
	}()
	return c
}

// finishCopy waits for c, checks its SHA-256 against f's and says so.
func (s *story) finishCopy(ctx context.Context, c *copyJob, f faultFile) error {
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.live.set(nil)
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.label, c.err)
	}
	if !bytes.Equal(c.sum, f.sum) {
		return fmt.Errorf("%s: sha256 %x differs from the source's %x", c.label, c.sum, f.sum)
	}
	fmt.Fprintf(s.out, "== %s: sha256 identical to the source's (%s...), %s in %v\n",
		c.label, hex.EncodeToString(c.sum)[:16], mib(c.size), c.elapsed.Round(100*time.Millisecond))
	return nil
}

// waitHalf waits until c has read half its file (or ended).
func waitHalf(ctx context.Context, c *copyJob) error {
	select {
	case <-c.half:
		return nil
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("%s: %w", c.label, c.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// status asks the mount's daemon for its status, for at most 3 s.
func (s *story) status(ctx context.Context) (*control.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return control.QueryStatus(ctx, s.mnt)
}

// mib formats n bytes as MiB with one decimal.
func mib(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// syncWriter serializes the writes of the story and its watcher.
type syncWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}
