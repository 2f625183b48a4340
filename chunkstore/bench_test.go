package chunkstore

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// BenchmarkPut stores distinct 1 MiB chunks (hash check included; the
// caller's own hashing is not timed).
func BenchmarkPut(b *testing.B) {
	s := openTest(b, b.TempDir())
	data, _ := testChunk(700, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		b.StopTimer()
		i++
		binary.LittleEndian.PutUint64(data, i)
		sum := sha256.Sum256(data)
		b.StartTimer()
		if err := s.Put(Chunk{Sum: sum, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutVerified stores distinct 1 MiB chunks in batches of 8, as
// the filesystem's store writer does (no hashing in the store).
func BenchmarkPutVerified(b *testing.B) {
	s := openTest(b, b.TempDir())
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
}

// BenchmarkGet reads 1 MiB chunks round-robin from a 128-chunk working set
// (warm: in the page cache) into a reused buffer.
func BenchmarkGet(b *testing.B) {
	s := openTest(b, b.TempDir())
	const n = 128
	sums := make([][32]byte, n)
	for i := range n {
		var data []byte
		data, sums[i] = testChunk(uint64(800+i), 1<<20)
		mustPut(b, s, sums[i], data)
	}
	buf := make([]byte, 0, 1<<20)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		out, err := s.Get(sums[i%n], buf)
		if err != nil {
			b.Fatal(err)
		}
		buf = out
		i++
	}
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	s := openTest(b, b.TempDir())
	const n = 128
	sums := make([][32]byte, n)
	for i := range n {
		var data []byte
		data, sums[i] = testChunk(uint64(900+i), 1<<20)
		mustPut(b, s, sums[i], data)
	}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 1<<20)
		i := 0
		for pb.Next() {
			out, err := s.Get(sums[i%n], buf)
			if err != nil {
				b.Error(err)
				return
			}
			buf = out
			i++
		}
	})
}

// BenchmarkSHA256 is the verification floor of Put and Get: hashing 1 MiB.
func BenchmarkSHA256(b *testing.B) {
	data, _ := testChunk(1000, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}
