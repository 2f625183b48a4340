package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

// testChunkBLAKE3 returns the bytes of testChunk(seed, size) and their
// BLAKE3.
func testChunkBLAKE3(seed uint64, size int) ([]byte, [32]byte) {
	data, _ := testChunk(seed, size)
	return data, blake3.Sum256(data)
}

// TestBLAKE3ChunksRoundTrip: BLAKE3 chunks stored with Put and with
// PutVerified come back from Get byte for byte, their records name BLAKE3,
// and so they do after a reopen (the index is rebuilt from the records).
func TestBLAKE3ChunksRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	a, sa := testChunkBLAKE3(700, 1<<20)
	b, sb := testChunkBLAKE3(701, 5000)
	if err := s.Put(Chunk{Sum: sa, Alg: chunkhash.BLAKE3, Data: a}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.PutVerified([]Chunk{{Sum: sb, Alg: chunkhash.BLAKE3, Data: b}}); err != nil {
		t.Fatalf("PutVerified: %v", err)
	}
	check := func(s *Store) {
		t.Helper()
		for _, c := range []Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}} {
			if got, err := s.Get(c.Sum, nil); err != nil || !bytes.Equal(got, c.Data) {
				t.Fatalf("Get(%x) = %d bytes, %v; want the %d bytes stored", c.Sum[:4], len(got), err, len(c.Data))
			}
			if loc, _ := locate(t, s, c.Sum); loc.alg != chunkhash.BLAKE3 {
				t.Fatalf("record of %x names %v, want blake3", c.Sum[:4], loc.alg)
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	check(s)
	if got := events(s.Stats()); got != (Stats{Chunks: 2, ChunkBytes: 1<<20 + 5000, Hits: 2}) {
		t.Fatalf("Stats after reopen = %+v", got)
	}
}

// TestGetDropsCorruptBLAKE3Chunk: a BLAKE3 chunk damaged in its segment is
// caught by Get, reported as ErrCorrupt, removed and counted; an intact
// BLAKE3 chunk of the same segment is still returned.
func TestGetDropsCorruptBLAKE3Chunk(t *testing.T) {
	s := openTest(t, t.TempDir())
	bad, sbad := testChunkBLAKE3(710, 1<<20)
	good, sgood := testChunkBLAKE3(711, 1<<20)
	if err := s.PutVerified([]Chunk{{Sum: sbad, Alg: chunkhash.BLAKE3, Data: bad}, {Sum: sgood, Alg: chunkhash.BLAKE3, Data: good}}); err != nil {
		t.Fatal(err)
	}
	locBad, seg := locate(t, s, sbad)
	if locGood, segGood := locate(t, s, sgood); segGood != seg || locGood.off == locBad.off {
		t.Fatalf("chunks at %+v in %s and %+v in %s, want two places in one segment", locBad, seg, locGood, segGood)
	}
	flipByte(t, seg, locBad.off+12345, 0x01)

	if got, err := s.Get(sbad, nil); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Get of the damaged chunk = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
	}
	if ok, err := s.Has(sbad); err != nil || ok {
		t.Fatalf("Has after the corrupt Get = %v, %v; want false, nil", ok, err)
	}
	if got, err := s.Get(sgood, nil); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("Get of the intact chunk = %d bytes, %v", len(got), err)
	}
	want := Stats{Chunks: 1, ChunkBytes: 1 << 20, Hits: 1, Corrupt: 1, Puts: 2, PutBytes: 2 << 20}
	if got := events(s.Stats()); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

// TestGetVerifiesWithRecordedAlg: Get hashes a chunk with the algorithm it
// was stored under, not SHA-256. A chunk handed to PutVerified under its
// SHA-256 but labelled BLAKE3 never verifies, and is dropped.
func TestGetVerifiesWithRecordedAlg(t *testing.T) {
	s := openTest(t, t.TempDir())
	data, shaSum := testChunk(720, 3000)
	if err := s.PutVerified([]Chunk{{Sum: shaSum, Alg: chunkhash.BLAKE3, Data: data}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(shaSum, nil); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Get of a SHA-256 sum recorded as BLAKE3 = %d bytes, %v; want nil, ErrCorrupt", len(got), err)
	}
	if got := events(s.Stats()); got.Corrupt != 1 || got.Chunks != 0 {
		t.Fatalf("Stats = %+v, want the chunk counted corrupt and gone", got)
	}
	// Labelled right, the same bytes are stored and returned.
	mustPut(t, s, shaSum, data)
	if got, err := s.Get(shaSum, nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get of the SHA-256 chunk = %d bytes, %v", len(got), err)
	}
	if loc, _ := locate(t, s, shaSum); loc.alg != chunkhash.SHA256 {
		t.Fatalf("record names %v, want sha256", loc.alg)
	}
}

// TestPutVerifiesWithChunkAlg: Put hashes with the chunk's Alg and stores
// nothing when the data does not hash to Sum under it, or Alg is unknown;
// PutVerified refuses an unknown Alg too.
func TestPutVerifiesWithChunkAlg(t *testing.T) {
	data, shaSum := testChunk(730, 4096)
	b3Sum := blake3.Sum256(data)
	if shaSum != sha256.Sum256(data) {
		t.Fatal("testChunk does not return the SHA-256")
	}
	tests := []struct {
		name string
		c    Chunk
	}{
		{"blake3 sum as sha256", Chunk{Sum: b3Sum, Alg: chunkhash.SHA256, Data: data}},
		{"sha256 sum as blake3", Chunk{Sum: shaSum, Alg: chunkhash.BLAKE3, Data: data}},
		{"unknown alg", Chunk{Sum: b3Sum, Alg: 2, Data: data}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, t.TempDir())
			if err := s.Put(tt.c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Put = %v, want ErrCorrupt", err)
			}
			if got := events(s.Stats()); got != (Stats{}) {
				t.Fatalf("Stats after a refused Put = %+v, want nothing stored", got)
			}
		})
	}
	s := openTest(t, t.TempDir())
	good, sgood := testChunk(731, 100)
	err := s.PutVerified([]Chunk{{Sum: sgood, Data: good}, {Sum: b3Sum, Alg: 9, Data: data}})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutVerified with alg 9 = %v, want ErrCorrupt", err)
	}
	if got := events(s.Stats()); got != (Stats{}) {
		t.Fatalf("Stats after a refused PutVerified = %+v, want nothing stored", got)
	}
}
