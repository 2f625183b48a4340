package reassembly

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Errors from Check and Push. Compare with errors.Is.
var (
	// ErrWindow reports data beyond the buffer's limit (the receive window).
	ErrWindow = errors.New("data beyond the receive window")
	// ErrFinalSize reports data beyond the final size, or a final size that
	// contradicts an earlier one or data already received.
	ErrFinalSize = errors.New("final size mismatch")
	// ErrTooFragmented reports more than MaxGaps holes in the buffered data.
	ErrTooFragmented = errors.New("receive buffer too fragmented")
)

// MaxGaps bounds the holes between the read offset and the highest buffered
// byte, and so the bookkeeping a sender of scattered ranges can cause.
const MaxGaps = 1024

// ownedMax is the size up to which copied small pieces are coalesced into
// one allocation.
const ownedMax = 4 << 10

const noLimit = math.MaxUint64

// segment is a run of received bytes at off. If c is nil, data is owned by
// the segment (a copied small piece); otherwise it points into c.
type segment struct {
	off  uint64
	data []byte
	c    *Chunk
}

func (s *segment) end() uint64 { return s.off + uint64(len(s.data)) }

// Buffer reassembles one direction of a logical stream from frames that may
// arrive out of order, overlap or repeat. Read returns contiguous bytes only.
// Bytes already received are dropped and counted as duplicates: the first
// copy wins. The buffer never holds a byte at or beyond its limit, so limit
// minus the read offset bounds its size.
//
// A Buffer is not safe for concurrent use; its owner locks it. The zero value
// is an empty buffer with limit 0.
type Buffer struct {
	limit    uint64 // bytes at offsets >= limit are refused (ErrWindow)
	readOff  uint64 // next offset Read returns
	highest  uint64 // highest end offset seen
	final    uint64 // final size, valid if hasFinal
	hasFinal bool
	discard  bool      // set by Discard: data is validated and counted but not kept
	segs     []segment // segs[head:] are live: sorted, disjoint, at or after readOff
	head     int
	buffered uint64 // bytes in live segments
	gaps     int    // holes below the end of the last live segment
	gapLimit int    // during PushBounded: its bound; otherwise 0 (MaxGaps)
}

// SetLimit sets the offset at which the receive window ends. It may only grow.
func (b *Buffer) SetLimit(limit uint64) {
	if limit > b.limit {
		b.limit = limit
	}
}

// Limit returns the end of the receive window.
func (b *Buffer) Limit() uint64 { return b.limit }

// ReadOffset returns the offset of the next byte Read returns.
func (b *Buffer) ReadOffset() uint64 { return b.readOff }

// Highest returns the highest end offset of any frame pushed so far.
func (b *Buffer) Highest() uint64 { return b.highest }

// FinalSize returns the stream's final size, if a FIN has been pushed.
func (b *Buffer) FinalSize() (uint64, bool) { return b.final, b.hasFinal }

// Buffered returns the number of bytes held.
func (b *Buffer) Buffered() uint64 { return b.buffered }

// Readable reports whether Read would return at least one byte.
func (b *Buffer) Readable() bool {
	return b.head < len(b.segs) && b.segs[b.head].off == b.readOff
}

// Done reports whether the final size is known and every byte has been read.
func (b *Buffer) Done() bool { return b.hasFinal && b.readOff == b.final }

// Check validates a frame of n bytes at off, with fin set if it ends the
// stream, before its payload is read. Push performs the same checks.
func (b *Buffer) Check(off, n uint64, fin bool) error {
	end := off + n
	if n > math.MaxUint64-off {
		return fmt.Errorf("frame [%d, +%d) overflows: %w", off, n, ErrWindow)
	}
	if b.hasFinal {
		if end > b.final {
			return fmt.Errorf("data up to offset %d beyond final size %d: %w", end, b.final, ErrFinalSize)
		}
		if fin && end != b.final {
			return fmt.Errorf("final size %d, earlier %d: %w", end, b.final, ErrFinalSize)
		}
	} else if fin && end < b.highest {
		return fmt.Errorf("final size %d below data received up to %d: %w", end, b.highest, ErrFinalSize)
	}
	if end > b.limit {
		return fmt.Errorf("data up to offset %d, window ends at %d: %w", end, b.limit, ErrWindow)
	}
	return nil
}

