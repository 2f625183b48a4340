package chunkstoretest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

// Store is what the users of a chunk store rely on, and so what Run
// checks: the methods of fusefs.Store, with the Has and PutMetas that
// fusefs uses when a store has them, and the ScanMeta of prefetch.Store.
// *chunkstore.Store and *MemStore implement it.
type Store interface {
	PutVerified(chunks []chunkstore.Chunk) error
	Get(sum [32]byte, buf []byte) ([]byte, error)
	Has(sum [32]byte) (bool, error)
	PutMeta(key string, value []byte) error
	PutMetas(records []chunkstore.MetaRecord) error
	GetMeta(key string) ([]byte, error)
	DeleteMeta(key string) error
	ScanMeta(prefix string, fn func(key string, value []byte) error) error
}

var (
	_ Store = (*chunkstore.Store)(nil)
	_ Store = (*MemStore)(nil)
)

// Run checks that the stores newStore makes behave as *chunkstore.Store
// does, which is the reference: each subtest gets a new, empty store from
// newStore, which must arrange for it to be closed when the test ends.
// The contracts checked:
//
//   - PutVerified stores copies of the chunks without hashing them; a
//     chunk stored already is kept as it is (not replaced), a batch that
//     names an unknown hash algorithm stores nothing and fails with
//     chunkstore.ErrCorrupt.
//   - Get returns the chunk in buf's array when it fits, verified with the
//     algorithm it was stored under: a chunk that does not match its sum
//     fails with chunkstore.ErrCorrupt and is removed. A missing chunk
//     fails with chunkstore.ErrNotFound; Has reports it without error.
//   - Metadata records are copies, replaced by a later PutMeta or
//     PutMetas, removed by DeleteMeta (of a missing key too, without
//     error); a missing record fails with chunkstore.ErrNotFound, a key
//     longer than chunkstore.MaxMetaKeyLen with chunkstore.ErrInvalidKey
//     and writes nothing. Records and chunks never collide.
//   - ScanMeta visits the records under a prefix in byte order of their
//     keys, as they were when it started; fn may use the store, and its
//     error ends the scan and is returned as it is.
//   - All of it is safe for concurrent use (run the suite with -race).
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"ChunkRoundTrip", testChunkRoundTrip},
		{"MissingChunk", testMissingChunk},
		{"EmptyChunk", testEmptyChunk},
		{"StoredChunkIsKept", testStoredChunkIsKept},
		{"GetVerifies", testGetVerifies},
		{"UnknownAlgStoresNothing", testUnknownAlg},
		{"MetaRoundTrip", testMetaRoundTrip},
		{"MetaKeyLength", testMetaKeyLength},
		{"PutMetas", testPutMetas},
		{"MetaAndChunksApart", testMetaAndChunksApart},
		{"ScanMeta", testScanMeta},
		{"ScanMetaSnapshot", testScanMetaSnapshot},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// chunk returns size deterministic bytes for seed and a chunk of them
// under alg.
func chunk(seed, size int, alg chunkhash.Alg) chunkstore.Chunk {
	data := make([]byte, size)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1
	for i := range data {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		data[i] = byte(x)
	}
	return chunkstore.Chunk{Sum: chunkhash.Sum(alg, data), Alg: alg, Data: data}
}

// mustGet returns the chunk stored under sum, failing the test if it
// cannot.
func mustGet(t *testing.T, s Store, sum [32]byte) []byte {
	t.Helper()
	got, err := s.Get(sum, nil)
	if err != nil {
		t.Fatalf("Get(%x): %v", sum[:4], err)
	}
	return got
}

func testChunkRoundTrip(t *testing.T, s Store) {
	a := chunk(1, 10_000, chunkhash.SHA256)
	b := chunk(2, 4096, chunkhash.BLAKE3)
	given := [][]byte{bytes.Clone(a.Data), bytes.Clone(b.Data)}
	if err := s.PutVerified([]chunkstore.Chunk{a, b}); err != nil {
		t.Fatal(err)
	}
	a.Data[0] ^= 0xff // the store keeps a copy
	for i, c := range []chunkstore.Chunk{a, b} {
		if got := mustGet(t, s, c.Sum); !bytes.Equal(got, given[i]) {
			t.Fatalf("Get(chunk %d) returned other bytes", i)
		}
		if ok, err := s.Has(c.Sum); !ok || err != nil {
			t.Fatalf("Has(chunk %d) = %v, %v; want true", i, ok, err)
		}
	}
	buf := make([]byte, 0, 16<<10)
	got, err := s.Get(a.Sum, buf)
	if err != nil || !bytes.Equal(got, given[0]) || &got[0] != &buf[:1][0] {
		t.Fatalf("Get(a, 16 KiB buffer) = %d bytes, %v; want the chunk in the buffer", len(got), err)
	}
	small := make([]byte, 10)
	if got, err := s.Get(a.Sum, small); err != nil || !bytes.Equal(got, given[0]) {
		t.Fatalf("Get(a, 10-byte buffer) = %d bytes, %v; want the chunk", len(got), err)
	}
}

