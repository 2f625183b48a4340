package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// overwrite stores value under Badger key k directly, bypassing every check
// of the Store: the test-only way to plant damage.
func overwrite(t *testing.T, s *Store, k, value []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, value) }); err != nil {
		t.Fatalf("plant damage: %v", err)
	}
}

// TestGetCorruptChunkRemovesIt damages a stored chunk's bytes in its
// segment while the store is open: Get must report it, drop it, count it,
// and take it again.
func TestGetCorruptChunkRemovesIt(t *testing.T) {
	for _, size := range []int{100, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := openTest(t, t.TempDir())
			data, sum := testChunk(uint64(500+size), size)
			mustPut(t, s, sum, data)
			loc, seg := locate(t, s, sum)
			flipByte(t, seg, loc.off+int64(size/2), 0x40)

			buf := make([]byte, 0, size)
			if got, err := s.Get(sum, buf); !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("Get of damaged chunk = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
			}
			if ok, err := s.Has(sum); err != nil || ok {
				t.Fatalf("Has after corrupt Get = %v, %v; want false, nil", ok, err)
			}
			if n := countKeys(t, s, nsInfo); n != 0 {
				t.Fatalf("%d chunk records left after corrupt Get, want 0", n)
			}
			want := Stats{Corrupt: 1, Puts: 1, PutBytes: int64(size)}
			if got := events(s.Stats()); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
			if _, err := s.Get(sum, nil); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second Get = %v, want ErrNotFound", err)
			}

			mustPut(t, s, sum, data)
			if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get after re-Put: %v", err)
			}
			want = Stats{Chunks: 1, ChunkBytes: int64(size), Hits: 1, Misses: 1, Corrupt: 1, Puts: 2, PutBytes: 2 * int64(size)}
			if got := events(s.Stats()); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
			// The damaged copy's segment held nothing else: it is gone, and
			// the chunk went to a new one.
			if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("segment of the damaged copy: %v, want it removed", err)
			}
			if again, p := locate(t, s, sum); again.seg != loc.seg+1 || again.off != 0 || p == seg {
				t.Fatalf("re-Put stored at %+v, want offset 0 of segment %d", again, loc.seg+1)
			}
			if got := s.Stats(); got.DiskBytes != alignUp(int64(size)) || got.SegmentsRemoved != 1 {
				t.Fatalf("Stats = %+v, want DiskBytes %d, SegmentsRemoved 1", got, alignUp(int64(size)))
			}
		})
	}
}

// TestConcurrentGetsOfTornChunkCountItOnce cuts a stored chunk's segment
// short (a torn chunk): concurrent Gets must never return it, and it is
// removed and counted once.
func TestConcurrentGetsOfTornChunkCountItOnce(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(510, 256<<10)
	mustPut(t, s, sum, data)
	loc, seg := locate(t, s, sum)
	if err := os.Truncate(seg, loc.end()-1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			got, err := s.Get(sum, nil)
			if got != nil || (!errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound)) {
				t.Errorf("Get = %d bytes, %v; want nil, ErrCorrupt or ErrNotFound", len(got), err)
			}
		})
	}
	wg.Wait()
	if got := s.Stats(); got.Corrupt != 1 || got.Chunks != 0 || got.ChunkBytes != 0 {
		t.Fatalf("Stats = %+v, want Corrupt 1, Chunks 0, ChunkBytes 0", got)
	}
}

// TestGetOfChunkInMissingSegmentIsCorrupt removes a segment file under an
// open store.
func TestGetOfChunkInMissingSegmentIsCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(512, 4096)
	mustPut(t, s, sum, data)
	_, seg := locate(t, s, sum)
	if err := os.Remove(seg); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(sum, nil); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Get = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
	}
	if got := s.Stats(); got.Corrupt != 1 || got.Chunks != 0 {
		t.Fatalf("Stats = %+v, want Corrupt 1, Chunks 0", got)
	}
}

