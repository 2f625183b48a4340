package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/kwikfs/kwikfs/transfer"
)

const testChunk = transfer.MinChunkSize

// testTree creates a root with files, directories and symlinks (some leading
// out of the root) and returns its path and the content of "dir/big.bin".
//
//	root/
//	  hello.txt            "hello, world\n" (0640, mtime 2020-01-02)
//	  empty
//	  dir/big.bin          10 chunks + 17 bytes of random data
//	  dir/sub/
//	  fifo                 (skipped)
//	  link-in -> dir/big.bin
//	  link-dir -> dir
//	  etc -> /etc
//	  up -> ../outside
//	  chain1 -> chain2, chain2 -> dir/../../outside
//	outside/secret          (next to root)
func testTree(t *testing.T) (string, []byte) {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "dir", "sub"), 0o755))
	must(os.MkdirAll(filepath.Join(base, "outside"), 0o755))
	must(os.WriteFile(filepath.Join(base, "outside", "secret"), []byte("secret"), 0o644))
	must(os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello, world\n"), 0o640))
	must(os.Chmod(filepath.Join(root, "hello.txt"), 0o640))
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	must(os.Chtimes(filepath.Join(root, "hello.txt"), mtime, mtime))
	must(os.WriteFile(filepath.Join(root, "empty"), nil, 0o644))
	big := make([]byte, 10*testChunk+17)
	rand.NewChaCha8([32]byte{1}).Read(big)
	must(os.WriteFile(filepath.Join(root, "dir", "big.bin"), big, 0o644))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	must(os.Symlink("dir/big.bin", filepath.Join(root, "link-in")))
	must(os.Symlink("dir", filepath.Join(root, "link-dir")))
	must(os.Symlink("/etc", filepath.Join(root, "etc")))
	must(os.Symlink("../outside", filepath.Join(root, "up")))
	must(os.Symlink("chain2", filepath.Join(root, "chain1")))
	must(os.Symlink("dir/../../outside", filepath.Join(root, "chain2")))
	return root, big
}

func newTestCatalog(t *testing.T, root string) *Catalog {
	t.Helper()
	c, err := NewCatalog(root, &CatalogOptions{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCatalogStat(t *testing.T) {
	root, big := testTree(t)
	c := newTestCatalog(t, root)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC).UnixNano()
	tests := []struct {
		path string
		want transfer.Attr
		err  error
	}{
		{"hello.txt", transfer.Attr{Mode: transfer.ModeRegular | 0o640, Size: 13, MtimeNs: mtime}, nil},
		{"dir/big.bin", transfer.Attr{Mode: transfer.ModeRegular | 0o644, Size: int64(len(big))}, nil},
		{"link-in", transfer.Attr{Mode: transfer.ModeSymlink | 0o777, Size: 11, Target: "dir/big.bin"}, nil},
		{"etc", transfer.Attr{Mode: transfer.ModeSymlink | 0o777, Size: 4, Target: "/etc"}, nil},
		{"link-dir/big.bin", transfer.Attr{Mode: transfer.ModeRegular | 0o644, Size: int64(len(big))}, nil},
		{"fifo", transfer.Attr{}, transfer.ErrNotFound},
		{"missing", transfer.Attr{}, transfer.ErrNotFound},
		{"hello.txt/x", transfer.Attr{}, transfer.ErrNotDir},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := c.Stat(tt.path)
			if !errors.Is(err, tt.err) || tt.err == nil && err != nil {
				t.Fatalf("Stat = %v, want %v", err, tt.err)
			}
			if tt.err != nil {
				return
			}
			if tt.want.MtimeNs == 0 {
				tt.want.MtimeNs = got.MtimeNs
			}
			if got != tt.want {
				t.Fatalf("Stat = %+v, want %+v", got, tt.want)
			}
		})
	}
	a, err := c.Stat("")
	if err != nil || !a.IsDir() {
		t.Fatalf("Stat(root) = %+v, %v", a, err)
	}
}

