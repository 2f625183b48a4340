package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
	"golang.org/x/sys/unix"
)

// helperEnv, when set in the environment of this test binary, makes
// TestMain run the named helper (runHelper) instead of the tests: a test
// starts its own binary as a child process it can kill.
const helperEnv = "KWIKFS_TEST_HELPER"

// Environment of the "download" helper.
const (
	envDLPrimary = "KWIKFS_DL_PRIMARY" // primary address
	envDLCA      = "KWIKFS_DL_CA"      // CA file
	envDLRemote  = "KWIKFS_DL_REMOTE"  // path on the server
	envDLLocal   = "KWIKFS_DL_LOCAL"   // local destination
)

// runHelper runs helper name in a child process and returns its exit code.
func runHelper(name string) int {
	var err error
	switch name {
	case "download":
		err = downloadHelper(os.Getenv(envDLPrimary), os.Getenv(envDLCA), os.Getenv(envDLRemote), os.Getenv(envDLLocal))
	default:
		err = fmt.Errorf("unknown helper %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// downloadHelper runs transfer.Client.DownloadFile and prints every
// progress call as "progress DONE TOTAL" on its own line of stdout.
func downloadHelper(addr, ca, remote, local string) error {
	conf, err := kwik.LoadClientTLS(ca, "")
	if err != nil {
		return err
	}
	dir := filepath.Dir(ca)
	if err := kwik.UseClientCertificate(conf, filepath.Join(dir, certgen.ClientCertFile), filepath.Join(dir, certgen.ClientKeyFile)); err != nil {
		return err
	}
	c := transfer.NewClient(addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: conf}})
	defer c.Close()
	return c.DownloadFile(context.Background(), remote, local, func(done, total int64) {
		fmt.Printf("progress %d %d\n", done, total)
	})
}

// startTool runs the executable at path (not one of the built binaries)
// in the C locale with its output captured. It is killed at cleanup, and its output logged
// if the test failed.
func startTool(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(path), done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), "LC_ALL=C") // messages quote names 'like this'
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s %s output:\n%s", path, strings.Join(args, " "), tail([]byte(p.Output())))
		}
	})
	return p
}

// liveStatus asks the mount's daemon for its status in-process (the same
// GET /status that `kwikfs status` prints), cheap enough to poll.
func (m *mount) liveStatus(t *testing.T) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := control.QueryStatus(ctx, m.dir)
	if err != nil {
		t.Fatalf("status of %s: %v", m.dir, err)
	}
	return *st
}

