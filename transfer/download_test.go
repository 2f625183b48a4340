package transfer_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kwikfs/kwikfs/transfer"
)

// mapCache is a ChunkCache in a map, counting loads that hit.
type mapCache struct {
	mu     sync.Mutex
	chunks map[transfer.Hash][]byte // guarded by mu
	hits   int                      // guarded by mu
}

var _ transfer.ChunkCache = (*mapCache)(nil)

var errNotCached = errors.New("not cached")

func (c *mapCache) LoadChunk(sum transfer.Hash, alg transfer.HashAlg, buf []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.chunks[sum]
	if !ok {
		return nil, errNotCached
	}
	c.hits++
	return append(buf[:0], b...), nil
}

func (c *mapCache) StoreChunk(sum transfer.Hash, alg transfer.HashAlg, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.chunks[sum] = bytes.Clone(data)
	return nil
}

// TestDownloadFileWithCache: chunks the cache holds are not fetched (a
// damaged one is, and so is every other), every fetched chunk ends up in
// the cache, and a second download of the same content fetches nothing.
func TestDownloadFileWithCache(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(6*cs+10, 7) // 7 chunks
	writeFile(t, filepath.Join(root, "f"), data, 0o640, mtime0)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	cache := &mapCache{chunks: map[transfer.Hash][]byte{}}
	// Chunks 1 and 4 cached; chunk 5 cached under its hash but damaged.
	cache.chunks[m.Hashes[1]] = bytes.Clone(data[cs : 2*cs])
	cache.chunks[m.Hashes[4]] = bytes.Clone(data[4*cs : 5*cs])
	bad := bytes.Clone(data[5*cs : 6*cs])
	bad[3] ^= 1
	cache.chunks[m.Hashes[5]] = bad

	local := filepath.Join(t.TempDir(), "f")
	var calls [][2]int64
	_, err = c.DownloadFileWith(ctx, "f", local, &transfer.DownloadOptions{
		Cache:    cache,
		Progress: func(done, total int64) { calls = append(calls, [2]int64{done, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if fileSHA(t, local) != sha256.Sum256(data) {
		t.Fatal("content differs")
	}
	if fi, err := os.Stat(local); err != nil || fi.Mode() != 0o640 || !fi.ModTime().Equal(mtime0) {
		t.Fatalf("stat %v, %v; want mode 0640 and mtime %v", fi, err, mtime0)
	}
	if s := c.Stats(); s.Chunks != 5 || s.DataBytes != int64(len(data)-2*cs) {
		t.Fatalf("client stats %+v; want 5 chunks fetched (all but 1 and 4)", s)
	}
	// Part file examined (nothing), cache (2 chunks), then 5 chunks.
	if len(calls) != 7 || calls[0] != [2]int64{0, int64(len(data))} || calls[1] != [2]int64{2 * cs, int64(len(data))} {
		t.Fatalf("progress calls %v; want 0, then %d, then one per fetched chunk", calls, 2*cs)
	}
	for i := range m.NumChunks() {
		off := m.ChunkOffset(i)
		if got := cache.chunks[m.Hashes[i]]; !bytes.Equal(got, data[off:off+int64(m.ChunkLen(i))]) {
			t.Fatalf("chunk %d not in the cache after the download (the damaged one replaced)", i)
		}
	}

	// Everything cached: nothing fetched.
	before := c.Stats().DataBytes
	if _, err := c.DownloadFileWith(ctx, "f", filepath.Join(t.TempDir(), "g"), &transfer.DownloadOptions{Cache: cache}); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().DataBytes - before; got != 0 {
		t.Fatalf("second download fetched %d bytes, want 0", got)
	}
}
