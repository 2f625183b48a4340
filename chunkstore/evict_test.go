package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// openLimited opens a store in dir with the given limit (and test
// options), closed when the test ends.
func openLimited(t testing.TB, dir string, limit int64, noPunch bool) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Logger: quietLogger(), Limit: limit, noPunch: noPunch})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// mib returns chunk i of the eviction tests: 1 MiB of seeded bytes.
func mib(i int) ([]byte, [32]byte) { return testChunk(uint64(5000+i), 1<<20) }

// present returns the indexes i < n whose chunk mib(i) s holds.
func present(t testing.TB, s *Store, n int) []int {
	t.Helper()
	var got []int
	for i := range n {
		_, sum := mib(i)
		ok, err := s.Has(sum)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, i)
		}
	}
	return got
}

// checkStore checks every chunk record of s: its chunk verifies, the
// counters match what is stored, and the segment files take exactly
// DiskBytes of disk (every chunk in whole blocks, the space of removed
// chunks released).
func checkStore(t testing.TB, s *Store, dir string) {
	t.Helper()
	var sums [][32]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsInfo}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			sums = append(sums, [32]byte(it.Item().Key()[1:]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var chunkBytes, diskBytes int64
	for _, sum := range sums {
		// Read past Get, which would count a use.
		loc, _ := locate(t, s, sum)
		got, err := s.segs.read(loc.seg, loc.off, loc.n, nil)
		if err != nil || sha256.Sum256(got) != sum {
			t.Fatalf("stored chunk %x at %+v: %v, or it does not verify", sum[:4], loc, err)
		}
		chunkBytes += int64(len(got))
		diskBytes += loc.diskBytes()
	}
	st := s.Stats()
	if st.Corrupt != 0 || st.Chunks != int64(len(sums)) || st.ChunkBytes != chunkBytes || st.DiskBytes != diskBytes {
		t.Fatalf("Stats = %+v; want Corrupt 0, Chunks %d, ChunkBytes %d, DiskBytes %d", st, len(sums), chunkBytes, diskBytes)
	}
	if n := countKeys(t, s, nsStamp); n != len(sums) {
		t.Fatalf("%d stamp records for %d chunks", n, len(sums))
	}
	if got := segmentsAllocated(t, dir); got != diskBytes {
		t.Fatalf("segment files take %d bytes of disk, want DiskBytes %d", got, diskBytes)
	}
}

// TestLimitBoundsDiskSpace stores 24 MiB of chunks of mixed sizes, one by
// one and in batches, into a store limited to 4 MiB. After every write
// DiskBytes is at most the limit, and the segment files take exactly
// DiskBytes of disk: the bound is the limit itself, to the byte.
func TestLimitBoundsDiskSpace(t *testing.T) {
	const limit = 4 << 20
	dir := t.TempDir()
	s := openLimited(t, dir, limit, false)
	var put int64
	for i := 0; put < 24<<20; {
		n := 1 + i%5
		chunks := make([]Chunk, n)
		for k := range chunks {
			chunks[k].Data, chunks[k].Sum = crashChunk(99, i+k)
			put += int64(len(chunks[k].Data))
		}
		if n == 1 {
			mustPut(t, s, chunks[0].Sum, chunks[0].Data)
		} else if err := s.PutVerified(chunks); err != nil {
			t.Fatal(err)
		}
		i += n
		st := s.Stats()
		if st.DiskBytes > limit || st.OverLimit != 0 {
			t.Fatalf("after %d chunks: Stats = %+v; want DiskBytes <= %d", i, st, limit)
		}
		if got := segmentsAllocated(t, dir); got != st.DiskBytes {
			t.Fatalf("after %d chunks: segment files take %d bytes, DiskBytes is %d", i, got, st.DiskBytes)
		}
	}
	st := s.Stats()
	if st.Evicted == 0 || st.EvictedBytes+st.ChunkBytes != st.PutBytes || st.Limit != limit {
		t.Fatalf("Stats = %+v; want evictions accounting for every byte put", st)
	}
	checkStore(t, s, dir)
	t.Logf("%d MiB put under a %d MiB limit: %+v", put>>20, limit>>20, st)
}

// TestEvictionFollowsLastUse fills a 10 MiB store with ten 1 MiB chunks,
// reads chunks 0 and 1, and stores five more: each eviction takes the
// store to 90% of the limit before the write, so exactly the six least
// recently used chunks go (2 to 7), and the chunks read survive.
func TestEvictionFollowsLastUse(t *testing.T) {
	s := openLimited(t, t.TempDir(), 10<<20, false)
	for i := range 10 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	for i := range 2 {
		data, sum := mib(i)
		if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get(%d): %v", i, err)
		}
	}
	if got := s.Stats(); got.Evicted != 0 || got.DiskBytes != 10<<20 {
		t.Fatalf("Stats = %+v; want no eviction yet, DiskBytes %d", got, 10<<20)
	}
	for i := 10; i < 15; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	want := []int{0, 1, 8, 9, 10, 11, 12, 13, 14}
	if got := present(t, s, 15); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left: %v, want %v", got, want)
	}
	if got := s.Stats(); got.Evicted != 6 || got.EvictedBytes != 6<<20 || got.DiskBytes != 9<<20 {
		t.Fatalf("Stats = %+v; want Evicted 6, EvictedBytes %d, DiskBytes %d", got, 6<<20, 9<<20)
	}
	// A Put of a stored chunk is a use too.
	_, sum8 := mib(8)
	data9, sum9 := mib(9)
	mustPut(t, s, sum9, data9)
	data, sum := mib(15)
	mustPut(t, s, sum, data)
	data, sum = mib(16)
	mustPut(t, s, sum, data) // evicts 8 and 0; 9, stored again since, stays
	if ok, _ := s.Has(sum8); ok {
		t.Fatal("chunk 8 survived; want it evicted before 9, stored again later")
	}
	if got, want := present(t, s, 17), []int{1, 9, 10, 11, 12, 13, 14, 15, 16}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left: %v, want %v", got, want)
	}
}

