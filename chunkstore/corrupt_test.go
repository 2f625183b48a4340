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

func TestGetCorruptChunkRemovesIt(t *testing.T) {
	for _, size := range []int{100, 1 << 20} { // inline and in the value log
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			s := openTest(t, t.TempDir())
			data, sum := testChunk(uint64(500+size), size)
			mustPut(t, s, sum, data)
			bad := bytes.Clone(data)
			bad[size/2] ^= 0x40
			overwrite(t, s, chunkKey(sum), bad)

			buf := make([]byte, 0, size)
			if got, err := s.Get(sum, buf); !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("Get of damaged chunk = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
			}
			if ok, err := s.Has(sum); err != nil || ok {
				t.Fatalf("Has after corrupt Get = %v, %v; want false, nil", ok, err)
			}
			if n := countKeys(t, s, nsChunk) + countKeys(t, s, nsInfo); n != 0 {
				t.Fatalf("%d chunk/info keys left after corrupt Get, want 0", n)
			}
			want := Stats{Corrupt: 1, Puts: 1, PutBytes: int64(size)}
			if got := s.Stats(); got != want {
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
			if got := s.Stats(); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

func TestConcurrentGetsOfCorruptChunkCountItOnce(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(510, 256<<10)
	mustPut(t, s, sum, data)
	overwrite(t, s, chunkKey(sum), data[1:]) // truncated: wrong length, wrong hash
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := s.Get(sum, nil)
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) {
				t.Errorf("Get = %v, want ErrCorrupt or ErrNotFound", err)
			}
		})
	}
	wg.Wait()
	if got := s.Stats(); got.Corrupt != 1 || got.Chunks != 0 || got.ChunkBytes != 0 {
		t.Fatalf("Stats = %+v, want Corrupt 1, Chunks 0, ChunkBytes 0", got)
	}
}

func TestCorruptRemovalSparesAReplacement(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(511, 1000)
	mustPut(t, s, sum, data)
	// A reader saw version v of the chunk as corrupt, but the chunk has since
	// been rewritten: the removal must not touch the new version.
	var v uint64
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(sum))
		v = item.Version()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	overwrite(t, s, chunkKey(sum), data)
	if err := s.dropCorrupt(sum, v, "test"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after stale removal: %v", err)
	}
	if got := s.Stats(); got.Corrupt != 0 || got.Chunks != 1 {
		t.Fatalf("Stats = %+v, want Corrupt 0, Chunks 1", got)
	}
}

// TestCorruptBytesOnDisk flips one bit of a chunk inside Badger's value log
// file while the store is closed. In a sealed (older) value log file only
// that chunk is damaged. In the last file, Badger's open-time check finds
// the bad entry and truncates the file there, which also loses the chunk
// written after it: Get must report both as corrupt, never return bytes.
func TestCorruptBytesOnDisk(t *testing.T) {
	for _, tc := range []struct {
		name          string
		sealed        bool // reopen once so that the chunks' file is no longer the last
		laterSurvives bool
	}{
		{"sealed value log file", true, true},
		{"last value log file", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, sa := testChunk(520, 1<<20)
			b, sb := testChunk(521, 1<<20)
			s, err := Open(dir, &Options{Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			mustPut(t, s, sa, a)
			mustPut(t, s, sb, b)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.sealed {
				// Each Open starts a new value log file.
				s, err := Open(dir, &Options{Logger: quietLogger()})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			flipChunkBit(t, dir, a)

			s = openTest(t, dir)
			if got := s.Stats(); got.Chunks != 2 {
				t.Fatalf("Chunks after reopen = %d, want 2", got.Chunks)
			}
			if got, err := s.Get(sa, nil); !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("Get of damaged chunk = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
			}
			if ok, err := s.Has(sa); err != nil || ok {
				t.Fatalf("Has after corrupt Get = %v, %v; want false, nil", ok, err)
			}
			got, err := s.Get(sb, nil)
			want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Hits: 1, Corrupt: 1}
			if tc.laterSurvives {
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("Get of undamaged chunk: %v", err)
				}
			} else {
				if !errors.Is(err, ErrCorrupt) || got != nil {
					t.Fatalf("Get of chunk after the truncation point = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
				}
				want = Stats{Corrupt: 2}
			}
			if got := s.Stats(); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
			mustPut(t, s, sa, a)
			if got, err := s.Get(sa, nil); err != nil || !bytes.Equal(got, a) {
				t.Fatalf("Get after re-Put: %v", err)
			}
		})
	}
}

// TestDamagedEntryHeader enlarges the value length in the header of a value
// log entry. Badger's read path returns early on such an entry without
// releasing the file's read lock, after which Close would hang forever;
// VerifyValueChecksum makes it fail the CRC first. Get must report the chunk
// as corrupt and Close must return.
func TestDamagedEntryHeader(t *testing.T) {
	dir := t.TempDir()
	a, sa := testChunk(530, 1<<20)
	for range 2 { // the second Open seals the value log file holding a
		s, err := Open(dir, &Options{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, sa, a)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "000001.vlog")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, a[:4096])
	if i < 0 {
		t.Fatal("chunk not found in 000001.vlog")
	}
	// The entry is header | key (33 bytes) + version (8) | value | CRC; the
	// header ends with the varint value length and a zero expiry byte.
	raw[i-41-2] = 0x7f // value length 0x7f<<14 (2 MiB): beyond the entry
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(sa, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get = %v, want ErrCorrupt", err)
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

// flipChunkBit finds chunk data in the .vlog files of dir and flips one bit
// in its middle.
func flipChunkBit(t *testing.T, dir string, data []byte) {
	t.Helper()
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	damaged := 0
	for _, p := range vlogs {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(raw, data[:4096])
		if i < 0 {
			continue
		}
		off := i + len(data)/2
		raw[off] ^= 0x01
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		damaged++
	}
	if damaged != 1 {
		t.Fatalf("found the chunk in %d of %d value log files, want 1", damaged, len(vlogs))
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
