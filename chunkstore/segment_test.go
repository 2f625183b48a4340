package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kwikfs/kwikfs/internal/directio"
	"golang.org/x/sys/unix"
)

func TestConcurrentIdenticalPutsStoreOnce(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(1300, 1<<20)
	const workers = 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var err error
			if w%2 == 0 {
				err = s.Put(Chunk{Sum: sum, Data: data})
			} else {
				err = s.PutVerified([]Chunk{{Sum: sum, Data: data}})
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Puts: 1, PutBytes: 1 << 20, PutDups: workers - 1}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if n := segmentBytes(t, s); n != 1<<20 {
		t.Fatalf("segments hold %d bytes, want %d (the chunk once)", n, 1<<20)
	}
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v", err)
	}
}

// TestSegmentsRotateAndSurviveReopen fills several small segments through
// a read-descriptor cache of two, reopens the store, and reads everything
// back; the reopened store keeps filling its last segment.
func TestSegmentsRotateAndSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{Logger: quietLogger(), segmentSize: 2 << 20, maxOpenSegments: 2}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	chunks := make([]Chunk, 13)
	var total int64
	for i := range chunks {
		chunks[i].Data, chunks[i].Sum = testChunk(uint64(1310+i), 600<<10+i)
		total += int64(len(chunks[i].Data))
	}
	// Single Puts and batches of three: three 600 KiB chunks fit a 2 MiB
	// segment, a fourth does not.
	for i := 0; i < len(chunks); {
		if i%2 == 0 {
			mustPut(t, s, chunks[i].Sum, chunks[i].Data)
			i++
			continue
		}
		n := min(3, len(chunks)-i)
		if err := s.PutVerified(chunks[i : i+n]); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	segs := segmentFiles(t, dir)
	if len(segs) < 5 {
		t.Fatalf("%d segments, want at least 5", len(segs))
	}
	for _, p := range segs {
		if fi, err := os.Stat(p); err != nil || fi.Size() > 2<<20 {
			t.Fatalf("segment %s: %v, %d bytes; want at most %d", p, err, fi.Size(), 2<<20)
		}
	}
	for _, c := range chunks {
		if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x): %v", c.Sum[:4], err)
		}
		if n := s.segs.openCount(); n > 2 {
			t.Fatalf("%d segment descriptors open, want at most 2", n)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if got, want := events(s.Stats()), (Stats{Chunks: int64(len(chunks)), ChunkBytes: total}); got != want {
		t.Fatalf("Stats after reopen = %+v, want %+v", got, want)
	}
	var wg sync.WaitGroup
	for w := range 4 { // concurrent readers through the bounded cache
		wg.Go(func() {
			for k := range chunks {
				c := chunks[(k+w)%len(chunks)]
				if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
					t.Errorf("Get(%x) after reopen: %v", c.Sum[:4], err)
				}
			}
		})
	}
	wg.Wait()
	if n := s.segs.openCount(); n > 2 {
		t.Fatalf("%d segment descriptors open when idle, want at most 2", n)
	}
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	small, sum := testChunk(1330, 1000)
	mustPut(t, s, sum, small)
	if loc, p := locate(t, s, sum); p != last || loc.off != alignUp(fi.Size()) || !loc.aligned {
		t.Fatalf("chunk after reopen went to %s at %+v, want %s at %d, aligned", p, loc, last, alignUp(fi.Size()))
	}
}

// TestTornTailCutOnOpen appends half a chunk to the last segment while the
// store is closed, as a write cut short by a crash leaves it: Open cuts it
// off and everything recorded is intact.
func TestTornTailCutOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, sa := testChunk(1340, 1<<20)
	b, sb := testChunk(1341, 5000)
	mustPut(t, s, sa, a)
	mustPut(t, s, sb, b)
	_, p := locate(t, s, sb)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	torn, tornSum := testChunk(1342, 1<<20)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(torn[:1<<19]); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = openTest(t, dir)
	if got, want := events(s.Stats()), (Stats{Chunks: 2, ChunkBytes: 1<<20 + 5000}); got != want {
		t.Fatalf("Stats after reopen = %+v, want %+v", got, want)
	}
	if n := segmentBytes(t, s); n != 1<<20+5000 {
		t.Fatalf("segments hold %d bytes, want %d (torn tail cut)", n, 1<<20+5000)
	}
	for _, c := range []Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}} {
		if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x): %v", c.Sum[:4], err)
		}
	}
	if _, err := s.Get(tornSum, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the torn chunk = %v, want ErrNotFound", err)
	}
	mustPut(t, s, tornSum, torn)
	if got, err := s.Get(tornSum, nil); err != nil || !bytes.Equal(got, torn) {
		t.Fatalf("Get of the chunk stored over the torn tail: %v", err)
	}
}

