package chunkstore

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// maxConflictRetries bounds the retries of a transaction that lost a
// conflict. Each retry sees the winner's commit, so a second attempt
// normally settles it.
const maxConflictRetries = 16

// update runs fn in a read-write transaction, retrying it while Badger
// reports a conflict with a concurrent commit. fn must be safe to rerun.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	var err error
	for range maxConflictRetries {
		err = s.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

// Put stores data as the chunk whose SHA-256 is sum. It hashes data first:
// if sha256(data) != sum it returns an error wrapping ErrCorrupt and writes
// nothing. Put is idempotent: when the chunk is already stored it writes
// nothing and counts Stats.PutDups (a stored chunk is not re-verified here;
// Get does that). Put does not retain data. With Options.SyncWrites false
// a machine crash may lose a chunk Put acknowledged, never store part of it.
func (s *Store) Put(sum [32]byte, data []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	if sha256.Sum256(data) != sum {
		return fmt.Errorf("chunkstore: put chunk %x: %w", sum, ErrCorrupt)
	}
	if err := s.putChunks([]Chunk{{Sum: sum, Data: data}}); err != nil {
		return fmt.Errorf("chunkstore: put chunk %x: %w", sum, err)
	}
	return nil
}

// Chunk is a chunk to store: its bytes and their SHA-256.
type Chunk struct {
	Sum  [32]byte
	Data []byte
}

// maxBatchChunks bounds the chunks PutVerified writes in one transaction;
// a longer batch is written as several.
const maxBatchChunks = 64

// PutVerified stores chunks whose Data the caller has already checked
// against their Sum (for example against a manifest, as transfer.Client
// does for every chunk it delivers): unlike Put it does not hash them, so
// a chunk whose Data does not match its Sum is stored as given. Such a
// chunk still never leaves the store: Get verifies every chunk it returns,
// and removes one that fails.
//
// The chunks are written together, up to 64 in one Badger transaction,
// which costs much less than one Put each. Each chunk is idempotent as with
// Put (one already stored is counted in Stats.PutDups, a chunk listed
// twice is stored once), and each transaction is atomic: after an error or
// a crash, the chunks of a transaction are all stored or none is.
// PutVerified does not retain the chunks or their Data.
func (s *Store) PutVerified(chunks []Chunk) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	for len(chunks) > 0 {
		n := min(len(chunks), maxBatchChunks)
		err := s.putChunks(chunks[:n])
		for errors.Is(err, badger.ErrTxnTooBig) && n > 1 {
			// Small chunks are stored inline and count in full against
			// Badger's transaction size: write fewer at a time.
			n /= 2
			err = s.putChunks(chunks[:n])
		}
		if err != nil {
			return fmt.Errorf("chunkstore: put %d chunks: %w", n, err)
		}
		chunks = chunks[n:]
	}
	return nil
}