// Push adds data found at off, with fin set if it ends the stream. If c is
// not nil, data lies in c and Push takes references to c for the bytes it
// keeps (the caller keeps and releases its own); otherwise Push copies what
// it keeps and the caller may reuse data. Push returns the number of bytes it
// dropped because they had been received before. On error nothing changes,
// except that after ErrTooFragmented a prefix of data may have been kept.
func (b *Buffer) Push(off uint64, data []byte, fin bool, c *Chunk) (dup int, err error) {
	if err := b.Check(off, uint64(len(data)), fin); err != nil {
		return 0, err
	}
	end := off + uint64(len(data))
	if fin {
		b.final, b.hasFinal = end, true
	}
	if end > b.highest {
		b.highest = end
	}
	if b.discard {
		return 0, nil
	}
	if off < b.readOff {
		skip := min(b.readOff-off, uint64(len(data)))
		dup += int(skip)
		data = data[skip:]
		off += skip
	}
	if len(data) == 0 {
		return dup, nil
	}
	// Index of the first live segment ending after off.
	live := b.segs[b.head:]
	i := len(b.segs)
	if len(live) > 0 && live[len(live)-1].end() > off {
		i = b.head + sort.Search(len(live), func(k int) bool { return live[k].end() > off })
	}
	for len(data) > 0 {
		if i < len(b.segs) && b.segs[i].off <= off {
			skip := min(b.segs[i].end()-off, uint64(len(data)))
			dup += int(skip)
			data = data[skip:]
			off += skip
			i++
			continue
		}
		n := uint64(len(data))
		if i < len(b.segs) {
			n = min(n, b.segs[i].off-off)
		}
		if i, err = b.fill(i, off, data[:n], c); err != nil {
			return dup, err
		}
		data = data[n:]
		off += n
	}
	return dup, nil
}

// PushBounded is Push with a tighter bound on the holes: it fails with
// ErrTooFragmented rather than leave more than maxGaps holes (maxGaps is
// capped at MaxGaps). A receiver uses it for data from a less trusted
// sender, so that this sender cannot use up the holes others need.
func (b *Buffer) PushBounded(off uint64, data []byte, fin bool, c *Chunk, maxGaps int) (dup int, err error) {
	b.gapLimit = max(1, min(maxGaps, MaxGaps))
	dup, err = b.Push(off, data, fin, c)
	b.gapLimit = 0
	return dup, err
}

// fill stores piece, which exactly covers part of the hole before segs[i],
// and returns the index just after it.
func (b *Buffer) fill(i int, off uint64, piece []byte, c *Chunk) (int, error) {
	end := off + uint64(len(piece))
	lo, hi := b.readOff, uint64(noLimit)
	if i > b.head {
		lo = b.segs[i-1].end()
	}
	if i < len(b.segs) {
		hi = b.segs[i].off
	}
	delta := 0
	if lo < off {
		delta++
	}
	if hi != noLimit {
		delta-- // the hole [lo, hi) is filled or split
		if end < hi {
			delta++
		}
	}
	limit := MaxGaps
	if b.gapLimit > 0 {
		limit = b.gapLimit
	}
	if b.gaps+delta > limit {
		return i, fmt.Errorf("%d gaps, limit %d: %w", b.gaps+delta, limit, ErrTooFragmented)
	}
	b.gaps += delta
	b.buffered += uint64(len(piece))

	if len(piece) <= SmallPiece {
		if i > b.head && lo == off {
			if left := &b.segs[i-1]; left.c == nil && len(left.data)+len(piece) <= ownedMax {
				left.data = append(left.data, piece...)
				if b.mergeRight(i - 1) {
					return i - 1, nil // the merged segment covers what follows
				}
				return i, nil
			}
		}
		owned := make([]byte, len(piece), max(2*len(piece), 256))
		copy(owned, piece)
		b.segs = slices.Insert(b.segs, i, segment{off: off, data: owned})
		if b.mergeRight(i) {
			return i, nil
		}
		return i + 1, nil
	}
	if c != nil {
		c.ref()
		b.segs = slices.Insert(b.segs, i, segment{off: off, data: piece, c: c})
		return i + 1, nil
	}
	for len(piece) > 0 {
		n := min(len(piece), MaxChunk)
		nc := NewChunk(n)
		copy(nc.Bytes(), piece[:n])
		b.segs = slices.Insert(b.segs, i, segment{off: off, data: nc.Bytes(), c: nc})
		i++
		off += uint64(n)
		piece = piece[n:]
	}
	return i, nil
}

