package chunkstoretest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestChunks(t *testing.T) {
	s := New()
	a, b := []byte("chunk a"), []byte("chunk bb")
	sa, sb := sha256.Sum256(a), sha256.Sum256(b)
	if _, err := s.Get(sa, nil); !errors.Is(err, chunkstore.ErrNotFound) || !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want chunkstore.ErrNotFound and transfer.ErrNotFound", err)
	}
	chunks := []chunkstore.Chunk{{Sum: sa, Data: a}, {Sum: sb, Data: b}}
	if err := s.PutVerified(chunks); err != nil {
		t.Fatal(err)
	}
	if err := s.PutVerified(chunks[:1]); err != nil {
		t.Fatal(err)
	}
	a[0] = 'X' // the store keeps a copy
	buf := make([]byte, 0, 64)
	got, err := s.Get(sa, buf)
	if err != nil || string(got) != "chunk a" || &got[0] != &buf[:1][0] {
		t.Fatalf("Get(a) = %q, %v; want \"chunk a\" in buf", got, err)
	}
	if ok, err := s.Has(sb); !ok || err != nil {
		t.Fatalf("Has(b) = %v, %v; want true", ok, err)
	}
	if ok, err := s.Has(sha256.Sum256(nil)); ok || err != nil {
		t.Fatalf("Has(missing) = %v, %v; want false", ok, err)
	}
	if n := s.StoredBytes(); n != int64(len(a)+len(b)) {
		t.Fatalf("StoredBytes = %d, want %d (a stored again counts once)", n, len(a)+len(b))
	}
}

func TestMeta(t *testing.T) {
	s := New()
	v := []byte("v1")
	for _, k := range []string{"job/2", "job/1", "other/1", "job/3"} {
		if err := s.PutMeta(k, v); err != nil {
			t.Fatal(err)
		}
	}
	v[0] = 'X' // the store keeps a copy
	if got, err := s.GetMeta("job/1"); err != nil || !bytes.Equal(got, []byte("v1")) {
		t.Fatalf("GetMeta(job/1) = %q, %v", got, err)
	}
	if err := s.DeleteMeta("job/3"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta("job/3"); !errors.Is(err, chunkstore.ErrNotFound) || !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("GetMeta(deleted) = %v, want chunkstore.ErrNotFound and transfer.ErrNotFound", err)
	}
	var keys []string
	err := s.ScanMeta("job/", func(k string, _ []byte) error {
		keys = append(keys, k)
		// Deleting a record not reached yet skips it; the callback may
		// use the store.
		return s.DeleteMeta("job/2")
	})
	if err != nil || !slices.Equal(keys, []string{"job/1"}) {
		t.Fatalf("ScanMeta(job/) saw %q, %v; want [job/1]", keys, err)
	}
	stop := errors.New("stop")
	if err := s.ScanMeta("", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ScanMeta with a failing fn = %v, want its error", err)
	}
}
