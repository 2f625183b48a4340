package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// startCluster starts n secondaries mirroring root (the same directory) and
// a primary that delegates to them.
func startCluster(t *testing.T, root, certDir string, n int) (*primary, []*server) {
	t.Helper()
	var secs []*server
	var extra []string
	for range n {
		s := startServer(t, "kwik-secondary", root, certDir)
		secs = append(secs, s)
		extra = append(extra, "--secondary", s.addr)
	}
	extra = append(extra, "--chunk-size", "262144")
	return startPrimary(t, root, certDir, extra...), secs
}

// TestMultipathCopy copies the test tree out of a mount whose session has
// the primary and two secondaries: the copy is byte-identical and every path
// delivered file data.
func TestMultipathCopy(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 48<<20)
	certDir := certs(t)
	p, _ := startCluster(t, root, certDir, 2)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 5*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	st := m.status(t)
	if len(st.Paths) != 3 {
		t.Fatalf("session has %d paths, want 3 (primary + 2 secondaries): %+v", len(st.Paths), st.Paths)
	}
	for _, path := range st.Paths {
		if path.BytesReceived == 0 {
			t.Errorf("path %d (%s) delivered no data: the work was not shared", path.ID, path.Remote)
		}
	}
	if want := treeDataBytes(t, root); st.FS.BytesFetched != want {
		t.Errorf("bytes fetched %d, want exactly the tree's %d", st.FS.BytesFetched, want)
	}
}

// TestMultipathSecondaryKilled kills a secondary after a quarter of a large
// file was read, with one and with two secondaries: the copy completes
// byte-identical from the servers left.
func TestMultipathSecondaryKilled(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 96<<20)
	for _, nsec := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d secondaries", nsec), func(t *testing.T) {
			certDir := certs(t)
			p, secs := startCluster(t, root, certDir, nsec)
			m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
				"--fetch-timeout", "30s")
			f, err := os.Open(filepath.Join(m.dir, "big", "big.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 24<<20)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatalf("first quarter: %v", err)
			}
			secs[0].stop(t, syscall.SIGKILL, 10*time.Second)
			dst := filepath.Join(t.TempDir(), "big.bin")
			run(t, 3*time.Minute, "cp", filepath.Join(m.dir, "big", "big.bin"), dst)
			want, got := scanTree(t, filepath.Join(root, "big")), scanTree(t, filepath.Dir(dst))
			if want["big.bin"].sha != got["big.bin"].sha {
				t.Fatalf("big.bin copied after a secondary died differs from the source")
			}
		})
	}
}