func TestCatalogList(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	entries, err := c.List("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]transfer.Attr{}
	for _, e := range entries {
		names = append(names, e.Name)
		byName[e.Name] = e
	}
	slices.Sort(names)
	want := []string{"chain1", "chain2", "dir", "empty", "etc", "hello.txt", "link-dir", "link-in", "up"}
	if !slices.Equal(names, want) {
		t.Fatalf("List(root) names = %v, want %v", names, want)
	}
	if e := byName["up"]; !e.IsSymlink() || e.Target != "../outside" {
		t.Fatalf("symlink entry = %+v", e)
	}
	if e := byName["hello.txt"]; e.Mode != transfer.ModeRegular|0o640 || e.Size != 13 {
		t.Fatalf("file entry = %+v", e)
	}
	sub, err := c.List("link-dir")
	if err != nil || len(sub) != 2 {
		t.Fatalf("List(link-dir) = %+v, %v", sub, err)
	}
	if _, err := c.List("hello.txt"); !errors.Is(err, transfer.ErrNotDir) {
		t.Fatalf("List(file) = %v, want ErrNotDir", err)
	}
	empty, err := c.List("dir/sub")
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("List(empty dir) = %#v, %v", empty, err)
	}
}

func TestCatalogRefusesPathsOutsideRoot(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	ctx := context.Background()
	paths := []string{"../x", "/etc/passwd", "a/../../x", "a\x00b", "etc/passwd", "up/secret", "chain1/secret", "dir/../../outside/secret"}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			if _, err := c.Stat(p); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("Stat = %v", err)
			}
			if _, err := c.List(p); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("List = %v", err)
			}
			if _, err := c.Readlink(p); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("Readlink = %v", err)
			}
			if _, err := c.Manifest(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("Manifest = %v", err)
			}
			if _, err := c.Open(ctx, p, transfer.Hash{}); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("Open = %v", err)
			}
		})
	}
	// Following a symlink that leads out is refused too.
	for _, p := range []string{"etc", "up", "chain1"} {
		if _, err := c.List(p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("List(%q) = %v", p, err)
		}
		if _, err := c.Manifest(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("Manifest(%q) = %v", p, err)
		}
	}
}

func TestCatalogReadlink(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	if got, err := c.Readlink("chain2"); err != nil || got != "dir/../../outside" {
		t.Fatalf("Readlink = %q, %v", got, err)
	}
	if _, err := c.Readlink("hello.txt"); !errors.Is(err, transfer.ErrBadRequest) {
		t.Fatalf("Readlink(file) = %v, want ErrBadRequest", err)
	}
	if _, err := c.Readlink("nope"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Readlink(missing) = %v, want ErrNotFound", err)
	}
}

func TestCatalogManifestAndChunks(t *testing.T) {
	root, big := testTree(t)
	c := newTestCatalog(t, root)
	ctx := context.Background()
	m, err := c.Manifest(ctx, "link-in")
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(len(big)) || m.NumChunks() != 11 || m.Check() != nil {
		t.Fatalf("manifest size %d, %d chunks, check %v", m.Size, m.NumChunks(), m.Check())
	}
	for i := 0; i < m.NumChunks(); i++ {
		off := m.ChunkOffset(i)
		if err := m.Verify(i, big[off:off+int64(m.ChunkLen(i))]); err != nil {
			t.Fatal(err)
		}
	}
	f, err := c.Open(ctx, "dir/big.bin", m.Version)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := f.WriteChunks(ctx, &buf, 9, 2)
	if err != nil || n != int64(testChunk+17) || !bytes.Equal(buf.Bytes(), big[9*testChunk:]) {
		t.Fatalf("WriteChunks = %d, %v; bytes equal %v", n, err, bytes.Equal(buf.Bytes(), big[9*testChunk:]))
	}
	for _, r := range [][2]int{{0, 0}, {-1, 1}, {10, 2}, {11, 1}} {
		if _, err := f.WriteChunks(ctx, &buf, r[0], r[1]); !errors.Is(err, transfer.ErrBadRequest) {
			t.Errorf("WriteChunks(%d, %d) = %v, want ErrBadRequest", r[0], r[1], err)
		}
	}
	if _, err := c.Manifest(ctx, "dir"); !errors.Is(err, transfer.ErrIsDir) {
		t.Fatalf("Manifest(dir) = %v, want ErrIsDir", err)
	}
	if _, err := c.Manifest(ctx, "fifo"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Manifest(fifo) = %v, want ErrNotFound", err)
	}
	em, err := c.Manifest(ctx, "empty")
	if err != nil || em.NumChunks() != 0 || em.Version != transfer.ComputeVersion(transfer.BLAKE3, 0, testChunk, nil) {
		t.Fatalf("Manifest(empty) = %+v, %v", em, err)
	}
}