// TestOpenDropsChunksWhoseBytesAreLost cuts a segment short and removes
// another while the store is closed, as a machine crash with SyncWrites
// false can leave them (the index reached the disk, the bytes did not):
// Open drops and counts those chunks, keeps the rest, and takes them again.
func TestOpenDropsChunksWhoseBytesAreLost(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{Logger: quietLogger(), segmentSize: 1 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	a, sa := testChunk(1350, 700<<10) // segment 1
	b, sb := testChunk(1351, 200<<10) // segment 1
	c, sc := testChunk(1352, 700<<10) // segment 2
	if err := s.PutVerified([]Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, sc, c)
	lb, pb := locate(t, s, sb)
	_, pc := locate(t, s, sc)
	if pb == pc {
		t.Fatal("b and c in the same segment")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pb, lb.off+100); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(pc); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if got, want := events(s.Stats()), (Stats{Chunks: 1, ChunkBytes: 700 << 10, Corrupt: 2}); got != want {
		t.Fatalf("Stats after reopen = %+v, want %+v", got, want)
	}
	for _, sum := range [][32]byte{sb, sc} {
		if ok, err := s.Has(sum); err != nil || ok {
			t.Fatalf("Has(%x) = %v, %v; want false, nil", sum[:4], ok, err)
		}
	}
	if got, err := s.Get(sa, nil); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Get of the intact chunk: %v", err)
	}
	if fi, err := os.Stat(pb); err != nil || fi.Size() != lb.off {
		t.Fatalf("segment of a and b: %v, want %d bytes (b's remains cut)", err, lb.off)
	}
	if err := s.PutVerified([]Chunk{{Sum: sb, Data: b}, {Sum: sc, Data: c}}); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []Chunk{{Sum: sb, Data: b}, {Sum: sc, Data: c}} {
		if got, err := s.Get(ch.Sum, nil); err != nil || !bytes.Equal(got, ch.Data) {
			t.Fatalf("Get(%x) stored again: %v", ch.Sum[:4], err)
		}
	}
}

