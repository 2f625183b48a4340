package chunkstore

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/dgraph-io/badger/v4"

	"github.com/kwikfs/kwikfs/internal/chunkhash"
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

// Put stores c.Data as the chunk whose c.Alg hash is c.Sum. It hashes
// c.Data first: if it does not hash to c.Sum it returns an error wrapping
// ErrCorrupt and writes nothing (an unknown c.Alg is refused the same way).
// Put is idempotent: when a chunk is already stored under c.Sum it writes
// nothing and counts Stats.PutDups (a stored chunk is not re-verified here;
// Get does that); concurrent Puts of the same chunk store it once. Put does
// not retain c.Data. With Options.SyncWrites false a machine crash may lose
// a chunk Put acknowledged; Get never returns part of one.
func (s *Store) Put(c Chunk) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	if !c.Alg.Valid() {
		return fmt.Errorf("chunkstore: put chunk %x: hash algorithm %v: %w", c.Sum, c.Alg, ErrCorrupt)
	}
	if chunkhash.Sum(c.Alg, c.Data) != c.Sum {
		return fmt.Errorf("chunkstore: put chunk %x: %w", c.Sum, ErrCorrupt)
	}
	if err := s.putChunks([]Chunk{c}); err != nil {
		return fmt.Errorf("chunkstore: put chunk %x: %w", c.Sum, err)
	}
	return nil
}

// Chunk is a chunk to store: its bytes and their hash under Alg.
type Chunk struct {
	Sum [32]byte
	// Alg is the algorithm of Sum, which the chunk's record keeps and
	// Get verifies the chunk with; the zero value is SHA-256.
	Alg  chunkhash.Alg
	Data []byte
}

// maxBatchChunks bounds the chunks PutVerified writes with one append and
// one index transaction; a longer batch is written as several.
const maxBatchChunks = 64

// PutVerified stores chunks whose Data the caller has already checked
// against their Sum under their Alg (for example against a manifest, as
// transfer.Client does for every chunk it delivers): unlike Put it does
// not hash them, so a chunk whose Data does not match its Sum is stored as
// given. Such a chunk still never leaves the store: Get verifies every
// chunk it returns, with the Alg it was stored under, and removes one that
// fails. A chunk with an unknown Alg makes PutVerified store nothing and
// return an error wrapping ErrCorrupt.
//
// The chunks are written together, up to 64 (and no more bytes than a
// segment holds) with one write to a segment and one Badger transaction,
// which costs much less than one Put each. Each chunk is idempotent as
// with Put (one already stored is counted in Stats.PutDups, a chunk
// listed twice is stored once), and each transaction is atomic: after an
// error or a crash, the chunks of a transaction are all stored or none is.
// Under a Limit, the chunks written first may be evicted to make room for
// the last ones (they are the least recently used). PutVerified does not
// retain the chunks or their Data.
func (s *Store) PutVerified(chunks []Chunk) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.ops.Done()
	for _, c := range chunks {
		if !c.Alg.Valid() {
			return fmt.Errorf("chunkstore: put chunk %x: hash algorithm %v: %w", c.Sum, c.Alg, ErrCorrupt)
		}
	}
	for len(chunks) > 0 {
		n, size := 0, int64(0)
		for n < len(chunks) && n < maxBatchChunks {
			l := int64(len(chunks[n].Data))
			if n > 0 && size+l > s.app.limit {
				break
			}
			size += l
			n++
		}
		if err := s.putChunks(chunks[:n]); err != nil {
			return fmt.Errorf("chunkstore: put %d chunks: %w", n, err)
		}
		chunks = chunks[n:]
	}
	return nil
}