// TestPinnedChunksAreNeverEvicted pins four chunks (one before it is
// stored) and fills the store far past its limit: the pinned chunks stay,
// everything else is evicted in LRU order. Unpinned, they go first. With
// more pinned than the limit, the store goes over it, says so, and keeps
// serving every chunk.
func TestPinnedChunksAreNeverEvicted(t *testing.T) {
	const limit = 6 << 20
	s := openLimited(t, t.TempDir(), limit, false)
	var pinned [][32]byte
	for i := range 4 {
		_, sum := mib(i)
		pinned = append(pinned, sum)
	}
	unpin := s.Pin(pinned...)
	again := s.Pin(pinned[0]) // nested: chunk 0 stays pinned after unpin
	for i := range 3 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	if got := s.Stats(); got.PinnedChunks != 3 || got.PinnedBytes != 3<<20 {
		t.Fatalf("Stats = %+v; want 3 chunks pinned, stored before chunk 3", got)
	}
	for i := 3; i < 20; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
		if st := s.Stats(); st.DiskBytes > limit {
			t.Fatalf("after chunk %d: DiskBytes %d over the limit", i, st.DiskBytes)
		}
	}
	if got, want := present(t, s, 20), []int{0, 1, 2, 3, 18, 19}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left: %v, want %v", got, want)
	}
	if got := s.Stats(); got.PinnedChunks != 4 || got.PinnedBytes != 4<<20 || got.OverLimit != 0 {
		t.Fatalf("Stats = %+v; want 4 chunks pinned, never over the limit", got)
	}

	unpin()
	unpin() // a second call does nothing
	if got := s.Stats(); got.PinnedChunks != 1 || got.PinnedBytes != 1<<20 {
		t.Fatalf("Stats after unpin = %+v; want chunk 0 still pinned", got)
	}
	for i := 20; i < 22; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	// 1 and 2 were used before 3, 18 and 19: they go first.
	if got, want := present(t, s, 22), []int{0, 3, 18, 19, 20, 21}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left after unpin: %v, want %v", got, want)
	}
	again()

	// Pin more than the limit: the store holds it all.
	var all [][32]byte
	for i := 30; i < 38; i++ {
		_, sum := mib(i)
		all = append(all, sum)
	}
	defer s.Pin(all...)()
	for i := 30; i < 38; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	st := s.Stats()
	if st.DiskBytes != 8<<20 || st.PinnedBytes != 8<<20 || st.OverLimit != 2 {
		t.Fatalf("Stats = %+v; want 8 MiB held, all pinned, 2 writes left over the limit", st)
	}
	for i := 30; i < 38; i++ {
		data, sum := mib(i)
		if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get of pinned chunk %d over the limit: %v", i, err)
		}
	}
}