func testMissingChunk(t *testing.T, s Store) {
	c := chunk(3, 100, chunkhash.SHA256)
	if _, err := s.Get(c.Sum, nil); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want chunkstore.ErrNotFound", err)
	}
	if ok, err := s.Has(c.Sum); ok || err != nil {
		t.Fatalf("Has(missing) = %v, %v; want false, nil", ok, err)
	}
}

func testEmptyChunk(t *testing.T, s Store) {
	c := chunk(0, 0, chunkhash.BLAKE3)
	if err := s.PutVerified([]chunkstore.Chunk{c}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(c.Sum, nil); err != nil || len(got) != 0 {
		t.Fatalf("Get(empty chunk) = %q, %v; want no bytes, no error", got, err)
	}
	if ok, err := s.Has(c.Sum); !ok || err != nil {
		t.Fatalf("Has(empty chunk) = %v, %v; want true", ok, err)
	}
}

// testStoredChunkIsKept: PutVerified of a sum stored already writes
// nothing, even when the data given differs (it could only be wrong), and
// a batch that names a chunk twice stores it once.
func testStoredChunkIsKept(t *testing.T, s Store) {
	c := chunk(4, 5000, chunkhash.SHA256)
	want := bytes.Clone(c.Data)
	if err := s.PutVerified([]chunkstore.Chunk{c, c}); err != nil {
		t.Fatal(err)
	}
	bad := chunkstore.Chunk{Sum: c.Sum, Alg: c.Alg, Data: []byte("not the chunk")}
	if err := s.PutVerified([]chunkstore.Chunk{bad}); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, c.Sum); !bytes.Equal(got, want) {
		t.Fatalf("Get after a second PutVerified = %q, want the first chunk", got)
	}
}

// testGetVerifies: a chunk stored with data that does not match its sum
// is never returned: Get fails with ErrCorrupt and removes it.
func testGetVerifies(t *testing.T, s Store) {
	for _, alg := range []chunkhash.Alg{chunkhash.SHA256, chunkhash.BLAKE3} {
		c := chunk(5, 3000, alg)
		c.Data[100] ^= 1
		if err := s.PutVerified([]chunkstore.Chunk{c}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(c.Sum, nil); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Fatalf("%v: Get(bad chunk) = %d bytes, %v; want chunkstore.ErrCorrupt", alg, len(got), err)
		}
		if ok, err := s.Has(c.Sum); ok || err != nil {
			t.Fatalf("%v: Has(bad chunk) after Get = %v, %v; want it removed", alg, ok, err)
		}
		if _, err := s.Get(c.Sum, nil); !errors.Is(err, chunkstore.ErrNotFound) {
			t.Fatalf("%v: second Get(bad chunk) = %v, want chunkstore.ErrNotFound", alg, err)
		}
	}
	// The same bytes under the other algorithm's sum are another chunk,
	// which fails under the algorithm it was stored with.
	c := chunk(6, 2000, chunkhash.BLAKE3)
	c.Alg = chunkhash.SHA256
	if err := s.PutVerified([]chunkstore.Chunk{c}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c.Sum, nil); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("Get(BLAKE3 sum stored as SHA-256) = %v, want chunkstore.ErrCorrupt", err)
	}
}

func testUnknownAlg(t *testing.T, s Store) {
	good := chunk(7, 100, chunkhash.SHA256)
	odd := chunk(8, 100, chunkhash.SHA256)
	odd.Alg = 99
	if err := s.PutVerified([]chunkstore.Chunk{good, odd}); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("PutVerified with algorithm 99 = %v, want chunkstore.ErrCorrupt", err)
	}
	for _, c := range []chunkstore.Chunk{good, odd} {
		if ok, err := s.Has(c.Sum); ok || err != nil {
			t.Fatalf("Has(%x) after the failed batch = %v, %v; want nothing stored", c.Sum[:4], ok, err)
		}
	}
}

