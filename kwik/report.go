package kwik

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// maxByPath bounds the paths a client itemizes per stream in its reports;
// bytes from further paths still count in the paths' own totals.
const maxByPath = 32

// Range is the byte range [Start, End) of a stream.
type Range struct {
	Start, End uint64
}

// Delivery is what the client last reported about one stream, as the
// primary sees it (Stream.Delivered). A byte counts as received once the
// client's kwik layer holds it: buffered for the application or read by it.
type Delivery struct {
	// At is when the report arrived (primary's clock); zero before the
	// first report.
	At time.Time
	// Received is the offset below which the client has every byte.
	Received uint64
	// Complete: the client has every byte up to the stream's final size
	// (then Received). No report follows.
	Complete bool
	// Ranges are ranges received beyond Received, in order: at most the
	// 16 lowest.
	Ranges []Range
	// ByPath counts the bytes of the stream each path delivered first
	// (duplicates excluded), for up to 32 paths.
	ByPath map[PathID]uint64
}

// noteRecvLocked records n new bytes of the stream delivered by path id
// and marks the stream for the next REPORT, at once if it has just become
// complete (client side). Called with st.mu held.
func (st *Stream) noteRecvLocked(id PathID, n uint64) {
	s := st.s
	if !s.isClient {
		return
	}
	if n > 0 {
		i := 0
		for i < len(st.byPath) && st.byPath[i].PathID != uint64(id) {
			i++
		}
		switch {
		case i < len(st.byPath):
			st.byPath[i].Bytes += n
		case len(st.byPath) < maxByPath:
			st.byPath = append(st.byPath, wire.PathBytes{PathID: uint64(id), Bytes: n})
		}
	}
	if st.repDone || st.discarding {
		return
	}
	if !st.repDirty {
		st.repDirty = true
		s.repMu.Lock()
		s.dirty[st] = struct{}{}
		s.repMu.Unlock()
		notify(s.repWake)
	}
	if final, ok := st.recv.FinalSize(); ok {
		if c, _ := st.recv.Received(nil, 0); c == final {
			notify(s.repUrgent)
		}
	}
}

// reportSoon asks for a REPORT within ReportInterval, for news in the path
// counters (client side).
func (s *Session) reportSoon() {
	if s.isClient {
		notify(s.repWake)
	}
}

// runReports sends REPORT frames to the primary (client side): within
// ReportInterval of news, at once when a stream completes.
func (s *Session) runReports() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-s.repWake:
			t.Reset(s.conf.ReportInterval)
			select {
			case <-t.C:
			case <-s.repUrgent:
				t.Stop()
			case <-s.ctx.Done():
				return
			}
		case <-s.repUrgent:
		case <-s.ctx.Done():
			return
		}
		s.sendReport()
	}
}

// sendReport queues REPORT frames with every path's counters and the
// streams marked since the last report, split to fit the primary's
// MaxControlFrameSize.
func (s *Session) sendReport() {
	s.repMu.Lock()
	dirty := s.dirty
	s.dirty = make(map[*Stream]struct{}, len(dirty))
	s.repMu.Unlock()
	streams := make([]wire.StreamReport, 0, len(dirty))
	for st := range dirty {
		if e, ok := st.reportEntry(); ok {
			streams = append(streams, e)
		}
	}
	slices.SortFunc(streams, func(a, b wire.StreamReport) int { return cmp.Compare(a.StreamID, b.StreamID) })

	limit := int(s.peer.MaxControlFrameSize) - 16 // room for the two counts
	f, size := &wire.Report{}, 0
	flush := func() {
		s.p0.out.push(f)
		f, size = &wire.Report{}, 0
	}
	for _, r := range s.pathReports() {
		if n := wire.PathReportLen(&r); size+n > limit {
			flush()
		}
		f.Paths = append(f.Paths, r)
		size += wire.PathReportLen(&r)
	}
	for i := range streams {
		n := wire.StreamReportLen(&streams[i])
		if size+n > limit && (len(f.Paths) > 0 || len(f.Streams) > 0) {
			flush()
		}
		f.Streams = append(f.Streams, streams[i])
		size += n
	}
	if len(f.Paths) > 0 || len(f.Streams) > 0 {
		flush()
	}
}

// reportEntry returns the stream's REPORT entry, unless it needs none
// (completed or discarding).
func (st *Stream) reportEntry() (wire.StreamReport, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.repDirty = false
	if st.repDone || st.discarding {
		return wire.StreamReport{}, false
	}
	var buf [wire.MaxReportRanges][2]uint64
	contig, ranges := st.recv.Received(buf[:0], wire.MaxReportRanges)
	e := wire.StreamReport{StreamID: uint64(st.id), Contiguous: contig, ByPath: slices.Clone(st.byPath)}
	if final, ok := st.recv.FinalSize(); ok && contig == final {
		e.Complete = true
		st.repDone = true
		return e, true
	}
	for _, r := range ranges {
		e.Ranges = append(e.Ranges, wire.Range{Start: r[0], End: r[1]})
	}
	return e, true
}