// waitFetched polls the mount's status until it has fetched at least target
// bytes and returns the count seen then. It fails the test if busy (the
// reader driving the fetches) exits first or nothing gets there within
// timeout.
func waitFetched(t *testing.T, m *mount, target int64, busy *proc, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := m.liveStatus(t)
		if st.FS.BytesFetched >= target {
			return st.FS.BytesFetched
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetched %d bytes after %v, waiting for %d", st.FS.BytesFetched, timeout, target)
		}
		select {
		case <-busy.done:
			t.Fatalf("%s ended (%v) after %d bytes fetched, before %d", busy.name, busy.err, st.FS.BytesFetched, target)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill ends the mount daemon with SIGKILL and detaches the dead mount
// (MNT_DETACH), as an administrator would clean up after a crash.
func (m *mount) kill(t *testing.T) {
	t.Helper()
	if err := m.stop(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("kwikfs mount exited 0 after SIGKILL")
	}
	if isMounted(m.dir) {
		if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
			t.Fatalf("detach the dead mount: %v", err)
		}
	}
	if isMounted(m.dir) {
		t.Fatalf("%s still mounted after MNT_DETACH", m.dir)
	}
}

// TestResumeMountAfterKill kills the mount daemon with SIGKILL halfway
// through a cp of a 256 MiB file, mounts again on the same cache and copies
// again: the copy is byte-identical; the store kept every chunk fetched
// before the kill but for at most 5% of the file (fetched chunks reach the
// store within a few chunks' time); and the second copy brings at most the
// bytes the store did not hold plus 5% of the file over the wire, counted
// on the veth pair in front of the primary (headers, retransmissions and
// metadata included).
func TestResumeMountAfterKill(t *testing.T) {
	const size = 256 << 20
	root := filepath.Join(t.TempDir(), "tree")
	src := filepath.Join(root, "big.bin")
	writeRandomFile(t, src, size, 41)
	certDir := certs(t)
	link := newNetnsLink(t)
	p := startServerIn(t, link, "kwik-primary", root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	mountArgs := []string{"--fetch-timeout", "30s", "--server-name", "localhost"}
	m := startMount(t, p.addr, ca, cache, mountArgs...)
	out := t.TempDir()

	started := time.Now()
	cp := startTool(t, "/bin/cp", filepath.Join(m.dir, "big.bin"), filepath.Join(out, "first.bin"))
	seen := waitFetched(t, m, size/2, cp, 3*time.Minute)
	m.kill(t)
	t.Logf("killed the daemon after %v with %d bytes fetched", time.Since(started), seen)
	if err := waitExit(t, cp, 30*time.Second); err == nil {
		t.Fatal("cp of the file exited 0 although the daemon was killed halfway")
	}

	m2 := startMountAt(t, p.addr, ca, cache, m.dir, mountArgs...)
	// What the store holds at the restart, before anything is read:
	// Open recounted its chunk records against the segment files.
	before := m2.status(t)
	held := before.Store.ChunkBytes
	missing := size - held
	t.Logf("store after the restart: %d chunks, %d bytes (%.1f%% of the file), %d dropped as lost; %d bytes fetched but not kept (%.1f%% of the file)",
		before.Store.Chunks, held, 100*float64(held)/size, before.Store.Corrupt, seen-held, 100*float64(seen-held)/size)
	if before.Store.Corrupt != 0 {
		t.Errorf("the store dropped %d chunks after a process kill, want 0 (nothing acknowledged is lost)", before.Store.Corrupt)
	}
	// Chunks fetched and verified reach the store within a few chunks.
	if floor := seen - size/20; held < floor {
		t.Errorf("store holds %d bytes after the restart, want at least %d (%d fetched before the kill, less 5%% of the file)",
			held, floor, seen)
	}

	again := filepath.Join(out, "again.bin")
	wire := link.rxBytes(t)
	started = time.Now()
	run(t, 5*time.Minute, "cp", filepath.Join(m2.dir, "big.bin"), again)
	copyTime := time.Since(started)
	wire = link.rxBytes(t) - wire
	if want, got := fileSHA(t, src), fileSHA(t, again); want != got {
		t.Fatalf("big.bin copied after the restart: sha %x, want %x", got[:6], want[:6])
	}
	after := m2.status(t)
	fetched := after.FS.BytesFetched
	t.Logf("second copy took %v: fetched %d bytes (client counted %d), %d bytes on the wire, missing at restart %d (%.1f%% of the file), store hits %d chunks",
		copyTime, fetched, after.Transfer.DataBytes, wire, missing, 100*float64(missing)/size, after.FS.StoreHits)
	if limit := missing + size/20; fetched > limit || after.Transfer.DataBytes > limit || wire > limit {
		t.Errorf("second copy fetched %d bytes (client %d, on the wire %d), want at most %d (missing %d + 5%% of the file)",
			fetched, after.Transfer.DataBytes, wire, limit, missing)
	}
	if fetched < missing {
		t.Errorf("second copy fetched %d bytes, less than the %d the store did not hold", fetched, missing)
	}
	m2.unmount(t)
}

// TestResumeDownloadFile interrupts transfer.Client.DownloadFile of a
// 256 MiB file from the real kwik-primary halfway, by cancelling its ctx
// and by SIGKILLing the child process running it, and resumes it: the file
// is byte-identical, every whole chunk the part file held is kept, and the
// resumed download fetches at most the missing chunks plus 5% of the file.
func TestResumeDownloadFile(t *testing.T) {
	const size = 256<<20 + 12345 // a short last chunk
	root := filepath.Join(t.TempDir(), "tree")
	src := filepath.Join(root, "big.bin")
	writeRandomFile(t, src, size, 43)
	want := fileSHA(t, src)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	newClient := func(t *testing.T) *transfer.Client {
		c := transfer.NewClient(p.addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: clientTLS(t, certDir)}})
		t.Cleanup(func() { c.Close() })
		return c
	}
	// resume checks the interrupted download of local, then completes it
	// with a new client and checks what that fetched.
	resume := func(t *testing.T, local string, seen int64) {
		t.Helper()
		if _, err := os.Stat(local); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("destination exists after the interruption: %v", err)
		}
		held := heldChunks(t, local+transfer.PartSuffix, src)
		missing := size - held
		t.Logf("part file holds %d verified bytes (%.1f%%); %d reported written before the interruption",
			held, 100*float64(held)/size, seen)
		if held < seen {
			t.Errorf("part file holds %d bytes of whole chunks, less than the %d reported written", held, seen)
		}
		c := newClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		first := int64(-1)
		started := time.Now()
		if err := c.DownloadFile(ctx, "big.bin", local, func(done, total int64) {
			if first < 0 {
				first = done
			}
		}); err != nil {
			t.Fatalf("resumed download: %v", err)
		}
		st := c.Stats()
		t.Logf("resumed download took %v: fetched %d bytes, missing %d", time.Since(started), st.DataBytes, missing)
		if got := fileSHA(t, local); got != want {
			t.Fatalf("resumed download: sha %x, want %x", got[:6], want[:6])
		}
		if first != held {
			t.Errorf("resumed download started from %d verified bytes, want the %d the part file held", first, held)
		}
		if limit := missing + size/20; st.DataBytes > limit {
			t.Errorf("resumed download fetched %d bytes, want at most %d (missing %d + 5%%)", st.DataBytes, limit, missing)
		}
		if st.DataBytes < missing {
			t.Errorf("resumed download fetched %d bytes, less than the %d missing", st.DataBytes, missing)
		}
	}

	t.Run("cancel", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "big.bin")
		c := newClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var seen int64
		err := c.DownloadFile(ctx, "big.bin", local, func(done, total int64) {
			seen = done
			if done >= size/2 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled download: %v, want context.Canceled", err)
		}
		resume(t, local, seen)
	})

	t.Run("sigkill", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "big.bin")
		seen := killDownloadHalfway(t, p.addr, filepath.Join(certDir, certgen.CAFile), "big.bin", local, size)
		resume(t, local, seen)
	})
}