// putChunks stores the chunks not yet stored: under writeMu it looks them
// up in the index (a chunk already stored counts as used now), makes room
// for the new ones under the Limit, appends them to the active segment
// with one write (synced first with Options.SyncWrites), then commits
// their chunk records and stamps in one transaction, and counts them.
// Bytes appended for a transaction that fails are cut off again.
func (s *Store) putChunks(chunks []Chunk) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	created := make([]bool, len(chunks)) // created[k]: chunks[k] is stored by this call
	seen := make(map[[32]byte]bool, len(chunks))
	var (
		bufs [][]byte
		algs []chunkhash.Alg // algs[j]: the algorithm of bufs[j]'s chunk
		need int64           // disk bytes of the new chunks
	)
	for k, c := range chunks {
		if seen[c.Sum] {
			continue // listed earlier in this batch
		}
		seen[c.Sum] = true
		// The index changes only under writeMu, which this goroutine holds.
		if e := s.index[c.Sum]; e != nil {
			e.stamp.Store(s.clock.Add(1))
			continue // stored already
		}
		created[k] = true
		bufs = append(bufs, c.Data)
		algs = append(algs, c.Alg)
		if len(c.Data) > 0 {
			need += alignUp(int64(len(c.Data)))
		}
	}
	if len(bufs) > 0 {
		if err := s.makeRoom(need); err != nil {
			return err
		}
		p, err := s.app.append(bufs)
		if err != nil {
			return err
		}
		if s.afterAppend != nil {
			first := p.offs[0]
			s.afterAppend(p.seg, first, p.end-first)
		}
		locs := make([]location, 0, len(bufs))
		stamps := make([]uint64, 0, len(bufs))
		for j, b := range bufs {
			locs = append(locs, location{seg: p.seg, off: p.offs[j], n: int64(len(b)), aligned: s.app.align, alg: algs[j]})
			stamps = append(stamps, s.clock.Add(1))
		}
		// Only writers, all under writeMu, create chunk records, so no
		// other transaction can have created these since the lookup.
		err = s.db.Update(func(txn *badger.Txn) error {
			j := 0
			for k, c := range chunks {
				if !created[k] {
					continue
				}
				if err := txn.Set(infoKey(c.Sum), encodeInfo(locs[j])); err != nil {
					return err
				}
				if err := txn.Set(stampKey(c.Sum), encodeStamp(stamps[j])); err != nil {
					return err
				}
				j++
			}
			return nil
		})
		if err != nil {
			s.app.undo(p)
			return err
		}
		j := 0
		for k, c := range chunks {
			if created[k] {
				s.indexAdd(c.Sum, locs[j], stamps[j])
				j++
			}
		}
	}
	s.count(func(st *Stats) {
		for k, c := range chunks {
			if !created[k] {
				st.PutDups++
				continue
			}
			st.Puts++
			st.PutBytes += int64(len(c.Data))
		}
	})
	return nil
}

// Get returns the chunk stored under sum, verified: it hashes the bytes
// it is about to return with the algorithm the chunk was stored under (its
// Chunk.Alg, kept in its record), and counts the chunk as used now (for
// LRU eviction). The chunk is read with pread straight into buf's backing
// array when cap(buf) is large enough, else into a new slice; buf's
// contents are overwritten either way. A missing chunk gives an error
// wrapping ErrNotFound (counted in Stats.Misses), and so does a chunk
// evicted or deleted while Get was reading it. A stored chunk that does
// not match sum, or whose bytes cannot be read (its segment is damaged,
// cut short or gone), is deleted, counted in Stats.Corrupt, and reported
// with an error wrapping ErrCorrupt: the caller should fetch the chunk
// again and Put it.
func (s *Store) Get(sum [32]byte, buf []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.ops.Done()
	// A second attempt when the chunk's record went or changed while its
	// bytes were being read (an eviction, a Delete and a new Put): the
	// first read may have seen released space.
	for attempt := 0; ; attempt++ {
		out, changed, err := s.get(sum, buf)
		if !changed || attempt == 1 {
			return out, err
		}
	}
}

