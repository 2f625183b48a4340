package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
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
				c.name, files, fs.ListCalls, fs.ManifestCalls, fs.StatCalls, fs.FilesCalls, fs.FilesManifests, fs.FetchCalls, st.Transfer.Requests)
			if n := fs.ManifestCalls + fs.FetchCalls; n > files/100 {
				t.Errorf("%d manifest calls and READs for %d files, want at most %d", n, files, files/100)
			}
			if fs.ListCalls > smallDirs+1 {
				t.Errorf("%d listings of %d directories", fs.ListCalls, smallDirs+1)
			}
			if fs.FilesCalls > 5*smallDirs {
				t.Errorf("%d FILES calls for %d directories, want at most %d", fs.FilesCalls, smallDirs, 5*smallDirs)
			}
			if st.Transfer.Requests > files/10 {
				t.Errorf("%d requests for %d files, want at most %d", st.Transfer.Requests, files, files/10)
			}
		})
	}
}

// TestPrefetchSmallFilesBatched prefetches the tree of 1,000 small files
// with `kwikfs prefetch` and checks, from the daemon's counters, that the
// files came in FILES batches: one per directory (a directory's files fit
// one request's budget), no manifest call and no READ, and the job's
// fetched bytes are exactly the tree's. A cp -r of the mount afterwards is
// identical and costs no request at all.
func TestPrefetchSmallFilesBatched(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeSmallTree(t, root)
	const files = smallDirs * smallPerDir
	var size int64
	if err := filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		size += info.Size()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	out := run(t, 2*time.Minute, bin("kwikfs"), "prefetch", m.dir)
	if !strings.Contains(out, fmt.Sprintf("%d/%d files", files, files)) {
		t.Errorf("kwikfs prefetch output lacks %d/%d files:\n%s", files, files, out)
	}
	st := m.status(t)
	fs := st.FS
	t.Logf("prefetch of %d files: %d list, %d manifest, %d stat, %d FILES calls (%d manifests, %d chunks), %d READs; %d requests in all",
		files, fs.ListCalls, fs.ManifestCalls, fs.StatCalls, fs.FilesCalls, fs.FilesManifests, fs.FilesChunks, fs.FetchCalls, st.Transfer.Requests)
	if len(st.Prefetch) != 1 || st.Prefetch[0].State != control.JobDone || st.Prefetch[0].FilesDone != files || st.Prefetch[0].BytesFetched != size {
		t.Errorf("prefetch jobs %+v; want one done, %d files, %d bytes fetched", st.Prefetch, files, size)
	}
	if fs.ManifestCalls != 0 || fs.FetchCalls != 0 {
		t.Errorf("%d manifest calls and %d READs, want none: every file is in a FILES reply", fs.ManifestCalls, fs.FetchCalls)
	}
	if fs.FilesCalls != smallDirs || fs.FilesManifests != files {
		t.Errorf("%d FILES calls bringing %d manifests, want %d and %d", fs.FilesCalls, fs.FilesManifests, smallDirs, files)
	}
	if fs.BytesFetched != size || fs.FilesBytes != size {
		t.Errorf("fetched %d bytes (%d in FILES replies), want the tree's %d", fs.BytesFetched, fs.FilesBytes, size)
	}
	// Client.Requests counts the PATH_REPORT that each status makes too.
	calls := func(fs control.FS) int64 {
		return fs.ListCalls + fs.ManifestCalls + fs.StatCalls + fs.FilesCalls + fs.FetchCalls
	}
	before := calls(fs)
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 2*time.Minute, "cp", "-r", m.dir, dst)
	compareTrees(t, root, dst, compareOptions{})
	if after := calls(m.status(t).FS); after != before {
		t.Errorf("cp -r after the prefetch made %d calls to the server, want none", after-before)
	}
}