// killDownloadHalfway runs DownloadFile of remote to local in a child
// process, SIGKILLs it once it reports half of size written and returns the
// last progress it reported.
func killDownloadHalfway(t *testing.T, addr, ca, remote, local string, size int64) int64 {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=download",
		envDLPrimary+"="+addr, envDLCA+"="+ca, envDLRemote+"="+remote, envDLLocal+"="+local)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child prints one line per chunk: the buffer holds them all, so
	// the reader never blocks on a test that stopped listening.
	progress := make(chan int64, size/chunkSize+16)
	var waitErr error
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var done, total int64
			if _, err := fmt.Sscanf(sc.Text(), "progress %d %d", &done, &total); err == nil {
				progress <- done
			}
		}
		io.Copy(io.Discard, stdout)
		close(progress)
		waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	timeout := time.After(3 * time.Minute)
	var seen int64
	for seen < size/2 {
		select {
		case done, ok := <-progress:
			if !ok {
				<-exited
				t.Fatalf("download child ended (%v) after %d bytes, before half of %d:\n%s", waitErr, seen, size, tail(stderr.Bytes()))
			}
			seen = done
		case <-timeout:
			t.Fatalf("download child at %d bytes after 3 minutes", seen)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	for done := range progress { // what it printed before the signal landed
		seen = done
	}
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("download child ended with %v, want killed by SIGKILL:\n%s", waitErr, tail(stderr.Bytes()))
	}
	return seen
}

// heldChunks returns the bytes of the chunkSize chunks of part that equal
// the same chunk of the file at src, compared byte for byte.
func heldChunks(t *testing.T, part, src string) int64 {
	t.Helper()
	pf, err := os.Open(part)
	if err != nil {
		t.Fatalf("part file: %v", err)
	}
	defer pf.Close()
	sf, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	a, b := make([]byte, chunkSize), make([]byte, chunkSize)
	var held int64
	for off := int64(0); ; off += chunkSize {
		n, err := sf.ReadAt(a, off)
		if n == 0 {
			if err != io.EOF {
				t.Fatal(err)
			}
			return held
		}
		k, _ := pf.ReadAt(b[:n], off)
		if k == n && bytes.Equal(a[:n], b[:n]) {
			held += int64(n)
		}
	}
}

