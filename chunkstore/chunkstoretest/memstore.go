// Package chunkstoretest provides an in-memory chunk store for tests of
// the packages that use a chunkstore.Store-like interface.
package chunkstoretest

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/transfer"
)

// errNotFound is wrapped by the errors of look-ups that find nothing. It
// wraps chunkstore.ErrNotFound, as the real Store's errors do, and
// transfer.ErrNotFound, which callers' tests may also check with
// errors.Is.
var errNotFound = fmt.Errorf("%w (%w)", chunkstore.ErrNotFound, transfer.ErrNotFound)

// MemStore is an in-memory store of chunks and metadata records with the
// methods of *chunkstore.Store that fusefs.Store, prefetch.Store and
// fusefs's optional Has use, for tests inside a synctest bubble, where
// Badger's background goroutines cannot run. Unlike the real one, Get
// does not verify, nothing is ever evicted and no method fails but for
// look-ups of missing keys. It is safe for concurrent use; the zero value
// is not usable: call New.
type MemStore struct {
	mu     sync.Mutex // guards chunks, meta, stored
	chunks map[[32]byte][]byte
	meta   map[string][]byte
	stored int64 // bytes of the chunks in chunks
}

// New returns an empty MemStore.
func New() *MemStore {
	return &MemStore{chunks: map[[32]byte][]byte{}, meta: map[string][]byte{}}
}

// PutVerified stores copies of the chunks as given, without checking their
// sums (like the real one); a chunk stored already is replaced.
func (s *MemStore) PutVerified(chunks []chunkstore.Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chunks {
		if _, ok := s.chunks[c.Sum]; !ok {
			s.stored += int64(len(c.Data))
		}
		s.chunks[c.Sum] = bytes.Clone(c.Data)
	}
	return nil
}

// Get returns the chunk stored under sum appended to buf[:0], or an error
// wrapping chunkstore.ErrNotFound and transfer.ErrNotFound.
func (s *MemStore) Get(sum [32]byte, buf []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, ok := s.chunks[sum]
	if !ok {
		return nil, fmt.Errorf("chunkstoretest: get chunk %x: %w", sum[:4], errNotFound)
	}
	return append(buf[:0], data...), nil
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

// PutMeta stores a copy of value under key, replacing any record there.
func (s *MemStore) PutMeta(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta[key] = bytes.Clone(value)
	return nil
}

// GetMeta returns a copy of the record stored under key, or an error
// wrapping chunkstore.ErrNotFound and transfer.ErrNotFound.
func (s *MemStore) GetMeta(key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.meta[key]
	if !ok {
		return nil, fmt.Errorf("chunkstoretest: get meta %q: %w", key, errNotFound)
	}
	return bytes.Clone(v), nil
}

// DeleteMeta removes the record stored under key, if any.
func (s *MemStore) DeleteMeta(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.meta, key)
	return nil
}

// ScanMeta calls fn, in key order and without holding the store's lock,
// for every record whose key starts with prefix and that is still there
// when its turn comes; it stops at and returns fn's first error.
func (s *MemStore) ScanMeta(prefix string, fn func(key string, value []byte) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.meta {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		v, err := s.GetMeta(k)
		if err != nil {
			continue
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}
