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

// lowWaterPercent is where eviction takes DiskBytes, in percent of
// Options.Limit, before the write that triggered it: the next writes then
// find room without evicting again at once.
const lowWaterPercent = 90

// evictTxnChunks bounds the chunks whose records one eviction transaction
// removes.
const evictTxnChunks = 1000

// makeRoom evicts chunks, least recently used first and never a pinned
// one, when a write of need more disk bytes would take the store past its
// limit: down to lowWaterPercent of the limit minus need. With hole
// punching the victims are chunks in LRU order; without it (space comes
// back only with whole segment files) they are whole segments, in the
// order of their most recent use. If only pinned chunks are left the store
// stays over its limit and says so (Stats.OverLimit, a warning). s.writeMu
// must be held.
func (s *Store) makeRoom(need int64) error {
	if s.limit <= 0 || s.disk+need <= s.limit {
		s.overLimit = false
		return nil
	}
	if err := s.saveStamps(); err != nil {
		// Stamps only order evictions after a restart; the one in memory
		// are exact.
		s.log.Warn("chunkstore: save last-use stamps", "err", err)
	}
	target := s.limit*lowWaterPercent/100 - need
	// Two rounds: the first may find that the filesystem cannot punch
	// holes, and the second then frees whole segments.
	for range 2 {
		excess := s.disk - target
		if excess <= 0 {
			break
		}
		var (
			victims [][32]byte
			empty   []uint32
		)
		if s.punch {
			victims = s.lruVictims(excess)
		} else {
			victims, empty = s.segmentVictims(excess)
		}
		if len(victims) == 0 && len(empty) == 0 {
			break
		}
		if err := s.evict(victims, empty); err != nil {
			return err
		}
	}
	if s.disk+need > s.limit {
		s.count(func(st *Stats) { st.OverLimit++ })
		if !s.overLimit {
			s.log.Warn("chunkstore: store over its limit: the chunks left are pinned",
				"limit", s.limit, "disk_bytes", s.disk, "pinned_bytes", s.pinned, "write", need)
		}
		s.overLimit = true
	} else {
		s.overLimit = false
	}
	return nil
}

// candidate is a chunk that may be evicted.
type candidate struct {
	sum   [32]byte
	stamp uint64
	loc   location
}

// lruVictims returns the chunks to evict to free excess disk bytes: the
// unpinned chunks in the order of their last use (ties broken by where
// they are stored, older writes first), as many as it takes. s.writeMu
// must be held.
func (s *Store) lruVictims(excess int64) [][32]byte {
	s.idxMu.RLock()
	cands := make([]candidate, 0, len(s.index))
	for sum, e := range s.index {
		if s.pins[sum] == 0 {
			cands = append(cands, candidate{sum, e.stamp.Load(), e.loc})
		}
	}
	s.idxMu.RUnlock()
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.stamp, b.stamp), cmp.Compare(a.loc.seg, b.loc.seg), cmp.Compare(a.loc.off, b.loc.off))
	})
	var (
		victims [][32]byte
		freed   int64
	)
	for _, c := range cands {
		if freed >= excess {
			break
		}
		victims = append(victims, c.sum)
		freed += c.loc.diskBytes()
	}
	return victims
}

// segmentVictims returns the chunks to evict, and the segments already
// without chunks to delete, to free excess disk bytes one whole segment at
// a time: segments without chunks first, then segments without a pinned
// chunk in the order of their most recent use. s.writeMu must be held.
func (s *Store) segmentVictims(excess int64) (victims [][32]byte, empty []uint32) {
	type segCand struct {
		id     uint32
		newest uint64 // most recent use of a chunk in it
		pinned bool
		sums   [][32]byte
		bytes  int64 // disk bytes deleting it frees
	}
	s.idxMu.RLock()
	bySeg := make(map[uint32]*segCand, len(s.segments))
	for id, u := range s.segments {
		bySeg[id] = &segCand{id: id, bytes: u.live + u.dead}
	}
	for sum, e := range s.index {
		c := bySeg[e.loc.seg]
		c.newest = max(c.newest, e.stamp.Load())
		c.pinned = c.pinned || s.pins[sum] > 0
		c.sums = append(c.sums, sum)
	}
	s.idxMu.RUnlock()
	cands := make([]*segCand, 0, len(bySeg))
	for _, c := range bySeg {
		if !c.pinned {
			cands = append(cands, c)
		}
	}
	slices.SortFunc(cands, func(a, b *segCand) int {
		// A segment without chunks has newest 0: it comes first.
		return cmp.Or(cmp.Compare(a.newest, b.newest), cmp.Compare(a.id, b.id))
	})
	var freed int64
	for _, c := range cands {
		if freed >= excess {
			break
		}
		if len(c.sums) == 0 {
			empty = append(empty, c.id)
		}
		victims = append(victims, c.sums...)
		freed += c.bytes
	}
	return victims, empty
}