func testMetaRoundTrip(t *testing.T, s Store) {
	if _, err := s.GetMeta("k"); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("GetMeta(missing) = %v, want chunkstore.ErrNotFound", err)
	}
	v := []byte("value 1")
	if err := s.PutMeta("k", v); err != nil {
		t.Fatal(err)
	}
	v[0] = 'X' // the store keeps a copy
	got, err := s.GetMeta("k")
	if err != nil || string(got) != "value 1" {
		t.Fatalf("GetMeta(k) = %q, %v; want \"value 1\"", got, err)
	}
	got[0] = 'Y' // and hands out copies
	if err := s.PutMeta("", []byte("empty key")); err != nil {
		t.Fatalf("PutMeta(\"\") = %v; the empty key is valid", err)
	}
	if got, err := s.GetMeta("k"); err != nil || string(got) != "value 1" {
		t.Fatalf("GetMeta(k) again = %q, %v; want \"value 1\"", got, err)
	}
	if err := s.PutMeta("k", []byte("value 2")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetMeta("k"); err != nil || string(got) != "value 2" {
		t.Fatalf("GetMeta(k) after a second PutMeta = %q, %v; want \"value 2\"", got, err)
	}
	if err := s.PutMeta("nil", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetMeta("nil"); err != nil || len(got) != 0 {
		t.Fatalf("GetMeta(nil) = %q, %v; want an empty record", got, err)
	}
	if err := s.DeleteMeta("k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta("k"); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("GetMeta(deleted) = %v, want chunkstore.ErrNotFound", err)
	}
	if err := s.DeleteMeta("k"); err != nil {
		t.Fatalf("DeleteMeta(missing) = %v, want nil", err)
	}
	if got, err := s.GetMeta(""); err != nil || string(got) != "empty key" {
		t.Fatalf("GetMeta(\"\") = %q, %v", got, err)
	}
}

func testMetaKeyLength(t *testing.T, s Store) {
	longest := strings.Repeat("k", chunkstore.MaxMetaKeyLen)
	tooLong := longest + "k"
	if err := s.PutMeta(longest, []byte("v")); err != nil {
		t.Fatalf("PutMeta(%d-byte key) = %v", len(longest), err)
	}
	if got, err := s.GetMeta(longest); err != nil || string(got) != "v" {
		t.Fatalf("GetMeta(%d-byte key) = %q, %v", len(longest), got, err)
	}
	if err := s.PutMeta(tooLong, []byte("v")); !errors.Is(err, chunkstore.ErrInvalidKey) {
		t.Fatalf("PutMeta(%d-byte key) = %v, want chunkstore.ErrInvalidKey", len(tooLong), err)
	}
	if _, err := s.GetMeta(tooLong); !errors.Is(err, chunkstore.ErrInvalidKey) {
		t.Fatalf("GetMeta(%d-byte key) = %v, want chunkstore.ErrInvalidKey", len(tooLong), err)
	}
	if err := s.DeleteMeta(tooLong); !errors.Is(err, chunkstore.ErrInvalidKey) {
		t.Fatalf("DeleteMeta(%d-byte key) = %v, want chunkstore.ErrInvalidKey", len(tooLong), err)
	}
	recs := []chunkstore.MetaRecord{{Key: "a", Value: []byte("1")}, {Key: tooLong, Value: []byte("2")}}
	if err := s.PutMetas(recs); !errors.Is(err, chunkstore.ErrInvalidKey) {
		t.Fatalf("PutMetas with a %d-byte key = %v, want chunkstore.ErrInvalidKey", len(tooLong), err)
	}
	if _, err := s.GetMeta("a"); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("GetMeta(a) after the failed PutMetas = %v, want chunkstore.ErrNotFound (nothing written)", err)
	}
}

func testPutMetas(t *testing.T, s Store) {
	if err := s.PutMetas(nil); err != nil {
		t.Fatalf("PutMetas(nil) = %v", err)
	}
	if err := s.PutMeta("r/0005", []byte("old")); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	recs := make([]chunkstore.MetaRecord, n)
	for i := range recs {
		recs[i] = chunkstore.MetaRecord{Key: fmt.Sprintf("r/%04d", i), Value: fmt.Appendf(nil, "value %d", i)}
	}
	if err := s.PutMetas(recs); err != nil {
		t.Fatal(err)
	}
	recs[1].Value[0] = 'X' // the store keeps copies
	for i := range n {
		got, err := s.GetMeta(fmt.Sprintf("r/%04d", i))
		if want := fmt.Sprintf("value %d", i); err != nil || string(got) != want {
			t.Fatalf("GetMeta(r/%04d) = %q, %v; want %q", i, got, err, want)
		}
	}
}

// testMetaAndChunksApart: a record whose key is a chunk's sum and the
// chunk are two things.
func testMetaAndChunksApart(t *testing.T, s Store) {
	c := chunk(9, 700, chunkhash.SHA256)
	key := string(c.Sum[:])
	if err := s.PutMeta(key, []byte("record")); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Has(c.Sum); ok || err != nil {
		t.Fatalf("Has(sum) with only a record under it = %v, %v; want false", ok, err)
	}
	if err := s.PutVerified([]chunkstore.Chunk{c}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMeta(key); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, c.Sum); !bytes.Equal(got, c.Data) {
		t.Fatal("the chunk changed with the record")
	}
}