// TestCatalogManifestHashAlg: a catalog hashes chunks with BLAKE3 unless
// told "sha256", and refuses an algorithm it does not know.
func TestCatalogManifestHashAlg(t *testing.T) {
	root, big := testTree(t)
	tests := []struct {
		hash string
		alg  transfer.HashAlg
		sum  func([]byte) [32]byte
	}{
		{"", transfer.BLAKE3, blake3.Sum256},
		{"blake3", transfer.BLAKE3, blake3.Sum256},
		{"sha256", transfer.SHA256, sha256.Sum256},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.hash), func(t *testing.T) {
			c, err := NewCatalog(root, &CatalogOptions{ChunkSize: testChunk, Hash: tt.hash})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.HashAlg() != tt.alg {
				t.Fatalf("HashAlg = %v, want %v", c.HashAlg(), tt.alg)
			}
			m, err := c.Manifest(context.Background(), "dir/big.bin")
			if err != nil {
				t.Fatal(err)
			}
			if m.Alg != tt.alg || m.NumChunks() != 11 || m.Check() != nil {
				t.Fatalf("manifest alg %v, %d chunks, check %v", m.Alg, m.NumChunks(), m.Check())
			}
			for i := range m.Hashes {
				off := m.ChunkOffset(i)
				if want := tt.sum(big[off : off+int64(m.ChunkLen(i))]); m.Hashes[i] != want {
					t.Fatalf("chunk %d: hash %v, want %x", i, m.Hashes[i], want)
				}
			}
			if want := transfer.ComputeVersion(tt.alg, m.Size, m.ChunkSize, m.Hashes); m.Version != want {
				t.Fatalf("version %v, want %v", m.Version, want)
			}
		})
	}
	if _, err := NewCatalog(root, &CatalogOptions{Hash: "md5"}); err == nil {
		t.Fatal("NewCatalog with Hash md5 succeeded")
	}
}

