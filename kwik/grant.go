package kwik

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/reassembly"
	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// maxGrantRanges bounds the disjoint granted ranges a client records per
// stream and path; a primary that grants more closes the session.
const maxGrantRanges = 1024

// secondaryMaxGaps bounds the holes that secondaries' data may leave in a
// stream's reassembly buffer, so that a hostile secondary cannot use up the
// holes (reassembly.MaxGaps) the primary's data needs.
const secondaryMaxGaps = reassembly.MaxGaps / 2

// rangeSet is a set of byte ranges: sorted, disjoint, not adjacent.
type rangeSet struct {
	r []wire.Range
}

// add adds [start, end) and merges. It reports false, changing nothing, if
// the set would exceed maxGrantRanges ranges.
func (rs *rangeSet) add(start, end uint64) bool {
	// i: first range ending at or after start; j: first range starting
	// after end. Ranges i..j-1 touch [start, end) and merge with it.
	i := sort.Search(len(rs.r), func(k int) bool { return rs.r[k].End >= start })
	j := sort.Search(len(rs.r), func(k int) bool { return rs.r[k].Start > end })
	if i == j {
		if len(rs.r) >= maxGrantRanges {
			return false
		}
		rs.r = append(rs.r, wire.Range{})
		copy(rs.r[i+1:], rs.r[i:])
		rs.r[i] = wire.Range{Start: start, End: end}
		return true
	}
	merged := wire.Range{Start: min(start, rs.r[i].Start), End: max(end, rs.r[j-1].End)}
	rs.r[i] = merged
	rs.r = append(rs.r[:i+1], rs.r[j:]...)
	return true
}

// clip splits [off, end) into the pieces inside the set and the pieces
// outside, in order, and calls fn for each.
func (rs *rangeSet) clip(off, end uint64, fn func(start, end uint64, in bool)) {
	pos := off
	var r []wire.Range
	if rs != nil {
		r = rs.r
	}
	for i := sort.Search(len(r), func(k int) bool { return r[k].End > off }); i < len(r) && pos < end; i++ {
		g := r[i]
		if g.Start >= end {
			break
		}
		if g.Start > pos {
			fn(pos, g.Start, false)
			pos = g.Start
		}
		e := min(g.End, end)
		fn(pos, e, true)
		pos = e
	}
	if pos < end {
		fn(pos, end, false)
	}
}

// addGrant records, on a client, that secondary path id may write g. A
// grant beyond the stream's receive window means that the primary broke
// flow control: the session closes.
func (st *Stream) addGrant(id PathID, g wire.Grant) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if g.End() > st.recvGranted {
		return &SessionError{Code: FlowControlError, Message: fmt.Sprintf(
			"grant for path %d on stream %d up to %d, window ends at %d", id, st.id, g.End(), st.recvGranted)}
	}
	if st.grants == nil {
		st.grants = make(map[PathID]*rangeSet)
	}
	rs := st.grants[id]
	if rs == nil {
		rs = &rangeSet{}
		st.grants[id] = rs
	}
	if !rs.add(g.Offset, g.End()) {
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf(
			"more than %d granted ranges for path %d on stream %d", maxGrantRanges, id, st.id)}
	}
	return nil
}

// pushGranted stores a piece of a data frame from secondary path p (client
// side): the bytes inside p's grants go into the reassembly buffer, the
// others are dropped and counted (OutOfGrantBytes). Granted bytes that
// break the receive rules (window, final size, fragmentation) are dropped
// and counted too (RejectedBytes): a secondary never closes the session.
// c, if not nil, holds data. It reports whether any byte was outside.
func (st *Stream) pushGranted(p *path, off uint64, data []byte, c *reassembly.Chunk) (outside bool) {
	s := st.s
	var oog, rejected, dups, accepted uint64
	at := time.Now()
	st.mu.Lock()
	st.grants[p.id].clip(off, off+uint64(len(data)), func(a, b uint64, in bool) {
		if !in {
			oog += b - a
			return
		}
		piece := data[a-off : b-off]
		n := uint64(len(piece))
		if st.recv.Check(a, n, false) != nil {
			rejected += n
			return
		}
		if b > st.recv.Highest() && s.chargeRecv(b-st.recv.Highest()) != nil {
			rejected += n
			return
		}
		ready := a <= st.recv.ReadOffset()
		dup, err := st.recv.PushBounded(a, piece, false, c, secondaryMaxGaps)
		if err != nil {
			// ErrTooFragmented: the buffer's highest offset has moved and is
			// charged, a prefix may be kept; the piece counts as rejected.
			if !errors.Is(err, reassembly.ErrTooFragmented) {
				panic(fmt.Sprintf("kwik: push after a passing check: %v", err))
			}
			rejected += n
			return
		}
		dups += uint64(dup)
		accepted += n - uint64(dup)
		if uint64(dup) < n && !st.discarding {
			st.noteArrivalLocked(b, at, ready)
		}
	})
	var credit uint64
	var wake, finished bool
	if accepted+dups+rejected > 0 {
		st.noteRecvLocked(p.id, accepted)
		credit = st.settleLocked()
		wake = st.recv.Readable() || st.recv.Done()
		finished = st.checkRecvLocked()
	}
	st.mu.Unlock()
	p.stats.delivered.Add(accepted)
	p.stats.dupBytes.Add(dups)
	p.stats.oogBytes.Add(oog)
	p.stats.rejectedBytes.Add(rejected)
	if oog+rejected > 0 {
		s.reportSoon()
	}
	s.consumed(credit)
	if wake {
		notify(st.readSignal)
	}
	if finished {
		s.streamFinished(st)
	}
	return oog > 0
}