// putChunks writes the chunks not yet stored in one conflict-checked
// transaction and counts them.
func (s *Store) putChunks(chunks []Chunk) error {
	var created []bool // created[k]: chunks[k] is written by this transaction
	err := s.update(func(txn *badger.Txn) error {
		created = make([]bool, len(chunks))
		for k, c := range chunks {
			ck := chunkKey(c.Sum)
			if _, err := txn.Get(ck); err == nil {
				continue // stored already, or earlier in this batch
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			if err := txn.Set(ck, c.Data); err != nil {
				return err
			}
			if err := txn.Set(infoKey(c.Sum), encodeInfo(len(c.Data))); err != nil {
				return err
			}
			created[k] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.count(func(st *Stats) {
		for k, c := range chunks {
			if !created[k] {
				st.PutDups++
				continue
			}
			st.Puts++
			st.PutBytes += int64(len(c.Data))
			st.Chunks++
			st.ChunkBytes += int64(len(c.Data))
		}
	})
	return nil
}

// Get returns the chunk whose SHA-256 is sum, verified: it hashes the bytes
// it is about to return. The chunk is read into buf's backing array when
// cap(buf) is large enough (one copy out of Badger), else into a new slice;
// buf's contents are overwritten either way. A missing chunk gives an error
// wrapping ErrNotFound (counted in Stats.Misses). A stored chunk that does
// not match sum, or whose value Badger cannot read, is deleted, counted in
// Stats.Corrupt, and reported with an error wrapping ErrCorrupt: the caller
// should fetch the chunk again and Put it.
func (s *Store) Get(sum [32]byte, buf []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.ops.Done()
	var (
		out     []byte
		version uint64
		readErr error
	)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(sum))
		if err != nil {
			return err
		}
		version = item.Version()
		out, readErr = item.ValueCopy(buf[:0])
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		s.count(func(st *Stats) { st.Misses++ })
		return nil, fmt.Errorf("chunkstore: get chunk %x: %w", sum, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("chunkstore: get chunk %x: %w", sum, err)
	case readErr == nil && sha256.Sum256(out) == sum:
		s.count(func(st *Stats) { st.Hits++ })
		return out, nil
	}
	cause := "hash mismatch"
	if readErr != nil {
		cause = readErr.Error()
	}
	if err := s.dropCorrupt(sum, version, cause); err != nil {
		return nil, fmt.Errorf("chunkstore: get chunk %x: %w (removing it: %w)", sum, ErrCorrupt, err)
	}
	return nil, fmt.Errorf("chunkstore: get chunk %x: %s: %w", sum, cause, ErrCorrupt)
}

// dropCorrupt removes the chunk read as version of sum, unless it has been
// replaced or removed since, and counts it in Stats.Corrupt if this call
// removed it.
func (s *Store) dropCorrupt(sum [32]byte, version uint64, cause string) error {
	removed, err := s.remove(sum, version)
	if err != nil {
		return err
	}
	if removed {
		s.count(func(st *Stats) { st.Corrupt++ })
		s.log.Warn("chunkstore: removed corrupt chunk", "sum", fmt.Sprintf("%x", sum), "cause", cause)
	}
	return nil
}

// Has reports whether the chunk whose SHA-256 is sum is stored. It does not
// read or verify the chunk, and does not count a hit or a miss.
func (s *Store) Has(sum [32]byte) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.ops.Done()
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(chunkKey(sum))
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("chunkstore: has chunk %x: %w", sum, err)
	}
}

// Delete removes the chunk whose SHA-256 is sum. Deleting a chunk that is
// not stored is not an error. Its space in Badger's value log is reclaimed
// by value-log garbage collection, not by Delete.
func (s *Store) Delete(sum [32]byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	if _, err := s.remove(sum, 0); err != nil {
		return fmt.Errorf("chunkstore: delete chunk %x: %w", sum, err)
	}
	return nil
}

// remove deletes the chunk and info records of sum in one conflict-checked
// transaction and adjusts Chunks and ChunkBytes. With version != 0 it
// removes the chunk only if its record still has that version. It reports
// whether it removed a chunk record.
func (s *Store) remove(sum [32]byte, version uint64) (bool, error) {
	ck, ik := chunkKey(sum), infoKey(sum)
	var (
		removed bool
		counted bool  // the info record was counted by countChunks or Put
		size    int64 // chunk length from the info record, when counted
	)
	err := s.update(func(txn *badger.Txn) error {
		removed, counted, size = false, false, 0
		hasChunk := true
		item, err := txn.Get(ck)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			hasChunk = false
		case err != nil:
			return err
		case version != 0 && item.Version() != version:
			return nil // replaced since it was read
		}
		if version != 0 && !hasChunk {
			return nil // removed since it was read
		}
		info, err := txn.Get(ik)
		hasInfo := true
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			hasInfo = false
		case err != nil:
			return err
		default:
			err = info.Value(func(v []byte) error {
				n, err := decodeInfo(v)
				size, counted = n, err == nil
				return nil
			})
			if err != nil {
				return err
			}
		}
		if hasChunk {
			if err := txn.Delete(ck); err != nil {
				return err
			}
		}
		if hasInfo {
			if err := txn.Delete(ik); err != nil {
				return err
			}
		}
		removed = hasChunk
		return nil
	})
	if err != nil {
		return false, err
	}
	if counted {
		s.count(func(st *Stats) {
			st.Chunks--
			st.ChunkBytes -= size
		})
	}
	return removed, nil
}