// TestDeletedBytesStayUntilOpen: Delete drops only the index entry; the
// bytes stay in the segment while the store is open. Open then cuts
// deleted chunks off a segment's end and removes a segment left without
// TestDeleteReleasesSpace deletes chunks from an open store: a segment
// left without chunks is removed at once, and a deleted chunk among others
// leaves a hole (its blocks are released, the file keeps its size). A
// deleted chunk can be stored again, as new bytes, also after a reopen.
func TestDeleteReleasesSpace(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{Logger: quietLogger(), segmentSize: 1 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	a, sa := testChunk(1360, 1<<20) // segment 1, alone
	b, sb := testChunk(1361, 300<<10)
	c, sc := testChunk(1362, 300<<10) // b and c: segment 2
	mustPut(t, s, sa, a)
	if err := s.PutVerified([]Chunk{{Sum: sb, Data: b}, {Sum: sc, Data: c}}); err != nil {
		t.Fatal(err)
	}
	la, pa := locate(t, s, sa)
	lb, pb := locate(t, s, sb)
	if la.seg == lb.seg {
		t.Fatal("a and b in the same segment")
	}
	if got := segmentsAllocated(t, dir); got != 1<<20+600<<10 {
		t.Fatalf("segments take %d bytes, want %d", got, 1<<20+600<<10)
	}
	for _, sum := range [][32]byte{sa, sc} {
		if err := s.Delete(sum); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(pa); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment without chunks: stat = %v, want it removed", err)
	}
	if fi, err := os.Stat(pb); err != nil || fi.Size() != 600<<10 {
		t.Fatalf("segment of b and c: %v; want its size, %d, kept", err, 600<<10)
	}
	if got := allocated(t, pb); got != 300<<10 {
		t.Fatalf("segment of b takes %d bytes after c's Delete, want %d (a hole for c)", got, 300<<10)
	}
	want := Stats{Chunks: 1, ChunkBytes: 300 << 10, DiskBytes: 300 << 10, Puts: 3, PutBytes: 1<<20 + 600<<10,
		HolesPunched: 1, PunchedBytes: 300 << 10, SegmentsRemoved: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if fi, err := os.Stat(pb); err != nil || fi.Size() != lb.end() {
		t.Fatalf("segment of b: %v, want %d bytes (c cut off)", err, lb.end())
	}
	if got, err := s.Get(sb, nil); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get of the chunk kept: %v", err)
	}
	// Stored again, as new bytes.
	mustPut(t, s, sa, a)
	mustPut(t, s, sc, c)
	for _, ch := range []Chunk{{Sum: sa, Data: a}, {Sum: sc, Data: c}} {
		if got, err := s.Get(ch.Sum, nil); err != nil || !bytes.Equal(got, ch.Data) {
			t.Fatalf("Get(%x) stored again: %v", ch.Sum[:4], err)
		}
	}
	want = Stats{Chunks: 3, ChunkBytes: 1<<20 + 600<<10, DiskBytes: 1<<20 + 600<<10, Hits: 3, Puts: 2, PutBytes: 1<<20 + 300<<10}
	if got := s.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestSyncWritesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{Logger: quietLogger(), SyncWrites: true, segmentSize: 1 << 20}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []Chunk
	for i := range 5 {
		data, sum := testChunk(uint64(1370+i), 400<<10)
		chunks = append(chunks, Chunk{Sum: sum, Data: data})
	}
	mustPut(t, s, chunks[0].Sum, chunks[0].Data)
	if err := s.PutVerified(chunks[1:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if got := s.Stats(); got.Chunks != 5 || got.ChunkBytes != 5*400<<10 {
		t.Fatalf("Stats after reopen = %+v, want 5 chunks", got)
	}
	for _, c := range chunks {
		if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x): %v", c.Sum[:4], err)
		}
	}
}

// TestCloseDuringGets closes the store under concurrent Gets: each Get
// returns its chunk or ErrClosed, never an error from a descriptor closed
// under it.
func TestCloseDuringGets(t *testing.T) {
	s, err := Open(t.TempDir(), &Options{Logger: quietLogger(), segmentSize: 1 << 20, maxOpenSegments: 1})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []Chunk
	for i := range 4 {
		data, sum := testChunk(uint64(1380+i), 600<<10)
		chunks = append(chunks, Chunk{Sum: sum, Data: data})
		mustPut(t, s, sum, data)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			<-start
			buf := make([]byte, 0, 600<<10)
			for k := 0; ; k++ {
				c := chunks[(k+w)%len(chunks)]
				got, err := s.Get(c.Sum, buf)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil || !bytes.Equal(got, c.Data) {
					t.Errorf("Get during Close: %v", err)
					return
				}
			}
		})
	}
	close(start)
	if _, err := s.Get(chunks[0].Sum, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if got := s.Stats(); got.Corrupt != 0 {
		t.Fatalf("Corrupt = %d after Close under Gets, want 0", got.Corrupt)
	}
}

func TestOpenIgnoresStrayFilesAmongSegments(t *testing.T) {
	dir := t.TempDir()
	stray := filepath.Join(dir, segmentsDir, "000001.seg.tmp")
	if err := os.MkdirAll(filepath.Dir(stray), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("not a segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, dir)
	data, sum := testChunk(1390, 1000)
	mustPut(t, s, sum, data)
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v", err)
	}
	if raw, err := os.ReadFile(stray); err != nil || string(raw) != "not a segment" {
		t.Fatalf("stray file: %q, %v; want it untouched", raw, err)
	}
}

// TestAppenderUndo: the bytes of a batch whose index commit failed are cut
// off, and the next batch goes where they were.
func TestAppenderUndo(t *testing.T) {
	a := appender{dir: t.TempDir(), limit: 1 << 20, id: 1}
	t.Cleanup(func() { a.close() })
	for _, tc := range []struct {
		bufs    [][]byte
		wantOff int64
		undo    bool
	}{
		{[][]byte{[]byte("abc"), {}, []byte("de")}, 0, false},
		{[][]byte{[]byte("garbage")}, 5, true},
		{[][]byte{[]byte("fgh")}, 5, false},
	} {
		p, err := a.append(tc.bufs)
		if err != nil || p.seg != 1 || p.offs[0] != tc.wantOff {
			t.Fatalf("append(%q) = %+v, %v; want segment 1, offset %d", tc.bufs, p, err, tc.wantOff)
		}
		if tc.undo {
			a.undo(p)
		}
	}
	raw, err := os.ReadFile(filepath.Join(a.dir, segmentName(1)))
	if err != nil || string(raw) != "abcdefgh" {
		t.Fatalf("segment = %q, %v; want %q", raw, err, "abcdefgh")
	}
}

// TestPwritevAllManyBuffers writes more buffers than a batch ever holds
// and checks every byte lands in order.
func TestPwritevAllManyBuffers(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		bufs [][]byte
		want []byte
	)
	for i := range 300 {
		b := bytes.Repeat([]byte{byte(i)}, i%7*1000)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	if err := pwritevAll(f, bufs, 10); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[10:], want) || !bytes.Equal(raw[:10], make([]byte, 10)) {
		t.Fatalf("file holds %d bytes, not the %d written at offset 10", len(raw), len(want))
	}
}