func TestCorruptRemovalSparesAReplacement(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(511, 1000)
	mustPut(t, s, sum, data)
	// A reader saw version v of the chunk as corrupt, but the chunk has since
	// been rewritten: the removal must not touch the new version.
	var (
		v   uint64
		rec []byte
	)
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(infoKey(sum))
		if err != nil {
			return err
		}
		v = item.Version()
		rec, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	overwrite(t, s, infoKey(sum), rec)
	if _, err := s.dropCorrupt(sum, v, "test"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after stale removal: %v", err)
	}
	if got := s.Stats(); got.Corrupt != 0 || got.Chunks != 1 {
		t.Fatalf("Stats = %+v, want Corrupt 0, Chunks 1", got)
	}
}

// TestDamagedChunkRecordIsCorrupt plants an unreadable chunk record: Get
// reports the chunk as corrupt and drops the record.
func TestDamagedChunkRecordIsCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(513, 1000)
	mustPut(t, s, sum, data)
	overwrite(t, s, infoKey(sum), []byte{infoV2, 1, 2})
	if got, err := s.Get(sum, nil); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Get = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
	}
	if ok, err := s.Has(sum); err != nil || ok {
		t.Fatalf("Has = %v, %v; want false, nil", ok, err)
	}
	if got := s.Stats(); got.Corrupt != 1 {
		t.Fatalf("Stats = %+v, want Corrupt 1", got)
	}
}

// TestRecordPastSegmentEndIsCorrupt plants a chunk record whose length
// runs far past its segment's end: Get must report it as corrupt without
// trying to allocate that length.
func TestRecordPastSegmentEndIsCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(514, 1000)
	mustPut(t, s, sum, data)
	loc, _ := locate(t, s, sum)
	loc.n = 1 << 50
	overwrite(t, s, infoKey(sum), encodeInfo(loc))
	if got, err := s.Get(sum, nil); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Get = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
	}
	if got := s.Stats(); got.Corrupt != 1 || got.Chunks != 0 {
		t.Fatalf("Stats = %+v, want Corrupt 1, Chunks 0", got)
	}
}

// TestCorruptBytesOnDisk flips one bit of a chunk inside its segment file
// while the store is closed, in a sealed segment and in the active one.
// Only that chunk is damaged: Get reports it as corrupt, never returns its
// bytes, and the chunk stored after it is intact.
func TestCorruptBytesOnDisk(t *testing.T) {
	for _, tc := range []struct {
		name        string
		segmentSize int64 // 1 MiB: a and b in segments of their own
	}{
		{"sealed segment", 1 << 20},
		{"active segment", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := &Options{Logger: quietLogger(), segmentSize: tc.segmentSize}
			a, sa := testChunk(520, 1<<20)
			b, sb := testChunk(521, 1<<20)
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			mustPut(t, s, sa, a)
			mustPut(t, s, sb, b)
			la, _ := locate(t, s, sa)
			lb, _ := locate(t, s, sb)
			if sealed := la.seg != lb.seg; sealed != (tc.segmentSize != 0) {
				t.Fatalf("a in segment %d, b in segment %d", la.seg, lb.seg)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			flipChunkBit(t, dir, a)

			s, err = Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if got := s.Stats(); got.Chunks != 2 {
				t.Fatalf("Chunks after reopen = %d, want 2", got.Chunks)
			}
			if got, err := s.Get(sa, nil); !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("Get of damaged chunk = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
			}
			if ok, err := s.Has(sa); err != nil || ok {
				t.Fatalf("Has after corrupt Get = %v, %v; want false, nil", ok, err)
			}
			if got, err := s.Get(sb, nil); err != nil || !bytes.Equal(got, b) {
				t.Fatalf("Get of undamaged chunk: %v", err)
			}
			want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Hits: 1, Corrupt: 1}
			if got := events(s.Stats()); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
			mustPut(t, s, sa, a)
			if got, err := s.Get(sa, nil); err != nil || !bytes.Equal(got, a) {
				t.Fatalf("Get after re-Put: %v", err)
			}
		})
	}
}