// scan returns the keys and values ScanMeta visits under prefix.
func scan(t *testing.T, s Store, prefix string) (keys, values []string) {
	t.Helper()
	err := s.ScanMeta(prefix, func(k string, v []byte) error {
		keys = append(keys, k)
		values = append(values, string(v))
		return nil
	})
	if err != nil {
		t.Fatalf("ScanMeta(%q): %v", prefix, err)
	}
	return keys, values
}

func testScanMeta(t *testing.T, s Store) {
	for _, k := range []string{"job/2", "job/10", "job/1", "jo", "other/1", "job/\xff", "job0"} {
		if err := s.PutMeta(k, []byte("v "+k)); err != nil {
			t.Fatal(err)
		}
	}
	keys, values := scan(t, s, "job/")
	if want := []string{"job/1", "job/10", "job/2", "job/\xff"}; !slices.Equal(keys, want) {
		t.Fatalf("ScanMeta(job/) keys %q, want %q", keys, want)
	}
	for i, k := range keys {
		if values[i] != "v "+k {
			t.Fatalf("ScanMeta(job/) value of %q = %q", k, values[i])
		}
	}
	if keys, _ := scan(t, s, ""); len(keys) != 7 {
		t.Fatalf("ScanMeta(\"\") saw %q, want all 7 records", keys)
	}
	if keys, _ := scan(t, s, "none/"); len(keys) != 0 {
		t.Fatalf("ScanMeta(none/) saw %q, want nothing", keys)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.ScanMeta("job/", func(string, []byte) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("ScanMeta with a failing fn = %v after %d calls; want its error, unwrapped, after 1", err, calls)
	}
}

// testScanMetaSnapshot: ScanMeta sees the records as they were when it
// started, whatever fn does to them meanwhile.
func testScanMetaSnapshot(t *testing.T, s Store) {
	for _, k := range []string{"job/1", "job/2", "job/3"} {
		if err := s.PutMeta(k, []byte("old "+k)); err != nil {
			t.Fatal(err)
		}
	}
	var keys, values []string
	err := s.ScanMeta("job/", func(k string, v []byte) error {
		keys = append(keys, k)
		values = append(values, string(v))
		if k != "job/1" {
			return nil
		}
		if err := s.DeleteMeta("job/2"); err != nil {
			return err
		}
		if err := s.PutMeta("job/3", []byte("new")); err != nil {
			return err
		}
		return s.PutMeta("job/25", []byte("added"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"job/1", "job/2", "job/3"}; !slices.Equal(keys, want) {
		t.Fatalf("ScanMeta(job/) while fn changes records: keys %q, want %q", keys, want)
	}
	if want := []string{"old job/1", "old job/2", "old job/3"}; !slices.Equal(values, want) {
		t.Fatalf("ScanMeta(job/) while fn changes records: values %q, want %q", values, want)
	}
	if keys, _ := scan(t, s, "job/"); !slices.Equal(keys, []string{"job/1", "job/25", "job/3"}) {
		t.Fatalf("ScanMeta(job/) after = %q, want the changes", keys)
	}
}

// testConcurrent runs writers and readers of overlapping chunks and
// records at once, then checks that everything written is there, whole.
func testConcurrent(t *testing.T, s Store) {
	const workers, perWorker = 8, 24
	chunks := make([]chunkstore.Chunk, workers*perWorker/2) // each stored by two workers
	for i := range chunks {
		chunks[i] = chunk(100+i, 1000+37*i, chunkhash.Alg(i%2))
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for j := range perWorker {
				c := chunks[(w*perWorker/2+j)%len(chunks)]
				if err := s.PutVerified([]chunkstore.Chunk{c}); err != nil {
					errs <- err
					return
				}
				if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
					errs <- fmt.Errorf("worker %d: Get after PutVerified: %d bytes, %v", w, len(got), err)
					return
				}
				key := fmt.Sprintf("w/%d/%d", w, j)
				if err := s.PutMetas([]chunkstore.MetaRecord{{Key: key, Value: []byte(key)}, {Key: "shared", Value: []byte(key)}}); err != nil {
					errs <- err
					return
				}
				if err := s.ScanMeta("w/", func(string, []byte) error { return nil }); err != nil {
					errs <- err
					return
				}
				if _, err := s.GetMeta("shared"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, c := range chunks {
		if got := mustGet(t, s, c.Sum); !bytes.Equal(got, c.Data) {
			t.Fatalf("chunk %d: other bytes after the concurrent writes", i)
		}
	}
	keys, _ := scan(t, s, "w/")
	if len(keys) != workers*perWorker {
		t.Fatalf("%d records under w/, want %d", len(keys), workers*perWorker)
	}
}
