package chunkstore

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// testChunk returns size deterministic pseudo-random bytes for seed, and
// their SHA-256.
func testChunk(seed uint64, size int) ([]byte, [32]byte) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(size))
	data := make([]byte, size)
	rand.NewChaCha8(key).Read(data)
	return data, sha256.Sum256(data)
}

// quietLogger discards everything.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTest opens a store in dir and closes it when the test ends.
func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Logger: quietLogger()})
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

// mustPut stores a chunk or fails the test.
func mustPut(t testing.TB, s *Store, sum [32]byte, data []byte) {
	t.Helper()
	if err := s.Put(sum, data); err != nil {
		t.Fatalf("Put(%x): %v", sum[:4], err)
	}
}

// countKeys counts the Badger keys in namespace ns.
func countKeys(t testing.TB, s *Store, ns byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{ns}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("count keys %q: %v", ns, err)
	}
	return n
}
