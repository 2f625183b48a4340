package integration

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/certgen"
)

// writeRandomFile writes n pseudo-random bytes drawn from seed to path.
// Distinct seeds give distinct chunks, so no chunk of one file can be served
// from the cache as a chunk of another.
func writeRandomFile(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileSHA returns the sha256 of the file at path.
func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// mirror copies the tree at src to a new directory with cp -a (real copies
// of the bytes, modes and mtimes kept) and returns it.
func mirror(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "mirror")
	run(t, time.Minute, "cp", "-a", src, dst)
	return dst
}

// startClusterRoots starts one kwik-secondary per root in secRoots and a
// primary exporting root that delegates to them, with the tests' chunk size.
func startClusterRoots(t *testing.T, root, certDir string, secRoots ...string) *primary {
	t.Helper()
	extra := []string{"--chunk-size", "262144"}
	for _, r := range secRoots {
		s := startServer(t, "kwik-secondary", r, certDir)
		extra = append(extra, "--secondary", s.addr)
	}
	return startPrimary(t, root, certDir, extra...)
}

// requireEveryPathDelivered fails the test unless the mount's session has
// exactly want paths and every one of them delivered file data.
func requireEveryPathDelivered(t *testing.T, m *mount, want int) {
	t.Helper()
	st := m.status(t)
	if len(st.Paths) != want {
		t.Fatalf("session has %d paths, want %d: %+v", len(st.Paths), want, st.Paths)
	}
	for _, p := range st.Paths {
		if p.BytesReceived == 0 {
			t.Errorf("path %d (%s) delivered no data: the work was not shared (paths %+v)", p.ID, p.Remote, st.Paths)
		}
	}
}

// TestScenarioOneSecondaryRsync copies the test tree with rsync -a out of a
// mount served by the primary and one secondary.
func TestScenarioOneSecondaryRsync(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 32<<20)
	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, root)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 3*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	requireEveryPathDelivered(t, m, 2)
}

// TestScenarioConcurrentReaders runs several cat and cp processes at once on
// a mount served by the primary and two secondaries: four readers on four
// different files and three more on one shared file. Every copy is
// byte-identical and every path delivered data.
func TestScenarioConcurrentReaders(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	files := []string{"a.bin", "b.bin", "c.bin", "d.bin", "shared.bin"}
	for i, name := range files {
		writeRandomFile(t, filepath.Join(root, name), 10<<20+i*4099, uint64(100+i))
	}
	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, root, root)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", "30s")

	out := t.TempDir()
	type job struct {
		src, dst string
		cmd      *exec.Cmd
	}
	var jobs []*job
	add := func(src string, useCp bool) {
		dst := filepath.Join(out, filepath.Base(src)+"-"+string(rune('0'+len(jobs))))
		j := &job{src: src, dst: dst}
		if useCp {
			j.cmd = exec.Command("cp", filepath.Join(m.dir, src), dst)
		} else {
			f, err := os.Create(dst)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			j.cmd = exec.Command("cat", filepath.Join(m.dir, src))
			j.cmd.Stdout = f
		}
		jobs = append(jobs, j)
	}
	add("a.bin", false)
	add("b.bin", true)
	add("c.bin", false)
	add("d.bin", true)
	add("shared.bin", false)
	add("shared.bin", true)
	add("shared.bin", false)

	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		if err := j.cmd.Start(); err != nil {
			t.Fatalf("start %v: %v", j.cmd.Args, err)
		}
		t.Cleanup(func() { j.cmd.Process.Kill() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.cmd.Wait()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		for _, j := range jobs {
			j.cmd.Process.Kill()
		}
		<-done
		t.Fatal("concurrent readers still running after 3 minutes")
	}
	for i, j := range jobs {
		if errs[i] != nil {
			t.Errorf("%v: %v", j.cmd.Args, errs[i])
			continue
		}
		if want, got := fileSHA(t, filepath.Join(root, j.src)), fileSHA(t, j.dst); want != got {
			t.Errorf("%v: copy sha %x, want %x", j.cmd.Args, got[:6], want[:6])
		}
	}
	requireEveryPathDelivered(t, m, 3)
}

