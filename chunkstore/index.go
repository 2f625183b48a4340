package chunkstore

import (
	"sync"
	"sync/atomic"
)

// entry is what the in-memory index holds about one stored chunk.
type entry struct {
	loc location // where the chunk is; immutable
	// stamp is the chunk's last use (a value of Store.clock). Get updates
	// it under idxMu's read lock, so it is atomic.
	stamp atomic.Uint64
	// saved is the stamp as last written to Badger; guarded by writeMu.
	saved uint64
}

// segUsage is the disk space a segment file takes for the store.
type segUsage struct {
	chunks int   // chunks stored in it
	live   int64 // their disk bytes (location.diskBytes)
	dead   int64 // disk bytes of removed chunks whose space is not released yet
}

// indexAdd records a chunk just committed at loc with stamp. s.writeMu
// must be held.
func (s *Store) indexAdd(sum [32]byte, loc location, stamp uint64) {
	e := &entry{loc: loc, saved: stamp}
	e.stamp.Store(stamp)
	d := loc.diskBytes()
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	s.index[sum] = e
	u := s.segments[loc.seg]
	if u == nil {
		u = &segUsage{}
		s.segments[loc.seg] = u
	}
	u.chunks++
	u.live += d
	s.disk += d
	if s.pins[sum] > 0 {
		s.pinned += d
		s.npinned++
	}
	s.count(func(st *Stats) {
		st.Chunks++
		st.ChunkBytes += loc.n
	})
}

// indexRemove forgets the chunk sum, whose record has just been deleted,
// and returns its entry (nil if the index did not hold it). Its disk bytes
// stay counted, as dead space of its segment, until release gives them
// back. s.writeMu must be held.
func (s *Store) indexRemove(sum [32]byte) *entry {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	e := s.index[sum]
	if e == nil {
		return nil
	}
	delete(s.index, sum)
	d := e.loc.diskBytes()
	u := s.segments[e.loc.seg]
	u.chunks--
	u.live -= d
	u.dead += d
	if s.pins[sum] > 0 {
		s.pinned -= d
		s.npinned--
	}
	s.count(func(st *Stats) {
		st.Chunks--
		st.ChunkBytes -= e.loc.n
	})
	return e
}

// touch marks the chunk sum as used now, if it is stored.
func (s *Store) touch(sum [32]byte) {
	s.idxMu.RLock()
	if e := s.index[sum]; e != nil {
		e.stamp.Store(s.clock.Add(1))
	}
	s.idxMu.RUnlock()
}

// Limit returns the bytes of chunks the store keeps at most
// (Options.Limit, or the figure Open chose for AutoLimit); 0 means no
// limit.
func (s *Store) Limit() int64 { return s.limit }

// Pin protects the chunks stored under sums from eviction until the
// returned unpin is called: a pinned chunk is never evicted to make room,
// whatever its last use (Delete and the removal of a corrupt chunk still
// remove it). A sum may be pinned before its chunk is stored, and is then
// protected from the moment it is stored. Pins nest: a chunk stays pinned
// while any Pin covering it is not undone (a sum listed twice is pinned
// twice and unpinned twice). unpin is safe to call more than once and from
// any goroutine; only its first call counts. Pin never blocks on I/O and
// works on a closed Store too (it then protects nothing).
//
// The FUSE filesystem pins the chunks of a file while it is open, so that
// reads of other files never evict what an open file is reading. A
// prefetch job pins the chunks of the files it is fetching for as long
// as it runs, so that the fetched chunks are not evicted before the job
// ends; a job whose files are larger than Options.Limit cannot hold them
// all, and should compare its size with Stats.Limit first. If pinned
// chunks alone exceed Limit, the store goes over it (counted in
// Stats.OverLimit, with a warning in the log) rather than fail a write.
func (s *Store) Pin(sums ...[32]byte) (unpin func()) {
	s.pinAll(sums, 1)
	var once sync.Once
	return func() { once.Do(func() { s.pinAll(sums, -1) }) }
}

// pinAll adds delta to the pin count of every sum in sums.
func (s *Store) pinAll(sums [][32]byte, delta int) {
	s.idxMu.Lock()
	defer s.idxMu.Unlock()
	for _, sum := range sums {
		before := s.pins[sum]
		after := before + delta
		if after <= 0 {
			delete(s.pins, sum)
		} else {
			s.pins[sum] = after
		}
		e := s.index[sum]
		if e == nil || (before > 0) == (after > 0) {
			continue
		}
		d := e.loc.diskBytes()
		if after > 0 {
			s.pinned += d
			s.npinned++
		} else {
			s.pinned -= d
			s.npinned--
		}
	}
}