// get is one attempt of Get. changed reports a chunk that failed
// verification but whose record had been removed or replaced since it was
// read, so that nothing was removed.
func (s *Store) get(sum [32]byte, buf []byte) (out []byte, changed bool, err error) {
	var (
		loc     location
		version uint64
		bad     error // why the chunk is unusable: a damaged record, unreadable bytes
	)
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(infoKey(sum))
		if err != nil {
			return err
		}
		version = item.Version()
		return item.Value(func(v []byte) error {
			loc, bad = decodeInfo(v)
			return nil
		})
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		s.count(func(st *Stats) { st.Misses++ })
		return nil, false, fmt.Errorf("chunkstore: get chunk %x: %w", sum, ErrNotFound)
	case err != nil:
		return nil, false, fmt.Errorf("chunkstore: get chunk %x: %w", sum, err)
	}
	switch {
	case bad != nil:
	case loc.n == 0:
		out = buf[:0]
		if out == nil {
			out = []byte{}
		}
	default:
		out, bad = s.segs.read(loc.seg, loc.off, loc.n, buf)
		if bad != nil && !errors.Is(bad, io.ErrUnexpectedEOF) && !errors.Is(bad, errNoSegment) && !isIOError(bad) {
			// Not a sign of damage (say, out of file descriptors):
			// leave the chunk for a later Get.
			return nil, false, fmt.Errorf("chunkstore: get chunk %x: %w", sum, bad)
		}
	}
	if bad == nil && chunkhash.Sum(loc.alg, out) == sum {
		s.count(func(st *Stats) { st.Hits++ })
		s.touch(sum)
		return out, false, nil
	}
	cause := "hash mismatch"
	if bad != nil {
		cause = bad.Error()
	}
	removed, err := s.dropCorrupt(sum, version, cause)
	if err != nil {
		return nil, false, fmt.Errorf("chunkstore: get chunk %x: %w (removing it: %w)", sum, ErrCorrupt, err)
	}
	return nil, !removed, fmt.Errorf("chunkstore: get chunk %x: %s: %w", sum, cause, ErrCorrupt)
}

// isIOError reports whether err is the kernel's report of a failed read
// of the disk (EIO), which makes the bytes read as good as lost.
func isIOError(err error) bool { return errors.Is(err, syscall.EIO) }

// dropCorrupt removes the chunk read as version of sum, unless it has been
// replaced or removed since, and counts it in Stats.Corrupt if this call
// removed it; it reports whether it did.
func (s *Store) dropCorrupt(sum [32]byte, version uint64, cause string) (bool, error) {
	removed, err := s.remove(sum, version)
	if err != nil {
		return false, err
	}
	if removed {
		s.count(func(st *Stats) { st.Corrupt++ })
		s.log.Warn("chunkstore: removed corrupt chunk", "sum", fmt.Sprintf("%x", sum), "cause", cause)
	}
	return removed, nil
}

// Has reports whether a chunk is stored under sum. It does not
// read or verify the chunk, and does not count a hit, a miss or a use.
func (s *Store) Has(sum [32]byte) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.ops.Done()
	s.idxMu.RLock()
	_, ok := s.index[sum]
	s.idxMu.RUnlock()
	return ok, nil
}

// Delete removes the chunk stored under sum and releases its disk
// space (see Store.Pin: Delete removes a pinned chunk too). Deleting a
// chunk that is not stored is not an error.
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

// remove deletes the chunk record and stamp of sum in one transaction,
// under writeMu, then drops the chunk from the index (adjusting Chunks and
// ChunkBytes) and releases its space. With version != 0 it removes the
// record only if it still has that version. It reports whether it removed
// a record.
func (s *Store) remove(sum [32]byte, version uint64) (bool, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ik := infoKey(sum)
	var removed bool
	err := s.update(func(txn *badger.Txn) error {
		removed = false
		item, err := txn.Get(ik)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		case version != 0 && item.Version() != version:
			return nil // replaced since it was read
		}
		removed = true
		if err := txn.Delete(ik); err != nil {
			return err
		}
		return txn.Delete(stampKey(sum))
	})
	if err != nil {
		return false, err
	}
	if removed {
		if e := s.indexRemove(sum); e != nil {
			s.release(e.loc.seg, []location{e.loc})
		}
	}
	return removed, nil
}
