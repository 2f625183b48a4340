package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestPutGetRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir())
	// Empty, small, around Badger's value threshold (which chunks no longer
	// meet: their bytes are in segments) and the usual 1 MiB.
	for i, size := range []int{0, 1, 4096, 32<<10 - 1, 32 << 10, 32<<10 + 1, 1 << 20, 1<<20 + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data, sum := testChunk(uint64(i), size)
			if ok, err := s.Has(sum); err != nil || ok {
				t.Fatalf("Has before Put = %v, %v; want false, nil", ok, err)
			}
			mustPut(t, s, sum, data)
			if ok, err := s.Has(sum); err != nil || !ok {
				t.Fatalf("Has after Put = %v, %v; want true, nil", ok, err)
			}
			got, err := s.Get(sum, nil)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), len(data))
			}
		})
	}
}

func TestGetReusesBuffer(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(1, 1<<20)
	mustPut(t, s, sum, data)

	buf := make([]byte, 7, 2<<20)
	got, err := s.Get(sum, buf)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, data) || &got[0] != &buf[:1][0] {
		t.Fatalf("Get with a large enough buf: equal=%v, reused=%v; want both", bytes.Equal(got, data), &got[0] == &buf[:1][0])
	}

	small := make([]byte, 0, 1024)
	got, err = s.Get(sum, small)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("Get with a small buf returned wrong bytes")
	}
}

func TestPutIdenticalChunkStoredOnce(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(2, 1<<20)
	for range 3 {
		mustPut(t, s, sum, data)
	}
	want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Puts: 1, PutBytes: 1 << 20, PutDups: 2}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestPutWrongDataIsCorruptAndWritesNothing(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(3, 1<<20)
	bad := bytes.Clone(data)
	bad[12345] ^= 1
	if err := s.Put(Chunk{Sum: sum, Data: bad}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Put(wrong data) = %v, want ErrCorrupt", err)
	}
	if ok, err := s.Has(sum); err != nil || ok {
		t.Fatalf("Has after rejected Put = %v, %v; want false, nil", ok, err)
	}
	if _, err := s.Get(sum, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after rejected Put = %v, want ErrNotFound", err)
	}
	if got, want := events(s.Stats()), (Stats{Misses: 1}); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	// Nothing at all was written: not even a chunk record or a byte.
	if n := countKeys(t, s, nsInfo); n != 0 {
		t.Fatalf("%d chunk records after a rejected Put, want 0", n)
	}
	if n := segmentBytes(t, s); n != 0 {
		t.Fatalf("%d bytes in segments after a rejected Put, want 0", n)
	}
}

func TestPutDoesNotRetainData(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(4, 100<<10)
	want := bytes.Clone(data)
	mustPut(t, s, sum, data)
	for i := range data {
		data[i] = 0xAA
	}
	got, err := s.Get(sum, nil)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("stored chunk changed when the caller reused its buffer")
	}
}

