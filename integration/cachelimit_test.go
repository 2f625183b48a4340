package integration

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// badgerAllowance is the disk space the cache directory may take beyond
// --cache-size: Badger's own files (its write-ahead memtable file, value
// log, MANIFEST and key registry). The limit covers the chunks' segment
// files only; at this scale Badger writes a few hundred KiB (chunk records,
// stamps, manifests and listings), which ext4 allocates in whole blocks
// inside its sparse, preallocated files.
const badgerAllowance = 2 << 20

// duBytes returns what `du -s -B1 dir` reports: the disk space of the
// files under dir.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out := run(t, 30*time.Second, "du", "-s", "-B1", dir)
	n, err := strconv.ParseInt(strings.Fields(out)[0], 10, 64)
	if err != nil {
		t.Fatalf("du output %q: %v", out, err)
	}
	return n
}

// allocatedUnder returns the allocated bytes of the files under dir whose
// base name matches pattern.
func allocatedUnder(t *testing.T, dir, pattern string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if ok, _ := filepath.Match(pattern, d.Name()); !ok {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	return n
}

// TestCacheSizeLimit mounts with --cache-size 8M and copies a 40 MiB tree
// (256 KiB chunks, as the harness serves them) out of the mount, one file
// at a time. After every file the cache directory's disk space (du,
// Badger's files included) is at most 8 MiB plus badgerAllowance; the
// store reports evictions and never more than 8 MiB of chunks; and every
// copy is byte-identical.
func TestCacheSizeLimit(t *testing.T) {
	const limit = 8 << 20
	root := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(7, 8))
	var files []string
	write := func(rel string, n int) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	for i := range 12 {
		write(fmt.Sprintf("big/%02d.bin", i), 3<<20)
	}
	for i := range 16 {
		write(fmt.Sprintf("mid/%02d.bin", i), chunkSize+i*1000)
	}
	for i := range 40 {
		write(fmt.Sprintf("small/%02d.txt", i), 1+rng.IntN(3000))
	}
	total := treeDataBytes(t, root)

	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, p.addr, ca, cache, "--cache-size", "8M")
	dst := filepath.Join(t.TempDir(), "copy")

	var worst int64
	for _, rel := range files {
		copyFile(t, filepath.Join(m.dir, rel), filepath.Join(dst, rel))
		du := duBytes(t, cache)
		worst = max(worst, du)
		if du > limit+badgerAllowance {
			t.Fatalf("after copying %s: the cache takes %d bytes (du), over %d + %d", rel, du, limit, badgerAllowance)
		}
	}
	compareTrees(t, root, dst, compareOptions{})

	st := m.status(t)
	s := st.Store
	if s.Limit != limit || s.Evicted == 0 || s.DiskBytes > limit || s.OverLimit != 0 {
		t.Fatalf("store status = %+v; want Limit %d, evictions, DiskBytes within it", s, limit)
	}
	if st.FS.BytesFetched != total {
		t.Errorf("fetched %d bytes for a %d-byte tree copied once", st.FS.BytesFetched, total)
	}
	segs := allocatedUnder(t, filepath.Join(cache, "store", "segments"), "*.seg")
	t.Logf("copied %d MiB under --cache-size 8M: du of the cache at most %d bytes; now segments %d bytes (DiskBytes %d), "+
		"Badger and the rest %d bytes; %d chunks (%d bytes) evicted, %d holes punched, %d segments removed",
		total>>20, worst, segs, s.DiskBytes, duBytes(t, cache)-segs, s.Evicted, s.EvictedBytes, s.HolesPunched, s.SegmentsRemoved)
	m.unmount(t)
	if du := duBytes(t, cache); du > limit+badgerAllowance {
		t.Fatalf("after unmount: the cache takes %d bytes (du), over %d + %d", du, limit, badgerAllowance)
	}
}

// copyFile copies src to dst (creating dst's directory) with io.Copy.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
