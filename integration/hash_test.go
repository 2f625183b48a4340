package integration

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// TestCopyFromSHA256Primary: a primary started with --hash sha256 (for
// clients that predate BLAKE3) serves a mount end to end. The copy is
// identical, and a remount on the same cache reads every chunk back from
// the store, verified with SHA-256, fetching nothing.
func TestCopyFromSHA256Primary(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 8<<20)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144", "--hash", "sha256")
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	out := t.TempDir()

	m := startMount(t, p.addr, ca, cache)
	run(t, 5*time.Minute, "cp", "-rp", m.dir, filepath.Join(out, "first"))
	compareTrees(t, root, filepath.Join(out, "first"), compareOptions{modes: true, mtimes: true})
	if st := m.status(t); st.FS.BytesFetched != treeDataBytes(t, root) || st.Store.Corrupt != 0 {
		t.Errorf("first copy: fetched %d bytes, %d corrupt chunks; want %d, 0", st.FS.BytesFetched, st.Store.Corrupt, treeDataBytes(t, root))
	}
	m.unmount(t)

	m2 := startMount(t, p.addr, ca, cache)
	run(t, 5*time.Minute, "cp", "-rp", m2.dir, filepath.Join(out, "again"))
	compareTrees(t, root, filepath.Join(out, "again"), compareOptions{modes: true, mtimes: true})
	if st := m2.status(t); st.FS.BytesFetched != 0 || st.Store.Corrupt != 0 || st.Store.Hits == 0 {
		t.Errorf("after remount: fetched %d bytes, %d corrupt chunks, %d store hits; want 0, 0, > 0", st.FS.BytesFetched, st.Store.Corrupt, st.Store.Hits)
	}
}

// TestCopyAfterPrimarySwitchesHash: a cache filled from a SHA-256 primary
// keeps serving when the primary comes back with BLAKE3 (its default) over
// the same tree. The new manifests name other versions and other chunk
// hashes, so every byte is fetched again, and verified with BLAKE3; no
// chunk is ever taken for corrupt.
func TestCopyAfterPrimarySwitchesHash(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 8<<20)
	want := treeDataBytes(t, root)
	certDir := certs(t)
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	out := t.TempDir()

	p := startPrimary(t, root, certDir, "--chunk-size", "262144", "--hash", "sha256")
	m := startMount(t, p.addr, ca, cache)
	run(t, 5*time.Minute, "cp", "-r", m.dir, filepath.Join(out, "sha256"))
	compareTrees(t, root, filepath.Join(out, "sha256"), compareOptions{})
	m.unmount(t)
	if err := p.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatalf("stop the SHA-256 primary: %v\n%s", err, p.Output())
	}

	p2 := startPrimary(t, root, certDir, "--chunk-size", "262144")
	m2 := startMount(t, p2.addr, ca, cache)
	run(t, 5*time.Minute, "cp", "-rp", m2.dir, filepath.Join(out, "blake3"))
	compareTrees(t, root, filepath.Join(out, "blake3"), compareOptions{modes: true, mtimes: true})
	if st := m2.status(t); st.FS.BytesFetched != want || st.Store.Corrupt != 0 {
		t.Errorf("after the switch: fetched %d bytes, %d corrupt chunks; want %d, 0", st.FS.BytesFetched, st.Store.Corrupt, want)
	}
}