// pathReports returns the REPORT entries of every path with a connection.
func (s *Session) pathReports() []wire.PathReport {
	s.pathMu.Lock()
	ps := []*path{s.p0}
	for _, p := range s.paths {
		if p.conn != nil {
			ps = append(ps, p)
		}
	}
	s.pathMu.Unlock()
	slices.SortFunc(ps, func(a, b *path) int { return cmp.Compare(a.id, b.id) })
	out := make([]wire.PathReport, 0, len(ps))
	for _, p := range ps {
		q := p.conn.ConnectionStats()
		out = append(out, wire.PathReport{
			PathID:           uint64(p.id),
			Delivered:        p.stats.delivered.Load(),
			Received:         p.stats.dataBytesRecv.Load(),
			Frames:           p.stats.dataFramesRecv.Load(),
			Duplicate:        p.stats.dupBytes.Load(),
			OutOfGrant:       p.stats.oogBytes.Load(),
			OutOfGrantFrames: p.stats.oogFrames.Load(),
			RefusedStreams:   p.stats.refusedStreams.Load(),
			SmoothedRTTMicro: uint64(q.SmoothedRTT.Microseconds()),
			MinRTTMicro:      uint64(q.MinRTT.Microseconds()),
		})
	}
	return out
}

// handleReport applies the client's REPORT on a primary. Entries for paths
// and streams it no longer knows are ignored.
func (s *Session) handleReport(f *wire.Report) error {
	now := time.Now()
	s.pathMu.Lock()
	for i := range f.Paths {
		r := &f.Paths[i]
		p := s.p0
		if r.PathID != 0 {
			p = s.paths[PathID(r.PathID)]
		}
		if p != nil {
			p.updateReport(r, now)
		}
	}
	s.pathMu.Unlock()
	for i := range f.Streams {
		e := &f.Streams[i]
		id := StreamID(e.StreamID)
		s.mu.Lock()
		st := s.tracked[id]
		if st != nil && e.Complete {
			delete(s.tracked, id)
		}
		s.mu.Unlock()
		if st != nil {
			st.applyReport(e, now)
		}
	}
	return nil
}

// untrack stops tracking a stream whose delivery will never complete (a
// primary's stream that was reset).
func (s *Session) untrack(id StreamID) {
	if s.isClient {
		return
	}
	s.mu.Lock()
	delete(s.tracked, id)
	s.mu.Unlock()
}

// applyReport records a REPORT entry for the stream (primary side).
func (st *Stream) applyReport(e *wire.StreamReport, now time.Time) {
	d := Delivery{At: now, Received: e.Contiguous, Complete: e.Complete}
	for _, r := range e.Ranges {
		d.Ranges = append(d.Ranges, Range{Start: r.Start, End: r.End})
	}
	if len(e.ByPath) > 0 {
		d.ByPath = make(map[PathID]uint64, len(e.ByPath))
		for _, pb := range e.ByPath {
			d.ByPath[PathID(pb.PathID)] = pb.Bytes
		}
	}
	st.mu.Lock()
	st.dlv = d
	if st.dlvSignal != nil {
		close(st.dlvSignal)
		st.dlvSignal = nil
	}
	st.mu.Unlock()
}

// Delivered returns what the client last reported about this stream: on a
// primary's stream, the bytes the client has received, and from which
// path. Clients send reports every Config.ReportInterval while data
// arrives and at once when a stream is complete. On a client's stream it
// returns the zero Delivery.
func (st *Stream) Delivered() Delivery {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.dlv.clone()
}

func (d Delivery) clone() Delivery {
	d.Ranges = slices.Clone(d.Ranges)
	d.ByPath = maps.Clone(d.ByPath)
	return d
}

// WaitDelivered blocks until the client reports that it has every byte of
// this stream below off (or the whole stream), and returns that report. It
// fails with ctx's error, with the *StreamError of a reset, or with the
// *SessionError when the session closes. On a client's stream it fails
// with ErrNotPrimary.
func (st *Stream) WaitDelivered(ctx context.Context, off uint64) (Delivery, error) {
	if st.s.isClient {
		return Delivery{}, ErrNotPrimary
	}
	for {
		st.mu.Lock()
		if st.dlv.Received >= off || st.dlv.Complete {
			d := st.dlv.clone()
			st.mu.Unlock()
			return d, nil
		}
		if err := st.sendErr; err != nil {
			st.mu.Unlock()
			return Delivery{}, err
		}
		if st.dlvSignal == nil {
			st.dlvSignal = make(chan struct{})
		}
		ch := st.dlvSignal
		st.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		case <-st.s.ctx.Done():
			return Delivery{}, st.s.err()
		}
	}
}
