// Package chunkstoretest is test support for the users of a chunk store:
// MemStore, an in-memory store for tests that cannot run Badger, and Run,
// the conformance suite that MemStore and *chunkstore.Store both pass, so
// that a test against a MemStore tells what the real store would do.
package chunkstoretest

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

// MemStore is an in-memory store of chunks and metadata records with the
// methods of *chunkstore.Store that fusefs.Store, prefetch.Store and
// fusefs's optional Has and PutMetas use, for tests inside a synctest
// bubble, where Badger's background goroutines cannot run. It behaves as
// the real store does (see Run) but for what a memory holds: it has no
// size limit, so nothing is ever evicted and nothing can be pinned, and
// it never fails but as the real store does for its callers' mistakes
// (missing keys, corrupt chunks, keys too long, unknown hash
// algorithms). It is safe for concurrent use; the zero value is not
// usable: call New.
type MemStore struct {
	mu     sync.Mutex // guards chunks, meta, stored
	chunks map[[32]byte]memChunk
	meta   map[string][]byte
	stored int64 // bytes of the chunks in chunks
}

// memChunk is a stored chunk and the algorithm of its sum.
type memChunk struct {
	alg  chunkhash.Alg
	data []byte
}

// New returns an empty MemStore.
func New() *MemStore {
	return &MemStore{chunks: map[[32]byte]memChunk{}, meta: map[string][]byte{}}
}

// PutVerified stores copies of the chunks not stored yet, without checking
// their sums (like the real one; Get does). A chunk stored already is kept
// as it is. A chunk with an unknown Alg makes it store nothing and return
// an error wrapping chunkstore.ErrCorrupt.
func (s *MemStore) PutVerified(chunks []chunkstore.Chunk) error {
	for _, c := range chunks {
		if !c.Alg.Valid() {
			return fmt.Errorf("chunkstoretest: put chunk %x: hash algorithm %v: %w", c.Sum[:4], c.Alg, chunkstore.ErrCorrupt)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chunks {
		if _, ok := s.chunks[c.Sum]; ok {
			continue
		}
		s.chunks[c.Sum] = memChunk{alg: c.Alg, data: bytes.Clone(c.Data)}
		s.stored += int64(len(c.Data))
	}
	return nil
}

// Get returns the chunk stored under sum appended to buf[:0], after
// verifying it with the algorithm it was stored under. A missing chunk
// gives an error wrapping chunkstore.ErrNotFound; one that does not match
// sum is removed and gives an error wrapping chunkstore.ErrCorrupt.
func (s *MemStore) Get(sum [32]byte, buf []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.chunks[sum]
	if !ok {
		return nil, fmt.Errorf("chunkstoretest: get chunk %x: %w", sum[:4], chunkstore.ErrNotFound)
	}
	if chunkhash.Sum(c.alg, c.data) != sum {
		delete(s.chunks, sum)
		s.stored -= int64(len(c.data))
		return nil, fmt.Errorf("chunkstoretest: get chunk %x: hash mismatch: %w", sum[:4], chunkstore.ErrCorrupt)
	}
	return append(buf[:0], c.data...), nil
}

// Has reports whether a chunk is stored under sum; its error is always nil.
func (s *MemStore) Has(sum [32]byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.chunks[sum]
	return ok, nil
}

// StoredBytes returns the total size of the chunks stored.
func (s *MemStore) StoredBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored
}

// checkKey rejects the keys the real store rejects.
func checkKey(key string) error {
	if len(key) > chunkstore.MaxMetaKeyLen {
		return fmt.Errorf("chunkstoretest: meta key of %d bytes: %w", len(key), chunkstore.ErrInvalidKey)
	}
	return nil
}

// PutMeta stores a copy of value under key, replacing any record there. A
// key longer than chunkstore.MaxMetaKeyLen gives an error wrapping
// chunkstore.ErrInvalidKey.
func (s *MemStore) PutMeta(key string, value []byte) error {
	return s.PutMetas([]chunkstore.MetaRecord{{Key: key, Value: value}})
}

// PutMetas stores the records as PutMeta does each; a key too long fails
// the call before anything is stored.
func (s *MemStore) PutMetas(records []chunkstore.MetaRecord) error {
	for _, r := range records {
		if err := checkKey(r.Key); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		s.meta[r.Key] = bytes.Clone(r.Value)
	}
	return nil
}

// GetMeta returns a copy of the record stored under key, or an error
// wrapping chunkstore.ErrNotFound (chunkstore.ErrInvalidKey for a key too
// long).
func (s *MemStore) GetMeta(key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.meta[key]
	if !ok {
		return nil, fmt.Errorf("chunkstoretest: get meta %q: %w", key, chunkstore.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// DeleteMeta removes the record stored under key, if any.
func (s *MemStore) DeleteMeta(key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.meta, key)
	return nil
}

// ScanMeta calls fn, in byte order of the keys and without holding the
// store's lock, for every record whose key starts with prefix, as the
// records were when ScanMeta started (a snapshot, as the real store's);
// it stops at fn's first error and returns it unwrapped.
func (s *MemStore) ScanMeta(prefix string, fn func(key string, value []byte) error) error {
	type record struct {
		key   string
		value []byte
	}
	s.mu.Lock()
	var snap []record
	for k, v := range s.meta {
		if strings.HasPrefix(k, prefix) {
			snap = append(snap, record{k, bytes.Clone(v)})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(snap, func(a, b record) int { return strings.Compare(a.key, b.key) })
	for _, r := range snap {
		if err := fn(r.key, r.value); err != nil {
			return err
		}
	}
	return nil
}