// evict removes the chunks victims (their records first, in transactions
// of up to evictTxnChunks chunks, then their index entries), counts them in
// Stats.Evicted and releases their space, and deletes the segments listed
// in empty. A crash between a commit and the release leaves the space to
// Open, which releases what no record points to. s.writeMu must be held.
func (s *Store) evict(victims [][32]byte, empty []uint32) error {
	touched := map[uint32][]location{}
	for _, id := range empty {
		touched[id] = nil
	}
	var err error
	for len(victims) > 0 && err == nil {
		batch := victims[:min(len(victims), evictTxnChunks)]
		victims = victims[len(batch):]
		err = s.update(func(txn *badger.Txn) error {
			for _, sum := range batch {
				if err := txn.Delete(infoKey(sum)); err != nil {
					return err
				}
				if err := txn.Delete(stampKey(sum)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			err = fmt.Errorf("evict %d chunks: %w", len(batch), err)
			break
		}
		var n, bytes int64
		for _, sum := range batch {
			if e := s.indexRemove(sum); e != nil {
				touched[e.loc.seg] = append(touched[e.loc.seg], e.loc)
				n++
				bytes += e.loc.n
			}
		}
		s.count(func(st *Stats) {
			st.Evicted += n
			st.EvictedBytes += bytes
		})
	}
	if s.afterEvict != nil {
		s.afterEvict()
	}
	for id, locs := range touched {
		s.release(id, locs)
	}
	return err
}

// release gives back the disk space of the removed chunks locs of segment
// id: the whole segment file when none of its chunks is left, else a hole
// punched in place of each (adjacent ones with one call). Without hole
// punching the space stays counted, as dead space of the segment, until
// the segment goes. A failure is logged, and Open retries. s.writeMu must
// be held.
func (s *Store) release(id uint32, locs []location) {
	s.idxMu.RLock()
	u := s.segments[id]
	s.idxMu.RUnlock()
	if u == nil {
		return
	}
	if u.chunks == 0 {
		s.dropSegment(id, u)
		return
	}
	if !s.punch || len(locs) == 0 {
		return
	}
	f := s.app.f
	if !s.app.active(id) {
		var err error
		f, err = os.OpenFile(filepath.Join(s.app.dir, segmentName(id)), os.O_WRONLY, 0)
		if err != nil {
			s.log.Warn("chunkstore: release space of removed chunks", "segment", segmentName(id), "err", err)
			return
		}
		defer f.Close()
	}
	slices.SortFunc(locs, func(a, b location) int { return cmp.Compare(a.off, b.off) })
	for len(locs) > 0 {
		// A run of chunks whose owned ranges touch: one hole.
		lo, hi := locs[0].owned()
		freed := locs[0].diskBytes()
		k := 1
		for ; k < len(locs); k++ {
			l, h := locs[k].owned()
			if l != hi {
				break
			}
			hi = h
			freed += locs[k].diskBytes()
		}
		locs = locs[k:]
		if err := punchHole(f, lo, hi-lo); err != nil {
			if errors.Is(err, errNoPunch) {
				s.punch = false
				s.log.Warn("chunkstore: the filesystem cannot punch holes; space of evicted chunks comes back with whole segment files", "err", err)
			} else {
				s.log.Warn("chunkstore: release space of removed chunks", "segment", segmentName(id), "err", err)
			}
			return
		}
		s.idxMu.Lock()
		u.dead -= freed
		s.disk -= freed
		s.idxMu.Unlock()
		s.count(func(st *Stats) {
			st.HolesPunched++
			st.PunchedBytes += freed
		})
	}
}

// dropSegment deletes segment id, of which no chunk is left (sealing it
// first if it is the active one), and stops counting its space.
// s.writeMu must be held.
func (s *Store) dropSegment(id uint32, u *segUsage) {
	if s.app.active(id) {
		if err := s.app.seal(); err != nil {
			s.log.Warn("chunkstore: close segment without chunks", "segment", segmentName(id), "err", err)
		}
	}
	// Remove first, forget second: a Get that opens the segment in between
	// finds it gone, and a descriptor opened before is closed by forget
	// (or by its last read), so none keeps the deleted file's space.
	err := os.Remove(filepath.Join(s.app.dir, segmentName(id)))
	s.segs.forget(id)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("chunkstore: remove segment without chunks", "segment", segmentName(id), "err", err)
		return
	}
	s.idxMu.Lock()
	delete(s.segments, id)
	s.disk -= u.live + u.dead
	s.idxMu.Unlock()
	s.count(func(st *Stats) { st.SegmentsRemoved++ })
}

// saveStamps writes the last-use stamps that changed since they were last
// saved, so that a reopened store evicts in the same order. Stamps are
// saved when eviction starts and by Close; a killed process loses the
// uses since then (they only order evictions). s.writeMu must be held.
func (s *Store) saveStamps() error {
	type dirty struct {
		e     *entry
		sum   [32]byte
		stamp uint64
	}
	var ds []dirty
	s.idxMu.RLock()
	for sum, e := range s.index {
		if st := e.stamp.Load(); st != e.saved {
			ds = append(ds, dirty{e, sum, st})
		}
	}
	s.idxMu.RUnlock()
	if len(ds) == 0 {
		return nil
	}
	// Blind writes in as few transactions as Badger takes; the stamp keys
	// are written under writeMu only, so nothing conflicts.
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	from := 0 // ds[from:k] are set in txn
	for k := 0; k < len(ds); {
		err := txn.Set(stampKey(ds[k].sum), encodeStamp(ds[k].stamp))
		if errors.Is(err, badger.ErrTxnTooBig) && k > from {
			if err := txn.Commit(); err != nil {
				return err
			}
			for _, d := range ds[from:k] {
				d.e.saved = d.stamp
			}
			txn = s.db.NewTransaction(true)
			from = k
			continue
		}
		if err != nil {
			return err
		}
		k++
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	for _, d := range ds[from:] {
		d.e.saved = d.stamp
	}
	return nil
}