func TestGetMissingIsNotFound(t *testing.T) {
	s := openTest(t, t.TempDir())
	_, sum := testChunk(5, 10)
	if _, err := s.Get(sum, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	if got, want := events(s.Stats()), (Stats{Misses: 1}); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestDelete(t *testing.T) {
	s := openTest(t, t.TempDir())
	a, sa := testChunk(6, 1<<20)
	b, sb := testChunk(7, 1000)
	mustPut(t, s, sa, a)
	mustPut(t, s, sb, b)
	if err := s.Delete(sa); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ok, err := s.Has(sa); err != nil || ok {
		t.Fatalf("Has after Delete = %v, %v; want false, nil", ok, err)
	}
	if _, err := s.Get(sa, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	if got, err := s.Get(sb, nil); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get of the other chunk = %v; want it intact", err)
	}
	if err := s.Delete(sa); err != nil {
		t.Fatalf("second Delete = %v, want nil", err)
	}
	want := Stats{Chunks: 1, ChunkBytes: 1000, Hits: 1, Misses: 1, Puts: 2, PutBytes: 1<<20 + 1000}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	// Put after Delete stores it again.
	mustPut(t, s, sa, a)
	if got, err := s.Get(sa, nil); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Get after re-Put: %v", err)
	}
}

func TestStatsExactUnderConcurrency(t *testing.T) {
	s := openTest(t, t.TempDir())
	const chunks, workers = 16, 6
	data := make([][]byte, chunks)
	sums := make([][32]byte, chunks)
	for i := range chunks {
		data[i], sums[i] = testChunk(uint64(100+i), 64<<10+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for k := range chunks {
				i := (k + w) % chunks
				if err := s.Put(Chunk{Sum: sums[i], Data: data[i]}); err != nil {
					errs <- err
					return
				}
				got, err := s.Get(sums[i], nil)
				if err != nil || !bytes.Equal(got, data[i]) {
					errs <- fmt.Errorf("Get %d: %v", i, err)
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
	var bytesTotal int64
	for i := range chunks {
		bytesTotal += int64(len(data[i]))
	}
	want := Stats{
		Chunks: chunks, ChunkBytes: bytesTotal,
		Hits: chunks * workers, Puts: chunks, PutBytes: bytesTotal, PutDups: chunks*workers - chunks,
	}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}

	// Concurrent Deletes of the same chunks count each removal once.
	wg = sync.WaitGroup{}
	for range workers {
		wg.Go(func() {
			for i := range chunks / 2 {
				if err := s.Delete(sums[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var left int64
	for i := chunks / 2; i < chunks; i++ {
		left += int64(len(data[i]))
	}
	if got := s.Stats(); got.Chunks != chunks/2 || got.ChunkBytes != left {
		t.Fatalf("after deletes Chunks, ChunkBytes = %d, %d; want %d, %d", got.Chunks, got.ChunkBytes, chunks/2, left)
	}
}

func TestCountersSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	chunks := map[[32]byte][]byte{}
	for i, size := range []int{10, 40 << 10, 1 << 20, 1 << 20, 5} {
		data, sum := testChunk(uint64(200+i), size)
		mustPut(t, s, sum, data)
		chunks[sum] = data
		total += int64(size)
	}
	if err := s.PutMeta("manifest/a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTest(t, dir)
	if got, want := events(s.Stats()), (Stats{Chunks: 5, ChunkBytes: total}); got != want {
		t.Fatalf("Stats after reopen = %+v, want %+v", got, want)
	}
	for sum, data := range chunks {
		got, err := s.Get(sum, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get(%x) after reopen: %v", sum[:4], err)
		}
	}
	if v, err := s.GetMeta("manifest/a"); err != nil || string(v) != "hello" {
		t.Fatalf("GetMeta after reopen = %q, %v", v, err)
	}
}

func TestSecondOpenOfSameDirFails(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s2, err := Open(dir, &Options{Logger: quietLogger()})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of an open dir succeeded")
	}
	if !strings.Contains(err.Error(), "directory lock") {
		t.Fatalf("second Open error %q does not name the directory lock", err)
	}
	// The first store is undisturbed.
	data, sum := testChunk(300, 100)
	mustPut(t, s, sum, data)
	if _, err := s.Get(sum, nil); err != nil {
		t.Fatalf("Get on the first store: %v", err)
	}
}

func TestOpenAfterCloseSucceeds(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
}

func TestUseAfterCloseIsErrClosed(t *testing.T) {
	s, err := Open(t.TempDir(), &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, sum := testChunk(301, 10)
	checks := map[string]error{
		"Put":   s.Put(Chunk{Sum: sum, Data: data}),
		"Get":   func() error { _, err := s.Get(sum, nil); return err }(),
		"Has":   func() error { _, err := s.Has(sum); return err }(),
		"Del":   s.Delete(sum),
		"PutM":  s.PutMeta("k", nil),
		"GetM":  func() error { _, err := s.GetMeta("k"); return err }(),
		"DelM":  s.DeleteMeta("k"),
		"ScanM": s.ScanMeta("", func(string, []byte) error { return nil }),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestOpenRefusesForeignBadgerDir(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err == nil {
		s.Close()
		t.Fatal("Open of a Badger directory with another format magic succeeded")
	}
	if !strings.Contains(err.Error(), "magic") {
		t.Fatalf("Open error %q does not name the format magic", err)
	}
}
