package chunkstore

import (
	"bytes"
	"errors"
	"testing"
)

func TestPutVerifiedStoresEveryChunk(t *testing.T) {
	s := openTest(t, t.TempDir())
	// Inline and value-log sizes in one batch.
	var chunks []Chunk
	var total int64
	for i, size := range []int{0, 100, 32<<10 - 1, 32 << 10, 1 << 20, 1<<20 + 5} {
		data, sum := testChunk(uint64(100+i), size)
		chunks = append(chunks, Chunk{Sum: sum, Data: data})
		total += int64(size)
	}
	if err := s.PutVerified(chunks); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	for _, c := range chunks {
		got, err := s.Get(c.Sum, nil)
		if err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x) = %d bytes, %v; want the %d put", c.Sum[:4], len(got), err, len(c.Data))
		}
	}
	n := int64(len(chunks))
	want := Stats{Chunks: n, ChunkBytes: total, Puts: n, PutBytes: total, Hits: n}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestPutVerifiedCountsDuplicates(t *testing.T) {
	s := openTest(t, t.TempDir())
	a, sa := testChunk(110, 1<<20)
	b, sb := testChunk(111, 2000)
	mustPut(t, s, sa, a)
	// a is stored already; b is listed twice.
	if err := s.PutVerified([]Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}, {Sum: sb, Data: b}}); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	want := Stats{Chunks: 2, ChunkBytes: 1<<20 + 2000, Puts: 2, PutBytes: 1<<20 + 2000, PutDups: 2}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if n := countKeys(t, s, nsInfo); n != 2 {
		t.Fatalf("%d chunk records, want 2", n)
	}
	if n := segmentBytes(t, s); n != 1<<20+2000 {
		t.Fatalf("%d bytes in segments, want %d (each chunk once)", n, 1<<20+2000)
	}
}

func TestPutVerifiedLongBatchSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// More chunks than one transaction takes.
	const n = 3*maxBatchChunks + 5
	chunks := make([]Chunk, n)
	var total int64
	for i := range chunks {
		data, sum := testChunk(uint64(1000+i), 32<<10-1)
		chunks[i] = Chunk{Sum: sum, Data: data}
		total += int64(len(data))
	}
	if err := s.PutVerified(chunks); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if got := s.Stats(); got.Chunks != n || got.ChunkBytes != total {
		t.Fatalf("after reopen: %d chunks of %d bytes, want %d of %d", got.Chunks, got.ChunkBytes, n, total)
	}
	for _, c := range chunks {
		if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("Get(%x) after reopen: %v", c.Sum[:4], err)
		}
	}
}

func TestPutVerifiedWrongDataNeverLeavesTheStore(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(120, 1<<20)
	bad := bytes.Clone(data)
	bad[777] ^= 1
	// The caller's promise is broken: the store keeps what it was given...
	if err := s.PutVerified([]Chunk{{Sum: sum, Data: bad}}); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	// ...but Get verifies, drops it, and the chunk can be stored again.
	if _, err := s.Get(sum, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get = %v, want ErrCorrupt", err)
	}
	if ok, err := s.Has(sum); err != nil || ok {
		t.Fatalf("Has after a corrupt Get = %v, %v; want false, nil", ok, err)
	}
	mustPut(t, s, sum, data)
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after Put of the right data: %v", err)
	}
	want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Puts: 2, PutBytes: 2 << 20, Corrupt: 1, Hits: 1}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestPutVerifiedDoesNotRetainData(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, sum := testChunk(130, 100<<10)
	want := bytes.Clone(data)
	if err := s.PutVerified([]Chunk{{Sum: sum, Data: data}}); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	for i := range data {
		data[i] = 0xAA
	}
	if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("stored chunk changed when the caller reused its buffer: %v", err)
	}
}

func TestPutVerifiedAfterCloseFails(t *testing.T) {
	s, err := Open(t.TempDir(), &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, sum := testChunk(140, 10)
	if err := s.PutVerified([]Chunk{{Sum: sum, Data: data}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutVerified after Close = %v, want ErrClosed", err)
	}
}
