package transfer_test

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
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// randomData returns n deterministic pseudo-random bytes.
func randomData(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// setup starts a server on a fresh root with the given chunk size and
// returns the root, the server and a client of it.
func setup(t *testing.T, chunkSize uint32) (string, *servertest.Server, *transfer.Client) {
	t.Helper()
	return setupCatalog(t, server.CatalogOptions{ChunkSize: chunkSize})
}

// setupCatalog is setup with the given catalog options.
func setupCatalog(t *testing.T, co server.CatalogOptions) (string, *servertest.Server, *transfer.Client) {
	t.Helper()
	root := t.TempDir()
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: co})
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{
		Config:        srv.ClientConfig(),
		RedialBackoff: transfer.RedialBackoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	t.Cleanup(func() { c.Close() })
	return root, srv, c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var mtime0 = time.Date(2021, 3, 4, 5, 6, 7, 890123456, time.UTC)

func TestClientOperations(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(5*cs+100, 1)
	writeFile(t, filepath.Join(root, "d", "f.bin"), data, 0o640, mtime0)
	writeFile(t, filepath.Join(root, "d", "g.txt"), []byte("g"), 0o644, mtime0)
	if err := os.Symlink("f.bin", filepath.Join(root, "d", "l")); err != nil {
		t.Fatal(err)
	}

	a, err := c.Stat(ctx, "d/f.bin")
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Attr{Mode: transfer.ModeRegular | 0o640, Size: int64(len(data)), MtimeNs: mtime0.UnixNano()}); a != want {
		t.Fatalf("Stat = %+v, want %+v", a, want)
	}
	if a, err := c.Stat(ctx, ""); err != nil || !a.IsDir() {
		t.Fatalf("Stat(root) = %+v, %v", a, err)
	}
	if _, err := c.Stat(ctx, "d/missing"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Stat(missing) = %v, want ErrNotFound", err)
	}

	entries, err := c.List(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(entries, func(x, y transfer.Attr) int { return bytes.Compare([]byte(x.Name), []byte(y.Name)) })
	want := []transfer.Attr{
		{Name: "f.bin", Mode: transfer.ModeRegular | 0o640, Size: int64(len(data)), MtimeNs: mtime0.UnixNano()},
		{Name: "g.txt", Mode: transfer.ModeRegular | 0o644, Size: 1, MtimeNs: mtime0.UnixNano()},
		{Name: "l", Mode: transfer.ModeSymlink | 0o777, Size: 5, MtimeNs: entries[1].MtimeNs, Target: "f.bin"},
	}
	if len(entries) == 3 {
		want[2].MtimeNs = entries[2].MtimeNs
	}
	if !slices.Equal(entries, want) {
		t.Fatalf("List = %+v\nwant %+v", entries, want)
	}
	if _, err := c.List(ctx, "d/g.txt"); !errors.Is(err, transfer.ErrNotDir) {
		t.Fatalf("List(file) = %v, want ErrNotDir", err)
	}

	if target, err := c.Readlink(ctx, "d/l"); err != nil || target != "f.bin" {
		t.Fatalf("Readlink = %q, %v", target, err)
	}

	m, err := c.Manifest(ctx, "d/l")
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(len(data)) || m.ChunkSize != cs || m.NumChunks() != 6 || m.Mode != transfer.ModeRegular|0o640 || m.MtimeNs != mtime0.UnixNano() {
		t.Fatalf("Manifest = size %d chunk %d n %d mode %o mtime %d", m.Size, m.ChunkSize, m.NumChunks(), m.Mode, m.MtimeNs)
	}
	for i := range m.Hashes {
		off := m.ChunkOffset(i)
		if m.Hashes[i] != m.Sum(data[off:off+int64(m.ChunkLen(i))]) {
			t.Fatalf("hash of chunk %d differs", i)
		}
	}
	if _, err := c.Manifest(ctx, "d"); !errors.Is(err, transfer.ErrIsDir) {
		t.Fatalf("Manifest(dir) = %v, want ErrIsDir", err)
	}

	var got []byte
	var idx []int
	_, err = c.ReadChunks(ctx, "d/f.bin", m, 2, 4, func(i int, chunk []byte) error {
		idx = append(idx, i)
		got = append(got, chunk...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idx, []int{2, 3, 4, 5}) || !bytes.Equal(got, data[2*cs:]) {
		t.Fatalf("ReadChunks delivered chunks %v, %d bytes (equal %v)", idx, len(got), bytes.Equal(got, data[2*cs:]))
	}
	if s := c.Stats(); s.Chunks != 4 || s.DataBytes != int64(len(data)-2*cs) || s.Dials != 1 || s.Redials != 0 {
		t.Fatalf("client stats %+v", s)
	}
	if _, err := c.ReadChunks(ctx, "d/f.bin", m, 5, 2, func(int, []byte) error { return nil }); !errors.Is(err, transfer.ErrBadRequest) {
		t.Fatalf("ReadChunks beyond the end = %v, want ErrBadRequest", err)
	}
}

func TestReadChunksVerifiesEveryChunk(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(4*cs, 2)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	// A manifest whose third hash is wrong (the version still names the
	// server's content): chunks 0 and 1 are delivered, chunk 2 is not.
	bad := *m
	bad.Hashes = slices.Clone(m.Hashes)
	bad.Hashes[2][0] ^= 1
	var delivered []int
	_, err = c.ReadChunks(ctx, "f", &bad, 0, 4, func(i int, _ []byte) error {
		delivered = append(delivered, i)
		return nil
	})
	if !errors.Is(err, transfer.ErrCorrupt) || !slices.Equal(delivered, []int{0, 1}) {
		t.Fatalf("ReadChunks = %v, delivered %v; want ErrCorrupt after [0 1]", err, delivered)
	}
	if s := c.Stats(); s.CorruptChunks != 1 || s.Chunks != 2 {
		t.Fatalf("stats %+v", s)
	}
	// deliver's error ends the call with that error.
	stop := errors.New("stop")
	if _, err := c.ReadChunks(ctx, "f", m, 0, 4, func(int, []byte) error { return stop }); err != stop {
		t.Fatalf("ReadChunks = %v, want deliver's error", err)
	}
	// The session is still usable.
	if _, err := c.Stat(ctx, "f"); err != nil {
		t.Fatal(err)
	}
}

func TestReadChunksDeliversBuffersToKeep(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(5*cs+100, 3)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	// Keep every chunk as delivered, across two calls: none may be
	// overwritten by a later one.
	var kept [][]byte
	keep := func(i int, chunk []byte) error {
		kept = append(kept, chunk)
		return nil
	}
	if _, err := c.ReadChunks(ctx, "f", m, 0, 3, keep); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", m, 3, 3, keep); err != nil {
		t.Fatal(err)
	}
	if got := bytes.Join(kept, nil); len(kept) != 6 || !bytes.Equal(got, data) {
		t.Fatalf("kept %d chunks, %d bytes, equal %v; want 6, %d, true", len(kept), len(got), bytes.Equal(got, data), len(data))
	}
	if !c.VerifiesChunks() {
		t.Fatal("VerifiesChunks = false")
	}
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestDownloadFileSizes(t *testing.T) {
	const cs = transfer.DefaultChunkSize
	root, _, c := setup(t, 0)
	ctx := testCtx(t)
	dst := t.TempDir()
	sizes := []int{0, 1, cs - 1, cs, cs + 1, 5*cs + cs/2 + 7}
	for i, size := range sizes {
		data := randomData(size, byte(10+i))
		name := filepath.Join("files", "f"+string(rune('a'+i)))
		mode := os.FileMode(0o600 + 0o10*os.FileMode(i%5))
		mt := mtime0.Add(time.Duration(i) * time.Hour)
		writeFile(t, filepath.Join(root, name), data, mode, mt)
		local := filepath.Join(dst, filepath.Base(name))
		var last [2]int64
		calls := 0
		if err := c.DownloadFile(ctx, filepath.ToSlash(name), local, func(done, total int64) { last = [2]int64{done, total}; calls++ }); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if fileSHA(t, local) != sha256.Sum256(data) {
			t.Fatalf("size %d: content differs", size)
		}
		fi, err := os.Stat(local)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode || !fi.ModTime().Equal(mt) || fi.Size() != int64(size) {
			t.Fatalf("size %d: mode %v mtime %v size %d; want %v %v", size, fi.Mode(), fi.ModTime(), fi.Size(), mode, mt)
		}
		if _, err := os.Stat(local + transfer.PartSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("size %d: part file left: %v", size, err)
		}
		wantCalls := 1 + (size+cs-1)/cs
		if last != [2]int64{int64(size), int64(size)} || calls != wantCalls {
			t.Fatalf("size %d: last progress %v after %d calls, want %d calls", size, last, calls, wantCalls)
		}
	}
	var total int64
	for _, s := range sizes {
		total += int64(s)
	}
	if s := c.Stats(); s.DataBytes != total {
		t.Fatalf("DataBytes = %d, want %d", s.DataBytes, total)
	}
}

// TestDownloadFileWithEitherHashAlg: a primary computes BLAKE3 manifests
// by default and SHA-256 ones when told; the client verifies every chunk
// with the manifest's algorithm, and a manifest of the other algorithm
// names another version.
func TestDownloadFileWithEitherHashAlg(t *testing.T) {
	const cs = transfer.MinChunkSize
	tests := []struct {
		hash      string
		alg       transfer.HashAlg
		otherAlg  transfer.HashAlg
		otherHash func([]byte) [32]byte
	}{
		{"", transfer.BLAKE3, transfer.SHA256, sha256.Sum256},
		{"blake3", transfer.BLAKE3, transfer.SHA256, sha256.Sum256},
		{"sha256", transfer.SHA256, transfer.BLAKE3, blake3.Sum256},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.hash), func(t *testing.T) {
			root, _, c := setupCatalog(t, server.CatalogOptions{ChunkSize: cs, Hash: tt.hash})
			ctx := testCtx(t)
			data := randomData(6*cs+123, 9)
			writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
			m, err := c.Manifest(ctx, "f")
			if err != nil {
				t.Fatal(err)
			}
			if m.Alg != tt.alg || m.NumChunks() != 7 {
				t.Fatalf("manifest alg %v with %d chunks, want %v with 7", m.Alg, m.NumChunks(), tt.alg)
			}
			local := filepath.Join(t.TempDir(), "f")
			if err := c.DownloadFile(ctx, "f", local, nil); err != nil {
				t.Fatal(err)
			}
			if fileSHA(t, local) != sha256.Sum256(data) {
				t.Fatal("content differs")
			}
			if s := c.Stats(); s.Chunks != 7 || s.CorruptChunks != 0 {
				t.Fatalf("client stats %+v; want 7 chunks, none corrupt", s)
			}

			// One chunk hash damaged, the version left alone (the server
			// accepts it): chunks 0 to 2 are delivered, chunk 3 fails.
			bad := *m
			bad.Hashes = slices.Clone(m.Hashes)
			bad.Hashes[3][31] ^= 1
			var delivered []int
			_, err = c.ReadChunks(ctx, "f", &bad, 0, 7, func(i int, _ []byte) error {
				delivered = append(delivered, i)
				return nil
			})
			if !errors.Is(err, transfer.ErrCorrupt) || !slices.Equal(delivered, []int{0, 1, 2}) {
				t.Fatalf("ReadChunks = %v, delivered %v; want ErrCorrupt after [0 1 2]", err, delivered)
			}

			// The manifest of the same bytes under the other algorithm is
			// valid, but another version: the server answers ErrStale.
			other := transfer.Manifest{Size: m.Size, MtimeNs: m.MtimeNs, Mode: m.Mode, ChunkSize: m.ChunkSize, Alg: tt.otherAlg}
			for i := 0; i < m.NumChunks(); i++ {
				off := m.ChunkOffset(i)
				other.Hashes = append(other.Hashes, tt.otherHash(data[off:off+int64(m.ChunkLen(i))]))
			}
			other.Version = transfer.ComputeVersion(other.Alg, other.Size, other.ChunkSize, other.Hashes)
			if err := other.Check(); err != nil || other.Version == m.Version {
				t.Fatalf("other manifest: check %v, same version %v", err, other.Version == m.Version)
			}
			_, err = c.ReadChunks(ctx, "f", &other, 0, 1, func(int, []byte) error { return nil })
			if !errors.Is(err, transfer.ErrStale) {
				t.Fatalf("ReadChunks with the %v manifest = %v, want ErrStale", tt.otherAlg, err)
			}
		})
	}
}

func TestDownloadFileResumesPart(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, srv, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(8*cs+10, 3) // 9 chunks
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	local := filepath.Join(t.TempDir(), "f")
	// An interrupted earlier attempt: chunks 0 to 3 and half of chunk 4
	// written, chunk 1 damaged.
	part := bytes.Clone(data[:4*cs+cs/2])
	part[cs+7] ^= 0xff
	if err := os.WriteFile(local+transfer.PartSuffix, part, 0o600); err != nil {
		t.Fatal(err)
	}
	var first int64 = -1
	err := c.DownloadFile(ctx, "f", local, func(done, total int64) {
		if first < 0 {
			first = done
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, local) != sha256.Sum256(data) {
		t.Fatal("content differs")
	}
	if first != 3*cs {
		t.Fatalf("first progress %d, want %d (chunks 0, 2, 3 kept)", first, 3*cs)
	}
	// Fetched: chunk 1, chunks 4 to 8.
	s := c.Stats()
	if s.Chunks != 6 || s.DataBytes != int64(len(data)-3*cs) || s.Requests != 3 {
		t.Fatalf("client stats %+v; want 6 chunks, %d bytes, 3 requests", s, len(data)-3*cs)
	}
	if ps := srv.Primary.Stats(); ps.DataBytes != s.DataBytes || ps.Requests[transfer.OpRead] != 2 {
		t.Fatalf("server stats %+v", ps)
	}
}

func TestDownloadFileCancel(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	data := randomData(40*cs, 4)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	local := filepath.Join(t.TempDir(), "f")
	ctx, cancel := context.WithCancel(testCtx(t))
	err := c.DownloadFile(ctx, "f", local, func(done, total int64) {
		if done >= 3*cs {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("DownloadFile = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(local); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destination exists after cancel: %v", err)
	}
	fetched := c.Stats().Chunks
	if fetched < 3 || fetched >= 40 {
		t.Fatalf("%d chunks fetched before the cancel took effect", fetched)
	}
	// The next attempt keeps what the first one wrote.
	if err := c.DownloadFile(testCtx(t), "f", local, nil); err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, local) != sha256.Sum256(data) {
		t.Fatal("content differs")
	}
	if got := c.Stats().Chunks; got > 40+fetched-3 {
		t.Fatalf("%d chunks fetched in all; the resume refetched kept chunks", got)
	}
}

func TestClientRefusesPathsOutsideRoot(t *testing.T) {
	root, srv, c := setup(t, transfer.MinChunkSize)
	ctx := testCtx(t)
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), []byte("secret"), 0o644, mtime0)
	for link, target := range map[string]string{
		"etc":    "/etc",
		"out":    outside,
		"chain1": "chain2",
		"chain2": "sub/../../" + filepath.Base(outside),
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/passwd", "out/secret", "chain1/secret"} {
		if _, err := c.Stat(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("Stat(%q) = %v", p, err)
		}
		if _, err := c.Manifest(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("Manifest(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"etc", "out", "chain1"} {
		if _, err := c.List(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("List(%q) = %v", p, err)
		}
	}
	if got := srv.Primary.Stats().OutsideRoot; got != 9 {
		t.Errorf("server counted %d refusals, want 9", got)
	}
	// Lexically bad paths are refused before anything is sent.
	before := c.Stats().Requests
	for _, p := range []string{"../x", "/etc/passwd", "a/../../x", "a\x00b"} {
		if _, err := c.Stat(ctx, p); !errors.Is(err, transfer.ErrOutsideRoot) {
			t.Errorf("Stat(%q) = %v", p, err)
		}
	}
	if c.Stats().Requests != before {
		t.Error("a lexically bad path was sent")
	}
	if c.Stats().DataBytes != 0 {
		t.Error("data received")
	}
}

func TestReadAfterChangeIsStale(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, srv, c := setup(t, cs)
	ctx := testCtx(t)
	p := filepath.Join(root, "f")
	data := randomData(3*cs, 5)
	writeFile(t, p, data, 0o644, mtime0)
	m1, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	// Same size, same content, new mtime: the manifest is recomputed and
	// keeps its version.
	writeFile(t, p, data, 0o644, mtime0.Add(time.Second))
	m2, err := c.Manifest(ctx, "f")
	if err != nil || m2.Version != m1.Version || m2.MtimeNs == m1.MtimeNs {
		t.Fatalf("after touch: %v, version equal %v", err, m2.Version == m1.Version)
	}
	// New content of another size.
	data2 := append(bytes.Clone(data), 'x')
	data2[0] ^= 1
	writeFile(t, p, data2, 0o644, mtime0.Add(2*time.Second))
	_, err = c.ReadChunks(ctx, "f", m1, 0, 1, func(int, []byte) error { t.Error("stale chunk delivered"); return nil })
	if !errors.Is(err, transfer.ErrStale) {
		t.Fatalf("ReadChunks(old version) = %v, want ErrStale", err)
	}
	m3, err := c.Manifest(ctx, "f")
	if err != nil || m3.Version == m1.Version || m3.Size != int64(len(data2)) {
		t.Fatalf("after change: %+v, %v", m3, err)
	}
	if got := srv.Primary.Catalog().Stats().ManifestsComputed; got != 3 {
		t.Fatalf("ManifestsComputed = %d, want 3", got)
	}
	local := filepath.Join(t.TempDir(), "f")
	if err := c.DownloadFile(ctx, "f", local, nil); err != nil || fileSHA(t, local) != sha256.Sum256(data2) {
		t.Fatalf("DownloadFile after change: %v", err)
	}
}

func TestClientServerGoneAndBack(t *testing.T) {
	root, srv, c := setup(t, transfer.MinChunkSize)
	writeFile(t, filepath.Join(root, "f"), []byte("x"), 0o644, mtime0)
	if _, err := c.Stat(testCtx(t), "f"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	const wait = 700 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	_, err := c.Stat(ctx, "f")
	elapsed := time.Since(start)
	if !errors.Is(err, transfer.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat with the server gone = %v, want ErrUnavailable", err)
	}
	if elapsed > wait+2*time.Second {
		t.Fatalf("Stat returned %v after its deadline", elapsed-wait)
	}
	srv.Restart()
	a, err := c.Stat(testCtx(t), "f")
	if err != nil || a.Size != 1 {
		t.Fatalf("Stat after restart = %+v, %v", a, err)
	}
	if s := c.Stats(); s.Dials != 2 || s.Redials != 1 {
		t.Fatalf("stats %+v, want 1 redial", s)
	}
}

func TestClientClose(t *testing.T) {
	root, _, c := setup(t, transfer.MinChunkSize)
	writeFile(t, filepath.Join(root, "f"), []byte("x"), 0o644, mtime0)
	if _, err := c.Stat(testCtx(t), "f"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(testCtx(t), "f"); !errors.Is(err, transfer.ErrClientClosed) {
		t.Fatalf("Stat after Close = %v, want ErrClientClosed", err)
	}
}

// BenchmarkDownloadFile measures DownloadFile of a 64 MiB file over real
// kwik on 127.0.0.1 with the default chunk size.
func BenchmarkDownloadFile(b *testing.B) {
	const size = 64 << 20
	root := b.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), randomData(size, 7), 0o644); err != nil {
		b.Fatal(err)
	}
	srv := servertest.Start(b, root, nil)
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Manifest(ctx, "f"); err != nil { // hash once, outside the timing
		b.Fatal(err)
	}
	dst := b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		local := filepath.Join(dst, "f")
		if err := c.DownloadFile(ctx, "f", local, nil); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(local); err != nil {
			b.Fatal(err)
		}
	}
}