// freeUDPAddr returns a loopback UDP address that was free a moment ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// startRelayedSecondary starts a kwik-secondary exporting root behind a
// link-emulator relay with an unshaped link: it listens on a free port of
// its own (backend) and advertises the relay's address, which the primary
// is to name in --secondary; args are further flags of kwik-secondary. The
// relay is closed at cleanup.
func startRelayedSecondary(t *testing.T, root, certDir string, args ...string) (sec *server, relay *linkemu.Relay, backend string) {
	t.Helper()
	backend = freeUDPAddr(t)
	relay, err := linkemu.New(backend, linkemu.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	sec = startServer(t, "kwik-secondary", root, certDir, append([]string{"--listen", backend, "--advertise", relay.Addr()}, args...)...)
	return sec, relay, backend
}

// TestScenarioPathCutMidCopy puts a link-emulator relay in front of a
// secondary and cuts it after about a quarter of a large file was read: the
// copy finishes byte-identical from the primary.
func TestScenarioPathCutMidCopy(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	const size = 64 << 20
	writeRandomFile(t, filepath.Join(root, "big.bin"), size, 7)
	certDir := certs(t)

	_, relay, _ := startRelayedSecondary(t, root, certDir)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144", "--secondary", relay.Addr())
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", "30s")

	f, err := os.Open(filepath.Join(m.dir, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size/4)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("first quarter: %v", err)
	}
	// Before the cut the relayed path carried data.
	requireEveryPathDelivered(t, m, 2)
	var secBefore uint64
	for _, path := range m.status(t).Paths {
		if path.Remote == relay.Addr() {
			secBefore = path.BytesReceived
		}
	}
	if secBefore == 0 {
		t.Fatalf("no path with remote %s among %+v", relay.Addr(), m.status(t).Paths)
	}

	relay.Cut(true)
	cutAt := time.Now()
	if st := m.status(t); st.FS.BytesFetched >= size {
		t.Fatalf("all of big.bin (%d bytes) was fetched before the cut: the cut is not mid-copy", st.FS.BytesFetched)
	}
	dst := filepath.Join(t.TempDir(), "big.bin")
	run(t, 3*time.Minute, "cp", filepath.Join(m.dir, "big.bin"), dst)
	t.Logf("copy after the cut took %v; relay stats %+v", time.Since(cutAt), relay.Stats())
	if want, got := fileSHA(t, filepath.Join(root, "big.bin")), fileSHA(t, dst); want != got {
		t.Fatalf("big.bin copied across a path cut: sha %x, want %x", got[:6], want[:6])
	}
	if st := relay.Stats(); st.ClientToServer.DroppedCut.Packets == 0 && st.ServerToClient.DroppedCut.Packets == 0 {
		t.Errorf("the relay dropped nothing while cut: the cut did not happen mid-copy (%+v)", st)
	}
}

// TestScenarioSecondaryMissingFile serves the tree from a primary and a
// secondary whose root lacks one large file: every copy is byte-identical
// and both paths delivered data.
func TestScenarioSecondaryMissingFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "gone.bin"), 16<<20, 11)
	writeRandomFile(t, filepath.Join(root, "kept.bin"), 16<<20, 12)
	writeRandomFile(t, filepath.Join(root, "sub", "small.txt"), 5000, 13)
	secRoot := mirror(t, root)
	if err := os.Remove(filepath.Join(secRoot, "gone.bin")); err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, secRoot)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", "30s")
	// The missing file first, while the secondary still gets work for it.
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, 2*time.Minute, "cp", filepath.Join(m.dir, "gone.bin"), filepath.Join(dst, "gone.bin"))
	// The secondary has no bytes of gone.bin to give: everything came from
	// the primary.
	if paths := m.status(t).Paths; len(paths) != 2 || paths[1].BytesReceived != 0 {
		t.Errorf("after reading only gone.bin: paths %+v, want 2 with nothing from the secondary", paths)
	}
	run(t, 2*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	requireEveryPathDelivered(t, m, 2)
	st := m.status(t)
	t.Logf("paths %+v; fs fetch errors %d; client corrupt chunks %d", st.Paths, st.FS.FetchErrors, st.Transfer.CorruptChunks)
}

// TestScenarioSecondaryCorruptFile serves the tree from a primary and a
// secondary whose copy of a large file has the same size and mtime but
// flipped bytes in several chunks: the reader gets the primary's bytes.
func TestScenarioSecondaryCorruptFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "bad.bin"), 16<<20, 21)
	writeRandomFile(t, filepath.Join(root, "good.bin"), 16<<20, 22)
	secRoot := mirror(t, root)
	bad := filepath.Join(secRoot, "bad.bin")
	info, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte in every chunk: whatever the secondary is given of this
	// file, it is wrong.
	for off := 1000; off < len(data); off += chunkSize {
		data[off] ^= 0xff
	}
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bad, info.ModTime(), info.ModTime()); err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, bad) == fileSHA(t, filepath.Join(root, "bad.bin")) {
		t.Fatal("the corrupted copy equals the original")
	}

	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, secRoot)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", "30s")
	dst := filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	// The corrupted file first, while the secondary still gets work for it.
	run(t, 2*time.Minute, "cp", filepath.Join(m.dir, "bad.bin"), filepath.Join(dst, "bad.bin"))
	run(t, 2*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	requireEveryPathDelivered(t, m, 2)
	st := m.status(t)
	t.Logf("paths %+v; fs fetch errors %d; client corrupt chunks %d", st.Paths, st.FS.FetchErrors, st.Transfer.CorruptChunks)
	// The secondary was given work on bad.bin and the chunk hash caught it.
	if st.Transfer.CorruptChunks == 0 {
		t.Errorf("no corrupt chunk counted: the corrupted copy was never served, the scenario tested nothing")
	}
}
