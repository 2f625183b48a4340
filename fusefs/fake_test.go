package fusefs

import (
	"github.com/kwikfs/kwikfs/chunkstore/chunkstoretest"
	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// The tests' Remote is remotetest's fake; the FS verifies its chunks.
var _ Remote = (*remotetest.Remote)(nil)

// memStore is the shared in-memory store seen through Store alone: without
// its Has and PutMetas methods, the FS finds out whether it holds a chunk
// by getting it (the fallback of FS.storeHas) and persists records one by
// one.
type memStore struct{ Store }

func newMemStore() *memStore { return &memStore{chunkstoretest.New()} }