// TestDamagedEntryHeader enlarges the value length in the header of a
// Badger value log entry (a large metadata record; chunks no longer live
// there). Badger's read path returns early on such an entry without
// releasing the file's read lock, after which Close would hang forever;
// VerifyValueChecksum makes it fail the CRC first (Badger then logs the
// error and yields an empty value). GetMeta must report the record as
// corrupt and Close must return.
func TestDamagedEntryHeader(t *testing.T) {
	dir := t.TempDir()
	value, _ := testChunk(530, 64<<10)
	const key = "manifest/big"
	for round := range 2 { // the second Open seals the value log file holding the record
		s, err := Open(dir, &Options{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			if err := s.PutMeta(key, value); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "000001.vlog")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, encodeMeta(value))
	if i < 0 {
		t.Fatal("record not found in 000001.vlog")
	}
	// The entry is header | key (1+len(key) bytes) + version (8) | value |
	// CRC; the header ends with the varint value length and a zero expiry
	// byte.
	raw[i-(1+len(key)+8)-2] = 0x7f // value length 0x7f<<14 (2 MiB): beyond the entry
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetMeta(key); !errors.Is(err, ErrCorrupt) {
		t.Errorf("GetMeta of a damaged entry = %d bytes, %v; want ErrCorrupt", len(got), err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs: a value log read lock leaked")
	}
}

// flipChunkBit finds chunk data in the segment files of the store in dir
// and flips one bit in its middle.
func flipChunkBit(t *testing.T, dir string, data []byte) {
	t.Helper()
	segs := segmentFiles(t, dir)
	damaged := 0
	for _, p := range segs {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(raw, data[:4096])
		if i < 0 {
			continue
		}
		flipByte(t, p, int64(i+len(data)/2), 0x01)
		damaged++
	}
	if damaged != 1 {
		t.Fatalf("found the chunk in %d of %d segment files, want 1", damaged, len(segs))
	}
}

func TestGetMetaCorruptRemovesIt(t *testing.T) {
	s := openTest(t, t.TempDir())
	if err := s.PutMeta("manifest/f", []byte("hashes")); err != nil {
		t.Fatal(err)
	}
	rec := encodeMeta([]byte("hashes"))
	rec[len(rec)-1] ^= 1
	overwrite(t, s, metaKey("manifest/f"), rec)
	if _, err := s.GetMeta("manifest/f"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetMeta of damaged record = %v, want ErrCorrupt", err)
	}
	if _, err := s.GetMeta("manifest/f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second GetMeta = %v, want ErrNotFound", err)
	}
	if got := s.Stats(); got.MetaCorrupt != 1 {
		t.Fatalf("MetaCorrupt = %d, want 1", got.MetaCorrupt)
	}
	if err := s.PutMeta("manifest/f", []byte("hashes")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetMeta("manifest/f"); err != nil || string(v) != "hashes" {
		t.Fatalf("GetMeta after re-Put = %q, %v", v, err)
	}
}

func TestScanMetaSkipsAndRemovesCorrupt(t *testing.T) {
	s := openTest(t, t.TempDir())
	for _, k := range []string{"r/a", "r/b", "r/c"} {
		if err := s.PutMeta(k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	overwrite(t, s, metaKey("r/b"), []byte{metaV1, 0, 0}) // short record
	var seen []string
	if err := s.ScanMeta("r/", func(k string, v []byte) error {
		seen = append(seen, k+"="+string(v))
		return nil
	}); err != nil {
		t.Fatalf("ScanMeta: %v", err)
	}
	if got, want := len(seen), 2; got != want || seen[0] != "r/a=r/a" || seen[1] != "r/c=r/c" {
		t.Fatalf("ScanMeta saw %q, want [r/a=r/a r/c=r/c]", seen)
	}
	if _, err := s.GetMeta("r/b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta of skipped record = %v, want ErrNotFound", err)
	}
	if got := s.Stats(); got.MetaCorrupt != 1 {
		t.Fatalf("MetaCorrupt = %d, want 1", got.MetaCorrupt)
	}
}