// mergeRight folds segs[i+1] into segs[i] if both are owned, adjacent and
// small together, and reports whether it did.
func (b *Buffer) mergeRight(i int) bool {
	if i+1 >= len(b.segs) {
		return false
	}
	s, r := &b.segs[i], &b.segs[i+1]
	if s.c != nil || r.c != nil || s.end() != r.off || len(s.data)+len(r.data) > ownedMax {
		return false
	}
	s.data = append(s.data, r.data...)
	b.segs = slices.Delete(b.segs, i+1, i+2)
	return true
}

// Read copies contiguous bytes at the read offset into p and returns their
// number, 0 if none are available.
func (b *Buffer) Read(p []byte) int {
	n := 0
	for n < len(p) && b.head < len(b.segs) {
		s := &b.segs[b.head]
		if s.off != b.readOff {
			break
		}
		k := copy(p[n:], s.data)
		n += k
		b.readOff += uint64(k)
		s.off += uint64(k)
		s.data = s.data[k:]
		if len(s.data) == 0 {
			if s.c != nil {
				s.c.Release()
			}
			*s = segment{}
			b.head++
		}
	}
	b.buffered -= uint64(n)
	b.compact()
	return n
}

// Advance records that the n bytes at off, the read offset, went straight
// to the reader without being buffered, with fin set if they end the
// stream. It performs Push's checks. Buffered bytes they cover are dropped
// and returned as duplicates.
func (b *Buffer) Advance(off uint64, n int, fin bool) (dup int, err error) {
	if off != b.readOff {
		return 0, fmt.Errorf("advance at %d, read offset %d", off, b.readOff)
	}
	if err := b.Check(off, uint64(n), fin); err != nil {
		return 0, err
	}
	end := off + uint64(n)
	if fin {
		b.final, b.hasFinal = end, true
	}
	if end > b.highest {
		b.highest = end
	}
	if b.discard {
		return 0, nil
	}
	for b.head < len(b.segs) && b.segs[b.head].off < end {
		s := &b.segs[b.head]
		k := min(end-s.off, uint64(len(s.data)))
		dup += int(k)
		b.buffered -= k
		s.data = s.data[k:]
		s.off += k
		if len(s.data) > 0 {
			break
		}
		if s.c != nil {
			s.c.Release()
		}
		*s = segment{}
		b.head++
	}
	b.readOff = end
	if b.gaps > 0 {
		b.countGaps()
	}
	b.compact()
	return dup, nil
}

// countGaps recounts the holes below the end of the last live segment.
func (b *Buffer) countGaps() {
	b.gaps = 0
	prev := b.readOff
	for i := b.head; i < len(b.segs); i++ {
		if b.segs[i].off > prev {
			b.gaps++
		}
		prev = b.segs[i].end()
	}
}

func (b *Buffer) compact() {
	switch {
	case b.head == len(b.segs):
		b.segs = b.segs[:0]
		b.head = 0
	case b.head >= 16 && 2*b.head >= len(b.segs):
		n := copy(b.segs, b.segs[b.head:])
		clear(b.segs[n:])
		b.segs = b.segs[:n]
		b.head = 0
	}
}

// Gaps returns the number of holes between the read offset and the end of
// the last buffered byte. One Push adds at most one hole.
func (b *Buffer) Gaps() int { return b.gaps }

// Received returns the offset below which every byte has been received
// (read or buffered), and appends to dst the ranges [start, end) buffered
// beyond it, in order, at most max of them (the lowest). Adjacent buffered
// segments form one range. In discard mode nothing is buffered and the
// offset is the read offset.
func (b *Buffer) Received(dst [][2]uint64, max int) (uint64, [][2]uint64) {
	contig := b.readOff
	i := b.head
	for ; i < len(b.segs) && b.segs[i].off == contig; i++ {
		contig = b.segs[i].end()
	}
	for ; i < len(b.segs); i++ {
		s := &b.segs[i]
		if n := len(dst); n > 0 && dst[n-1][1] == s.off {
			dst[n-1][1] = s.end()
			continue
		}
		if len(dst) == max {
			break
		}
		dst = append(dst, [2]uint64{s.off, s.end()})
	}
	return contig, dst
}

// Discard drops everything buffered and makes later pushes keep nothing;
// they are still checked, and still advance Highest and FinalSize. It is for
// a receiver that stopped reading but must learn the final size.
func (b *Buffer) Discard() {
	for i := b.head; i < len(b.segs); i++ {
		if c := b.segs[i].c; c != nil {
			c.Release()
		}
	}
	b.segs, b.head, b.buffered, b.gaps = nil, 0, 0, 0
	b.discard = true
}