func TestCatalogManifestComputedOnce(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	ctx := context.Background()
	var wg sync.WaitGroup
	versions := make([]transfer.Hash, 8)
	for i := range versions {
		wg.Go(func() {
			m, err := c.Manifest(ctx, "dir/big.bin")
			if err != nil {
				t.Error(err)
				return
			}
			versions[i] = m.Version
		})
	}
	wg.Wait()
	for _, v := range versions[1:] {
		if v != versions[0] {
			t.Fatalf("versions differ: %v", versions)
		}
	}
	if s := c.Stats(); s.ManifestsComputed != 1 {
		t.Fatalf("stats %+v, want exactly 1 computation", s)
	}
	if _, err := c.Manifest(ctx, "dir/big.bin"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.ManifestsComputed != 1 || s.ManifestCacheHits < 1 {
		t.Fatalf("stats %+v after a repeated lookup", s)
	}
}

func TestCatalogManifestRecomputedAfterChange(t *testing.T) {
	root, big := testTree(t)
	c := newTestCatalog(t, root)
	ctx := context.Background()
	p := filepath.Join(root, "dir", "big.bin")
	m1, err := c.Manifest(ctx, "dir/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	// Same size, new content and mtime.
	changed := bytes.Clone(big)
	changed[5] ^= 0xff
	if err := os.WriteFile(p, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Unix(0, m1.MtimeNs).Add(time.Second)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	m2, err := c.Manifest(ctx, "dir/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if m2.Version == m1.Version || m2.Hashes[0] == m1.Hashes[0] || m2.Hashes[1] != m1.Hashes[1] {
		t.Fatalf("manifest not recomputed after an mtime change")
	}
	if _, err := c.Open(ctx, "dir/big.bin", m1.Version); !errors.Is(err, transfer.ErrStale) {
		t.Fatalf("Open(old version) = %v, want ErrStale", err)
	}
	// New size, same mtime.
	if err := os.WriteFile(p, changed[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	m3, err := c.Manifest(ctx, "dir/big.bin")
	if err != nil || m3.Size != 100 || m3.NumChunks() != 1 {
		t.Fatalf("after a size change: %+v, %v", m3, err)
	}
	if s := c.Stats(); s.ManifestsComputed != 3 {
		t.Fatalf("ManifestsComputed = %d, want 3", s.ManifestsComputed)
	}
	// A chmod keeps the manifest but reports the new mode.
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	m4, err := c.Manifest(ctx, "dir/big.bin")
	if err != nil || m4.Mode != transfer.ModeRegular|0o600 || m4.Version != m3.Version || c.Stats().ManifestsComputed != 3 {
		t.Fatalf("after chmod: %+v, %v, stats %+v", m4, err, c.Stats())
	}
}

func TestCatalogManifestCanceled(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Manifest(ctx, "dir/big.bin"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Manifest(canceled) = %v", err)
	}
	if _, err := c.Manifest(context.Background(), "dir/big.bin"); err != nil {
		t.Fatalf("Manifest after a canceled one: %v", err)
	}
}

func TestManifestCacheBounds(t *testing.T) {
	m := &transfer.Manifest{Hashes: make([]transfer.Hash, 10)}
	cost := entryCost("f00", m)
	c := newManifestCache(3, 100*cost)
	for i := 0; i < 5; i++ {
		c.put(fmt.Sprintf("f%02d", i), manifestKey{size: 1}, m)
	}
	if c.len() != 3 || c.get("f00", manifestKey{size: 1}) != nil || c.get("f04", manifestKey{size: 1}) == nil {
		t.Fatalf("entry bound: len %d", c.len())
	}
	if c.get("f04", manifestKey{size: 2}) != nil {
		t.Fatal("get with another key returned a manifest")
	}
	c2 := newManifestCache(100, 2*cost)
	c2.put("f00", manifestKey{}, m)
	c2.put("f01", manifestKey{}, m)
	c2.get("f00", manifestKey{}) // f00 most recently used
	c2.put("f02", manifestKey{}, m)
	if c2.len() != 2 || c2.get("f01", manifestKey{}) != nil || c2.get("f00", manifestKey{}) == nil {
		t.Fatalf("byte bound: len %d", c2.len())
	}
	huge := &transfer.Manifest{Hashes: make([]transfer.Hash, 1000)}
	c2.put("huge", manifestKey{}, huge)
	if c2.get("huge", manifestKey{}) != nil {
		t.Fatal("a manifest beyond the byte bound was cached")
	}
}

// The MANIFEST reply of a file state is encoded once and then served from
// the cache; a chmod (a new manifest) encodes it anew.
func TestCatalogManifestReplyEncodedOnce(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	var first []byte
	for i := range 10 {
		b, err := c.manifestReply(t.Context(), "dir/big.bin", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = b
		} else if &b[0] != &first[0] {
			t.Fatalf("request %d got another copy of the reply", i)
		}
	}
	m, err := c.Manifest(t.Context(), "dir/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	want, err := transfer.EncodeReply(transfer.OpManifest, &transfer.Reply{Manifest: m})
	if err != nil || !bytes.Equal(first, want) {
		t.Fatalf("cached reply differs from EncodeReply's: %v", err)
	}
	s := c.Stats()
	if s.ManifestRepliesEncoded != 1 || s.ManifestReplyHits != 9 || s.ManifestsComputed != 1 {
		t.Fatalf("stats %+v, want 1 encoding, 9 reply hits, 1 manifest computed", s)
	}
	if s.CachedBytes != entryCost("dir/big.bin", m)+int64(len(first)) {
		t.Fatalf("cache holds %d bytes, want the manifest's %d and the reply's %d", s.CachedBytes, entryCost("dir/big.bin", m), len(first))
	}
	if err := os.Chmod(filepath.Join(root, "dir", "big.bin"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := c.manifestReply(t.Context(), "dir/big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := transfer.DecodeReply(transfer.OpManifest, b)
	if err != nil || r.Manifest.Mode != transfer.ModeRegular|0o600 || c.Stats().ManifestRepliesEncoded != 2 {
		t.Fatalf("after chmod: %+v, %v, stats %+v; want mode 0600 and a second encoding", r, err, c.Stats())
	}
}

// Requests arriving at once share one encoding.
func TestCatalogManifestReplyConcurrent(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	const n = 20
	var wg sync.WaitGroup
	replies := make([][]byte, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { replies[i], errs[i] = c.manifestReply(t.Context(), "dir/big.bin", nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !bytes.Equal(replies[i], replies[0]) {
			t.Fatalf("request %d: %v", i, errs[i])
		}
	}
	if s := c.Stats(); s.ManifestRepliesEncoded != 1 || s.ManifestReplyHits != n-1 || s.ManifestsComputed != 1 {
		t.Fatalf("stats %+v, want 1 encoding and %d reply hits", s, n-1)
	}
}

// Encoding a MANIFEST reply is charged its encodeCost.
func TestCatalogManifestReplyChargesBudget(t *testing.T) {
	root, _ := testTree(t)
	c := newTestCatalog(t, root)
	var waits atomic.Int64
	b := newBudget(1<<20, &waits)
	h := b.newHold()
	defer h.release()
	if _, err := c.manifestReply(t.Context(), "dir/big.bin", h); err != nil {
		t.Fatal(err)
	}
	// 11 chunks: 3 x (manifest header bound + 11 hashes).
	if want := int64(3 * (transfer.FilesCost(&transfer.Manifest{}, false) + 11*32)); h.n != want {
		t.Fatalf("encoding held %d bytes, want %d", h.n, want)
	}
	h2 := b.newHold()
	defer h2.release()
	if _, err := c.manifestReply(t.Context(), "dir/big.bin", h2); err != nil || h2.n != 0 {
		t.Fatalf("cached reply: %v, charged %d; want nothing charged", err, h2.n)
	}
}

// At most MaxConcurrentHashes manifests are computed at once; the others
// wait, as long as their context allows.
func TestCatalogHashingWaitsForSlot(t *testing.T) {
	root, _ := testTree(t)
	c, err := NewCatalog(root, &CatalogOptions{ChunkSize: testChunk, MaxConcurrentHashes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.hashing.Acquire(t.Context(), 1); err != nil { // a computation in progress
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Manifest(ctx, "dir/big.bin"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Manifest with no slot: %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Manifest(t.Context(), "dir/big.bin")
		done <- err
	}()
	for c.Stats().HashWaits < 2 {
		time.Sleep(time.Millisecond)
	}
	if s := c.Stats(); s.ManifestsComputed != 0 {
		t.Fatalf("stats %+v: computed without a slot", s)
	}
	c.hashing.Release(1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.ManifestsComputed != 1 || s.HashWaits != 2 {
		t.Fatalf("stats %+v, want 1 manifest computed after 2 waits", s)
	}
	if _, err := c.Manifest(t.Context(), "hello.txt"); err != nil || c.Stats().HashWaits != 2 {
		t.Fatalf("Manifest with a free slot: %v, stats %+v; want no wait", err, c.Stats())
	}
}

func TestManifestCacheBoundsWithReplies(t *testing.T) {
	m := &transfer.Manifest{Hashes: make([]transfer.Hash, 10)}
	cost := entryCost("f00", m)
	reply := make([]byte, 100)
	c := newManifestCache(100, 3*cost+100)
	for i := range 3 {
		c.put(fmt.Sprintf("f%02d", i), manifestKey{}, m)
	}
	if c.reply("f00", m) != nil {
		t.Fatal("a reply before one was set")
	}
	c.setReply("f02", &transfer.Manifest{}, reply) // another manifest than the entry's
	if c.reply("f02", m) != nil {
		t.Fatal("a reply set for another manifest was kept")
	}
	c.setReply("f02", m, reply)
	if n, bytes := c.size(); n != 3 || bytes != 3*cost+100 || c.reply("f02", m) == nil {
		t.Fatalf("cache of %d entries, %d bytes; want 3 and %d with the reply", n, bytes, 3*cost+100)
	}
	// A second reply does not fit: the least recently used entry goes.
	c.setReply("f01", m, reply)
	if n, bytes := c.size(); n != 2 || bytes != 2*cost+200 || c.get("f00", manifestKey{}) != nil {
		t.Fatalf("cache of %d entries, %d bytes; want f00 evicted, 2 and %d", n, bytes, 2*cost+200)
	}
	// A reply that would not fit with its manifest alone is not kept.
	c.put("f03", manifestKey{}, m)
	c.setReply("f03", m, make([]byte, 3*cost))
	if c.reply("f03", m) != nil {
		t.Fatal("a reply beyond the byte bound was cached")
	}
	if _, bytes := c.size(); bytes > 3*cost+100 {
		t.Fatalf("cache holds %d bytes, more than %d", bytes, 3*cost+100)
	}
}
