package chunkstoretest

import (
	"crypto/sha256"
	"testing"

	"github.com/kwikfs/kwikfs/chunkstore"
)

// TestMemStore runs the conformance suite on a MemStore.
func TestMemStore(t *testing.T) {
	Run(t, func(*testing.T) Store { return New() })
}

// TestStoredBytes: StoredBytes counts each chunk held once, and no more
// once a corrupt one is gone.
func TestStoredBytes(t *testing.T) {
	s := New()
	a, b := []byte("chunk a"), []byte("chunk bb")
	sa, sb := sha256.Sum256(a), sha256.Sum256(b)
	chunks := []chunkstore.Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}}
	if err := s.PutVerified(chunks); err != nil {
		t.Fatal(err)
	}
	if err := s.PutVerified(chunks[:1]); err != nil {
		t.Fatal(err)
	}
	if n := s.StoredBytes(); n != int64(len(a)+len(b)) {
		t.Fatalf("StoredBytes = %d, want %d (a stored again counts once)", n, len(a)+len(b))
	}
	bad := sha256.Sum256([]byte("other"))
	if err := s.PutVerified([]chunkstore.Chunk{{Sum: bad, Data: []byte("xyz")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(bad, nil); err == nil {
		t.Fatal("Get(corrupt chunk) succeeded")
	}
	if n := s.StoredBytes(); n != int64(len(a)+len(b)) {
		t.Fatalf("StoredBytes after the corrupt chunk went = %d, want %d", n, len(a)+len(b))
	}
}
