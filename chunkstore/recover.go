package chunkstore

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// recover reconciles the chunk records with the segment files and sets
// Stats.Chunks and Stats.ChunkBytes; Open calls it before s is shared.
//
// Writers append a batch's bytes before committing its records and hold
// writeMu until the commit, so after a crash the only bytes without a
// record are those of the last batch, at the end of the last segment (and
// the space of deleted chunks). Records without their bytes can exist only
// after a machine crash with SyncWrites false: Badger's commit reached the
// disk, the segment's pages did not.
func (s *Store) recover() error {
	dir := s.app.dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list segments: %w", err)
	}
	sizes := map[uint32]int64{} // segment file sizes
	var maxID uint32
	for _, e := range entries {
		id, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			s.log.Warn("chunkstore: ignoring unexpected file among the segments", "name", e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("stat segment: %w", err)
		}
		sizes[id] = info.Size()
		maxID = max(maxID, id)
	}

	type lost struct {
		key   []byte
		cause string
	}
	type stored struct {
		sum [32]byte
		loc location
	}
	var (
		drop   []lost
		good   []stored
		ends   = map[uint32]int64{} // end of the last chunk recorded in each segment
		stamps = map[[32]byte]uint64{}
		orphan [][]byte // stamp keys without a chunk record
	)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsInfo}, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var loc location
			err := item.Value(func(v []byte) error {
				var err error
				loc, err = decodeInfo(v)
				return err
			})
			cause := ""
			size, haveSeg := sizes[loc.seg]
			switch {
			case len(item.Key()) != 1+32:
				cause = fmt.Sprintf("chunk record key of %d bytes", len(item.Key()))
			case err != nil:
				cause = err.Error()
			case !haveSeg:
				cause = fmt.Sprintf("%s: %v", segmentName(loc.seg), errNoSegment)
			case loc.end() > size:
				cause = fmt.Sprintf("%s ends at %d, before the chunk's end at %d", segmentName(loc.seg), size, loc.end())
			}
			if cause != "" {
				drop = append(drop, lost{item.KeyCopy(nil), cause})
				continue
			}
			var sum [32]byte
			copy(sum[:], item.Key()[1:])
			good = append(good, stored{sum, loc})
			ends[loc.seg] = max(ends[loc.seg], loc.end())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read chunk records: %w", err)
	}
	kept := make(map[[32]byte]bool, len(good))
	for _, g := range good {
		kept[g.sum] = true
	}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsStamp}, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var sum [32]byte
			if len(item.Key()) != 1+32 || !kept[[32]byte(item.Key()[1:])] {
				orphan = append(orphan, item.KeyCopy(nil))
				continue
			}
			copy(sum[:], item.Key()[1:])
			// A damaged stamp reads as 0: the chunk is evicted first.
			err := item.Value(func(v []byte) error {
				stamps[sum], _ = decodeStamp(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read stamps: %w", err)
	}

	// Records first, files second: if a crash comes between the two, the
	// next Open finds the files without records and finishes the job.
	for _, d := range drop {
		if err := s.db.Update(func(txn *badger.Txn) error {
			if err := txn.Delete(d.key); err != nil {
				return err
			}
			if len(d.key) == 1+32 {
				return txn.Delete(stampKey([32]byte(d.key[1:])))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("remove chunk record: %w", err)
		}
		s.log.Warn("chunkstore: removed chunk whose bytes are lost", "sum", fmt.Sprintf("%x", d.key[1:]), "cause", d.cause)
	}
	for _, k := range orphan {
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(k) }); err != nil {
			return fmt.Errorf("remove stamp without chunk: %w", err)
		}
	}
	for id, size := range sizes {
		p := filepath.Join(dir, segmentName(id))
		end, used := ends[id]
		switch {
		case !used:
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove unused segment: %w", err)
			}
			s.log.Debug("chunkstore: removed segment without chunks", "segment", segmentName(id), "bytes", size)
		case size > end:
			if err := os.Truncate(p, end); err != nil {
				return fmt.Errorf("truncate segment: %w", err)
			}
			s.log.Debug("chunkstore: cut unindexed bytes at a segment's end", "segment", segmentName(id), "from", size, "to", end)
		}
	}

	var clock uint64
	for _, g := range good {
		st := stamps[g.sum]
		clock = max(clock, st)
		s.indexAdd(g.sum, g.loc, st)
	}
	s.clock.Store(clock)
	bySeg := map[uint32][]location{}
	for _, g := range good {
		bySeg[g.loc.seg] = append(bySeg[g.loc.seg], g.loc)
	}
	s.releaseGaps(bySeg)
	s.stats.Corrupt = int64(len(drop))
	if end, used := ends[maxID]; used {
		return s.app.resume(maxID, end)
	}
	s.app.id = maxID + 1
	return nil
}

// releaseGaps releases the space between the chunks of each segment that
// no chunk owns: chunks removed before a crash could release them, or while
// the store could not punch holes. Gaps that hold data and cannot be
// punched count as dead space of their segment until it goes. Failures
// only cost space; they are logged. recover calls it before s is shared.
func (s *Store) releaseGaps(bySeg map[uint32][]location) {
	for id, locs := range bySeg {
		slices.SortFunc(locs, func(a, b location) int { return cmp.Compare(a.off, b.off) })
		var (
			gaps [][2]int64
			at   int64
		)
		for _, l := range locs {
			if l.off > at {
				gaps = append(gaps, [2]int64{at, l.off})
			}
			_, hi := l.owned()
			at = max(at, hi)
		}
		if len(gaps) == 0 {
			continue
		}
		f, err := os.OpenFile(filepath.Join(s.app.dir, segmentName(id)), os.O_WRONLY, 0)
		if err != nil {
			s.log.Warn("chunkstore: release space of removed chunks", "segment", segmentName(id), "err", err)
			continue
		}
		var dead, punched, holes int64
		for _, g := range gaps {
			lo, hi := g[0], g[1]
			if !holdsData(f, lo, hi-lo) {
				continue
			}
			if s.punch {
				err := punchHole(f, lo, hi-lo)
				if err == nil {
					punched += hi - lo
					holes++
					continue
				}
				if errors.Is(err, errNoPunch) {
					s.punch = false
				}
				s.log.Warn("chunkstore: release space of removed chunks", "segment", segmentName(id), "err", err)
			}
			// The blocks of the gap that no chunk is charged for.
			dead += max(0, alignDown(hi)-alignUp(lo))
		}
		f.Close()
		u := s.segments[id]
		u.dead += dead
		s.disk += dead
		s.stats.HolesPunched += holes
		s.stats.PunchedBytes += punched
		if holes > 0 {
			s.log.Debug("chunkstore: released space of chunks removed before a crash", "segment", segmentName(id), "bytes", punched)
		}
	}
}
