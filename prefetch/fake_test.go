package prefetch

import (
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/chunkstore/chunkstoretest"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// The tests' Remote is remotetest's fake.
var _ fusefs.Remote = (*remotetest.Remote)(nil)

// memStore is the shared in-memory store (chunks and metadata) for tests
// inside a synctest bubble, where Badger cannot run. putDelay is slept in
// every PutVerified (a slow disk); stored counts the chunk bytes it holds.
type memStore struct {
	*chunkstoretest.MemStore
	putDelay time.Duration // set before use
	stored   storedBytes
}

func newMemStore() *memStore {
	s := chunkstoretest.New()
	return &memStore{MemStore: s, stored: storedBytes{s}}
}

func (s *memStore) PutVerified(chunks []chunkstore.Chunk) error {
	if s.putDelay > 0 {
		time.Sleep(s.putDelay)
	}
	return s.MemStore.PutVerified(chunks)
}

// storedBytes reads the chunk bytes a MemStore holds.
type storedBytes struct{ s *chunkstoretest.MemStore }

func (b storedBytes) Load() int64 { return b.s.StoredBytes() }

// jobKeys returns the keys of the job records held.
func (s *memStore) jobKeys() []string {
	var keys []string
	s.ScanMeta(recordPrefix, func(k string, _ []byte) error { keys = append(keys, k); return nil })
	return keys
}