// TestResumeDamagedStoreRefetched damages the chunk store of an unmounted
// cache on disk, one chunk's bytes flipped inside its segment file and the
// last chunk of the segment cut short, then mounts it again and reads the
// file: the bytes are right, exactly the two damaged chunks are fetched
// again (the cut one dropped when the store opens, the flipped one when it
// fails its hash on the way out), the store counts both, and a third mount
// finds them stored again.
func TestResumeDamagedStoreRefetched(t *testing.T) {
	const size = 32*chunkSize + 1000
	root := filepath.Join(t.TempDir(), "tree")
	src := filepath.Join(root, "f.bin")
	writeRandomFile(t, src, size, 45)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	chunkLen := func(i int) int64 { return min(chunkSize, size-int64(i)*chunkSize) }
	const nChunks = size/chunkSize + 1
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	out := t.TempDir()

	m := startMount(t, p.addr, ca, cache)
	run(t, time.Minute, "cp", filepath.Join(m.dir, "f.bin"), filepath.Join(out, "first.bin"))
	m.unmount(t) // writes every fetched chunk to the store

	// Where each chunk's bytes are: random data, so its first 64 bytes
	// occur once.
	segs, err := filepath.Glob(filepath.Join(cache, "store", "segments", "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segment files %v (%v), want exactly one", segs, err)
	}
	seg, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	offs := make([]int64, nChunks)
	last := 0 // the chunk stored last, at the segment's end
	for i := range offs {
		off := bytes.Index(seg, data[int64(i)*chunkSize:int64(i)*chunkSize+64])
		if off < 0 || !bytes.Equal(seg[off:int64(off)+chunkLen(i)], data[int64(i)*chunkSize:int64(i)*chunkSize+chunkLen(i)]) {
			t.Fatalf("chunk %d not found whole in %s", i, segs[0])
		}
		offs[i] = int64(off)
		if offs[i] > offs[last] {
			last = i
		}
	}
	if got := offs[last] + chunkLen(last); got != int64(len(seg)) {
		t.Fatalf("segment is %d bytes, its last chunk ends at %d", len(seg), got)
	}
	flipped := 3
	if flipped == last {
		flipped = 4
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := offs[flipped] + chunkLen(flipped)/2
	if _, err := f.WriteAt([]byte{seg[at] ^ 0x01}, at); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(offs[last] + chunkLen(last)/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped one bit of chunk %d, cut chunk %d (stored last) in half", flipped, last)

	m2 := startMountAt(t, p.addr, ca, cache, m.dir)
	if st := m2.status(t).Store; st.Chunks != nChunks-1 || st.Corrupt != 1 {
		t.Errorf("store after the remount: %d chunks, %d dropped; want %d chunks, 1 dropped (the cut one)",
			st.Chunks, st.Corrupt, nChunks-1)
	}
	again := filepath.Join(out, "again.bin")
	run(t, time.Minute, "cp", filepath.Join(m2.dir, "f.bin"), again)
	if want, got := fileSHA(t, src), fileSHA(t, again); want != got {
		t.Fatalf("f.bin read over a damaged store: sha %x, want %x", got[:6], want[:6])
	}
	st := m2.status(t)
	t.Logf("after reading: fs %+v; store %+v", st.FS, st.Store)
	if want := chunkLen(flipped) + chunkLen(last); st.FS.ChunksFetched != 2 || st.FS.BytesFetched != want {
		t.Errorf("fetched %d chunks, %d bytes; want exactly the 2 damaged ones, %d bytes", st.FS.ChunksFetched, st.FS.BytesFetched, want)
	}
	if st.Store.Corrupt != 2 {
		t.Errorf("store dropped %d chunks, want 2 (the cut one at open, the flipped one on read)", st.Store.Corrupt)
	}
	if st.FS.StoreHits != nChunks-2 {
		t.Errorf("store hits %d, want %d (every undamaged chunk)", st.FS.StoreHits, nChunks-2)
	}
	m2.unmount(t)

	m3 := startMountAt(t, p.addr, ca, cache, m.dir)
	run(t, time.Minute, "cp", filepath.Join(m3.dir, "f.bin"), filepath.Join(out, "third.bin"))
	if want, got := fileSHA(t, src), fileSHA(t, filepath.Join(out, "third.bin")); want != got {
		t.Fatalf("f.bin on the third mount: sha %x, want %x", got[:6], want[:6])
	}
	if st := m3.status(t); st.FS.BytesFetched != 0 || st.Store.Corrupt != 0 || st.Store.Chunks != nChunks {
		t.Errorf("third mount: fetched %d bytes, store %d chunks, %d dropped; want 0, %d, 0",
			st.FS.BytesFetched, st.Store.Chunks, st.Store.Corrupt, nChunks)
	}
	m3.unmount(t)
}