// TestWholeChunksWrittenPastPageCache: a whole chunk in a buffer of its own
// goes to the segment with direct I/O (the page cache holds none of its
// pages afterwards, nor after Get read it back), a short chunk through the
// page cache, and both read back intact, before and after a reopen.
func TestWholeChunksWrittenPastPageCache(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	whole, wholeSum := testChunk(1, 1<<20)
	tail, tailSum := testChunk(2, 5000)
	if err := s.PutVerified([]Chunk{{Sum: tailSum, Data: tail}, {Sum: wholeSum, Data: whole}}); err != nil {
		t.Fatal(err)
	}
	_, seg := locate(t, s, wholeSum)
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, seg, 0, unix.STATX_DIOALIGN, &st); err != nil || st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 {
		t.Skipf("the file system of the test directory offers no direct I/O (statx: %v)", err)
	}
	if s.app.df == nil {
		t.Fatal("the active segment has no O_DIRECT descriptor on a file system that offers direct I/O")
	}
	cachedIn := func(sum [32]byte) (pages, want uint64) {
		loc, p := locate(t, s, sum)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var cs unix.Cachestat_t
		rng := unix.CachestatRange{Off: uint64(alignDown(loc.off)), Len: uint64(alignUp(loc.off+int64(loc.n)) - alignDown(loc.off))}
		if err := unix.Cachestat(uint(f.Fd()), &rng, &cs, 0); err != nil {
			t.Skipf("no cachestat(2): %v", err)
		}
		return cs.Cache, rng.Len / chunkAlign
	}
	if got, _ := cachedIn(wholeSum); got != 0 {
		t.Errorf("%d pages of the whole chunk are in the page cache, want 0 (direct write)", got)
	}
	if got, want := cachedIn(tailSum); got != want {
		t.Errorf("%d pages of the short chunk are in the page cache, want %d (written through it)", got, want)
	}
	check := func(s *Store) {
		for _, c := range []Chunk{{Sum: wholeSum, Data: whole}, {Sum: tailSum, Data: tail}} {
			if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
				t.Fatalf("Get(%x): %v, equal %v", c.Sum[:4], err, bytes.Equal(got, c.Data))
			}
		}
	}
	check(s)
	// And read back past it: a chunk a reader has in hand is not cached twice.
	if got, _ := cachedIn(wholeSum); got != 0 {
		t.Errorf("%d pages of the whole chunk are in the page cache after Get, want 0 (direct read)", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
}

// TestDirectWriteRefusedFallsBack: when the file system refuses a direct
// write that the appender took for allowed (here: an alignment made up to
// let an unaligned buffer through), the chunk is written through the page
// cache instead, and direct writes stop for the store (the appender's
// descriptor is gone).
func TestDirectWriteRefusedFallsBack(t *testing.T) {
	s := openTest(t, t.TempDir())
	first, firstSum := testChunk(1, 1<<20)
	if err := s.PutVerified([]Chunk{{Sum: firstSum, Data: first}}); err != nil {
		t.Fatal(err)
	}
	if s.app.df == nil {
		t.Skip("no direct I/O on the test directory's file system")
	}
	s.app.dio = directio.Alignment{Mem: 1, Off: 1}
	raw := make([]byte, 64<<10+1)
	copy(raw[1:], first)
	odd := raw[1:] // 64 KiB at an odd address: O_DIRECT refuses it
	oddSum := sha256.Sum256(odd)
	if err := s.PutVerified([]Chunk{{Sum: oddSum, Data: odd}}); err != nil {
		t.Fatalf("PutVerified after a refused direct write: %v", err)
	}
	for _, c := range []Chunk{{Sum: firstSum, Data: first}, {Sum: oddSum, Data: odd}} {
		if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x): %v", c.Sum[:4], err)
		}
	}
	if s.app.df != nil {
		t.Skip("this device takes direct I/O from any address: nothing was refused")
	}
}
