package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// Small-file tree of TestSmallFilesFewRequests: smallDirs directories of
// smallPerDir files each.
const (
	smallDirs   = 10
	smallPerDir = 100
)

// makeSmallTree writes smallDirs directories of smallPerDir files of 0 to
// 8 KiB (a few empty) with assorted modes and mtimes, and a symlink per
// directory.
func makeSmallTree(t *testing.T, root string) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 11))
	modes := []os.FileMode{0o644, 0o600, 0o640, 0o755}
	for d := range smallDirs {
		dir := filepath.Join(root, fmt.Sprintf("dir %02d ü", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range smallPerDir {
			size := r.IntN(8 << 10)
			if i%25 == 0 {
				size = 0
			}
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			p := filepath.Join(dir, fmt.Sprintf("f%03d", i))
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, modes[i%len(modes)]); err != nil {
				t.Fatal(err)
			}
			mt := time.Unix(1600000000+int64(d*1000+i), int64(i)*1000)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("f001", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSmallFilesFewRequests copies a tree of 1,000 small files with cp -r,
// rsync -a and tar, each through a fresh mount with a fresh cache, checks
// each copy (sha256 of every file; modes and mtimes for rsync and tar),
// and bounds the requests each copy cost, from the daemon's counters: the
// files are opened and read from FILES replies (open-ahead), so there is
// at most one manifest call or READ per 100 files (none is expected: a
// few stand for opens that beat their FILES reply), one listing per
// directory, at most 5 FILES calls per directory, and at most 0.1
// requests per file in all, against 2 or more per file (a manifest and a
// READ) without open-ahead.
func TestSmallFilesFewRequests(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeSmallTree(t, root)
	const files = smallDirs * smallPerDir
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	ca := filepath.Join(certDir, certgen.CAFile)
	copies := []struct {
		name string
		copy func(mnt, dst string)
		opts compareOptions
	}{
		{"cp -r", func(mnt, dst string) { run(t, 2*time.Minute, "cp", "-r", mnt, dst) }, compareOptions{}},
		{"rsync -a", func(mnt, dst string) { run(t, 2*time.Minute, "rsync", "-a", mnt+"/", dst+"/") }, compareOptions{modes: true, mtimes: true}},
		{"tar", func(mnt, dst string) {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			run(t, 2*time.Minute, "sh", "-c", `tar --format=posix -cf - -C "$1" . | tar -xf - -C "$2"`, "sh", mnt, dst)
		}, compareOptions{modes: true, mtimes: true}},
	}
	for _, c := range copies {
		t.Run(c.name, func(t *testing.T) {
			m := startMount(t, p.addr, ca, filepath.Join(t.TempDir(), "cache"))
			dst := filepath.Join(t.TempDir(), "copy")
			c.copy(m.dir, dst)
			compareTrees(t, root, dst, c.opts)
			st := m.status(t)
			fs := st.FS
			t.Logf("%s of %d files: %d list, %d manifest, %d stat, %d FILES calls (%d manifests), %d READs; %d requests in all",
				c.name, files, fs.ListCalls, fs.ManifestCalls, fs.StatCalls, fs.FilesCalls, fs.FilesManifests, fs.FetchCalls, st.Client.Requests)
			if n := fs.ManifestCalls + fs.FetchCalls; n > files/100 {
				t.Errorf("%d manifest calls and READs for %d files, want at most %d", n, files, files/100)
			}
			if fs.ListCalls > smallDirs+1 {
				t.Errorf("%d listings of %d directories", fs.ListCalls, smallDirs+1)
			}
			if fs.FilesCalls > 5*smallDirs {
				t.Errorf("%d FILES calls for %d directories, want at most %d", fs.FilesCalls, smallDirs, 5*smallDirs)
			}
			if st.Client.Requests > files/10 {
				t.Errorf("%d requests for %d files, want at most %d", st.Client.Requests, files, files/10)
			}
		})
	}
}