// TestReopenAfterEviction evicts, closes and reopens: the store holds
// only whole verified chunks, its counters and disk space match, the uses
// recorded before Close still order the evictions after it, and a smaller
// limit is enforced at Open.
func TestReopenAfterEviction(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger(), Limit: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	_, sum5 := mib(5)
	if _, err := s.Get(sum5, nil); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, &Options{Logger: quietLogger(), Limit: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Stats(); got.Chunks != before.Chunks || got.ChunkBytes != before.ChunkBytes || got.DiskBytes != before.DiskBytes {
		t.Fatalf("Stats after reopen = %+v; before Close %+v", got, before)
	}
	checkStore(t, s, dir)
	for i := 12; i < 15; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	// Chunk 5 was read last before Close: it outlives 4 and 6 to 8.
	if got, want := present(t, s, 15), []int{5, 9, 10, 11, 12, 13, 14}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left: %v, want %v", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openLimited(t, dir, 3<<20, false)
	if got, want := present(t, s, 15), []int{13, 14}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks left after Open with a 3 MiB limit: %v, want %v", got, want)
	}
	checkStore(t, s, dir)
}

// TestEvictionWithoutHolePunching runs a store that cannot punch holes:
// it evicts whole segments, least recently used first (a segment counts as
// used when any of its chunks is), and the segment files stay within the
// limit.
func TestEvictionWithoutHolePunching(t *testing.T) {
	const limit = 8 << 20 // segments of 1 MiB: one chunk each
	dir := t.TempDir()
	s := openLimited(t, dir, limit, true)
	for i := range 8 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	_, sum0 := mib(0)
	if _, err := s.Get(sum0, nil); err != nil {
		t.Fatal(err)
	}
	for i := 8; i < 30; i++ {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
		if st := s.Stats(); st.DiskBytes > limit {
			t.Fatalf("after chunk %d: DiskBytes %d over the limit", i, st.DiskBytes)
		}
		if got, st := segmentsAllocated(t, dir), s.Stats(); got != st.DiskBytes {
			t.Fatalf("after chunk %d: segments take %d bytes, DiskBytes %d", i, got, st.DiskBytes)
		}
	}
	if st := s.Stats(); st.HolesPunched != 0 || st.SegmentsRemoved != st.Evicted || st.Evicted == 0 {
		t.Fatalf("Stats = %+v; want whole segments removed, no holes", st)
	}
	got := present(t, s, 30)
	if len(got) == 0 || got[len(got)-1] != 29 || len(got) > 8 {
		t.Fatalf("chunks left: %v; want at most 8, the newest among them", got)
	}

	// Deleting a chunk in a segment with others leaves its space counted
	// until the segment goes.
	s2dir := t.TempDir()
	s2 := openLimited(t, s2dir, 64<<20, true)
	small := make([]Chunk, 3)
	for k := range small {
		small[k].Data, small[k].Sum = testChunk(uint64(5100+k), 100<<10)
	}
	if err := s2.PutVerified(small); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(small[1].Sum); err != nil {
		t.Fatal(err)
	}
	if st := s2.Stats(); st.DiskBytes != 300<<10 || st.ChunkBytes != 200<<10 {
		t.Fatalf("Stats = %+v; want the deleted chunk's space still counted", st)
	}
	checkSegmentSpace := func() {
		if got, want := segmentsAllocated(t, s2dir), s2.Stats().DiskBytes; got != want {
			t.Fatalf("segments take %d bytes, DiskBytes %d", got, want)
		}
	}
	checkSegmentSpace()
}

// TestGetsDuringEvictionSeeOnlyWholeChunks reads chunks while writers
// evict them: every Get returns the exact chunk or ErrNotFound, never a
// released range as a corrupt chunk.
func TestGetsDuringEvictionSeeOnlyWholeChunks(t *testing.T) {
	s := openLimited(t, t.TempDir(), 4<<20, false)
	const n = 40
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			data, sum := testChunk(uint64(5200+i), 256<<10)
			if err := s.Put(Chunk{Sum: sum, Data: data}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for r := range 3 {
		wg.Go(func() {
			for k := range 4 * n {
				i := (k + r) % n
				data, sum := testChunk(uint64(5200+i), 256<<10)
				got, err := s.Get(sum, nil)
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%d) = %v, want the chunk or ErrNotFound", i, err)
				}
				if err == nil && !bytes.Equal(got, data) {
					t.Errorf("Get(%d) returned the wrong bytes", i)
				}
			}
		})
	}
	wg.Wait()
	if st := s.Stats(); st.Corrupt != 0 || st.Evicted == 0 || st.DiskBytes > 4<<20 {
		t.Fatalf("Stats = %+v; want evictions, nothing corrupt, within the limit", st)
	}
}

// BenchmarkPutVerifiedEvicting is BenchmarkPutVerified under a 64 MiB
// limit: once full, each batch of 8 MiB evicts (and punches holes for) the
// least recently used chunks first.
func BenchmarkPutVerifiedEvicting(b *testing.B) {
	s := openLimited(b, b.TempDir(), 64<<20, false)
	const batch = 8
	chunks := make([]Chunk, batch)
	for k := range chunks {
		chunks[k].Data, _ = testChunk(uint64(710+k), 1<<20)
	}
	b.SetBytes(batch << 20)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		b.StopTimer()
		for k := range chunks {
			i++
			binary.LittleEndian.PutUint64(chunks[k].Data, i)
			chunks[k].Sum = sha256.Sum256(chunks[k].Data)
		}
		b.StartTimer()
		if err := s.PutVerified(chunks); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.DiskBytes > 64<<20 {
		b.Fatalf("DiskBytes %d over the limit", st.DiskBytes)
	}
}

// TestUnalignedChunksOfEarlierStores: chunks written back to back (record
// format 2, before chunks were aligned) are read, counted (conservatively:
// a block shared by two chunks counts for both) and evicted like the
// others, and a hole punched for one never touches its neighbours.
func TestUnalignedChunksOfEarlierStores(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger(), unaligned: true})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []Chunk
	for i := range 12 {
		var c Chunk
		c.Data, c.Sum = testChunk(uint64(5400+i), 100<<10+333*i)
		chunks = append(chunks, c)
	}
	if err := s.PutVerified(chunks); err != nil {
		t.Fatal(err)
	}
	if loc, _ := locate(t, s, chunks[1].Sum); loc.aligned || loc.off != int64(len(chunks[0].Data)) {
		t.Fatalf("second chunk at %+v, want right after the first, unaligned", loc)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	const limit = 600 << 10
	s = openLimited(t, dir, limit, false)
	st := s.Stats()
	if st.DiskBytes > limit || st.Evicted == 0 {
		t.Fatalf("Stats after Open with a limit = %+v; want evictions down to %d", st, limit)
	}
	if got := segmentsAllocated(t, dir); got > st.DiskBytes {
		t.Fatalf("segments take %d bytes, more than DiskBytes %d", got, st.DiskBytes)
	}
	// The chunks left are the last ones stored, whole.
	var left []int
	for i, c := range chunks {
		got, err := s.Get(c.Sum, nil)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil || !bytes.Equal(got, c.Data):
			t.Fatalf("chunk %d: %v, or wrong bytes", i, err)
		default:
			left = append(left, i)
		}
	}
	if len(left) == 0 || left[len(left)-1] != 11 || left[0] != 12-len(left) {
		t.Fatalf("chunks left: %v; want the last ones", left)
	}
	data, sum := testChunk(5499, 5000)
	mustPut(t, s, sum, data)
	if loc, _ := locate(t, s, sum); !loc.aligned || loc.off%chunkAlign != 0 {
		t.Fatalf("new chunk at %+v, want aligned", loc)
	}
	if st := s.Stats(); st.Corrupt != 0 {
		t.Fatalf("Stats = %+v; want nothing corrupt", st)
	}
}
