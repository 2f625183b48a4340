package kwik

import (
	"cmp"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/quic-go/quic-go"
)

// SessionStats is a snapshot of a session's counters, one entry per path:
// path 0 first, then the secondary paths by ID, including ended ones (the
// 16 most recent).
type SessionStats struct {
	Paths []PathStats
	// ReadLatency is how long received data frames waited for Read on a
	// client (zero on a server, which receives only requests).
	ReadLatency LatencyStats
	// StalledPaths counts the secondary paths of the session that ended
	// stalled (PathStats.Stalled), forgotten ones included: closed by the
	// client, or on a primary reported so by the client.
	StalledPaths uint64
	// GrantViolationPaths counts the secondary paths the client closed
	// because their secondaries wrote outside their grants too much
	// (PathStats.GrantViolation), forgotten ones included. Zero on a
	// primary, which learns of each as a failed path with code
	// ProtocolViolation.
	GrantViolationPaths uint64
}

// PathStats describes one path. Data counters count payload bytes of data
// frames (not headers); received bytes include duplicates and dropped
// bytes. On a client every path has its own counters; on a primary a
// secondary path is a record whose numbers come from the client (Reported).
type PathStats struct {
	ID    int    // the PathID: 0 for the primary path
	Addr  string // the peer's address (a secondary's as the primary named it)
	State PathState
	// Err is the *PathError that ended the path; nil while it is up.
	Err error
	// Stalled: the path ended because it stalled: the client closed it
	// after it received no data for Config.PathStallTimeout after it was
	// given work (Err has code PathStalled and matches ErrPathStalled).
	Stalled bool
	// AwaitingData is, for a client's secondary path, how long it has owed
	// data: the age of the oldest command relayed to it after its last
	// data arrived (see Config.PathStallTimeout). Zero when it owes none,
	// and on a primary.
	AwaitingData time.Duration
	// GrantViolation: the client closed the path because its secondary
	// wrote outside its grants beyond a bound (see OutOfGrantBytes,
	// OutOfGrantFrames, RefusedStreams); Err has code ProtocolViolation
	// and matches ErrGrantViolation. Client side only.
	GrantViolation bool

	// LocalAddr is nil unless this side holds the path's connection.
	// RemoteAddr is never nil: without a connection it is Addr.
	LocalAddr  net.Addr
	RemoteAddr net.Addr

	SmoothedRTT time.Duration
	MinRTT      time.Duration

	DataBytesSent      uint64
	DataBytesReceived  uint64
	DataFramesSent     uint64
	DataFramesReceived uint64
	// DeliveredBytes counts received bytes accepted into a stream for the
	// first time: what the path contributed.
	DeliveredBytes uint64
	// DuplicateBytes counts received payload bytes dropped because they had
	// arrived before (or belonged to a finished stream).
	DuplicateBytes uint64
	// OutOfGrantBytes counts bytes a secondary sent outside its grants,
	// including for streams it may not write; they were dropped.
	// OutOfGrantFrames counts the frames with such bytes, with a FIN (a
	// secondary never ends a stream) or without payload. A client closes a
	// path that exceeds a bound on these or on RefusedStreams
	// (GrantViolation).
	OutOfGrantBytes  uint64
	OutOfGrantFrames uint64
	// RejectedBytes counts granted bytes a secondary sent that broke the
	// receive rules (final size, session window, fragmentation): dropped.
	RejectedBytes uint64
	// RefusedStreams counts a secondary's data streams for logical streams
	// that do not exist: a secondary cannot open a stream.
	RefusedStreams uint64
	// CommandsSent counts relayed commands: sent by a primary (SendRawData),
	// forwarded by a client. CommandsDropped counts commands a client did
	// not forward: path not up, command too large for the secondary, or
	// stream already finished (its bytes would only be duplicates).
	CommandsSent    uint64
	CommandsDropped uint64

	ControlFramesSent     uint64
	ControlFramesReceived uint64
	// ControlFramesDropped counts the control frames this side did not
	// queue for the path because the frames waiting for the peer would
	// have exceeded Config.MaxControlQueueBytes (the peer stopped reading
	// its control stream); the first ended the path, or the session for
	// path 0, with ControlQueueOverflow. ControlQueuePeak is the most
	// bytes of control frames held for the path at once (queued or being
	// written, window updates not counted): at most MaxControlQueueBytes,
	// or one frame if a single frame is larger.
	ControlFramesDropped uint64
	ControlQueuePeak     uint64

	// Reported is, on a primary, the client's latest report on the path;
	// nil before the first and on a client.
	Reported *PathReport

	// QUIC holds quic-go's statistics of the connection, if this side
	// holds it.
	QUIC quic.ConnectionStats
}

// pathAddr is the net.Addr of a path without a connection.
type pathAddr string

func (a pathAddr) Network() string { return "udp" }
func (a pathAddr) String() string  { return string(a) }

// PacketsReceived returns how many QUIC packets the session has received
// on all its paths so far, those of ended paths included: a count that
// never decreases, cheap enough to read on every request, for telling
// whether the peer has been heard from since an earlier reading.
func (s *Session) PacketsReceived() uint64 {
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	n := s.forgottenPackets
	if s.p0.conn != nil {
		n += s.p0.conn.ConnectionStats().PacketsReceived
	}
	for _, p := range s.paths {
		if p.conn != nil {
			n += p.conn.ConnectionStats().PacketsReceived
		}
	}
	return n
}

// Stats returns the session's statistics. It may be called at any time,
// also after the session closed.
func (s *Session) Stats() SessionStats {
	type snap struct {
		p      *path
		conn   *quic.Conn
		state  PathState
		err    *PathError
		report *PathReport
	}
	s.pathMu.Lock()
	snaps := []snap{{s.p0, s.p0.conn, s.p0.state, nil, s.p0.report}}
	for _, p := range s.paths {
		snaps = append(snaps, snap{p, p.conn, p.state, p.err, p.report})
	}
	s.pathMu.Unlock()
	slices.SortFunc(snaps[1:], func(a, b snap) int { return cmp.Compare(a.p.id, b.p.id) })

	st := SessionStats{Paths: make([]PathStats, 0, len(snaps)), ReadLatency: s.readLat.stats(),
		StalledPaths: s.stalledPaths.Load(), GrantViolationPaths: s.grantViolationPaths.Load()}
	for _, sn := range snaps {
		p := sn.p
		ps := PathStats{
			ID:                    int(p.id),
			RemoteAddr:            pathAddr(p.addr),
			Addr:                  p.addr,
			State:                 sn.state,
			DataBytesSent:         p.stats.dataBytesSent.Load(),
			DataBytesReceived:     p.stats.dataBytesRecv.Load(),
			DataFramesSent:        p.stats.dataFramesSent.Load(),
			DataFramesReceived:    p.stats.dataFramesRecv.Load(),
			DeliveredBytes:        p.stats.delivered.Load(),
			DuplicateBytes:        p.stats.dupBytes.Load(),
			OutOfGrantBytes:       p.stats.oogBytes.Load(),
			OutOfGrantFrames:      p.stats.oogFrames.Load(),
			RejectedBytes:         p.stats.rejectedBytes.Load(),
			RefusedStreams:        p.stats.refusedStreams.Load(),
			CommandsSent:          p.stats.commandsSent.Load(),
			CommandsDropped:       p.stats.commandsDropped.Load(),
			ControlFramesSent:     p.stats.ctrlFramesSent.Load(),
			ControlFramesReceived: p.stats.ctrlFramesRecv.Load(),
		}
		peak, dropped := p.out.stats()
		ps.ControlQueuePeak, ps.ControlFramesDropped = uint64(peak), dropped
		if sn.err != nil {
			ps.Err = sn.err
			ps.Stalled = sn.err.Code == PathStalled
			ps.GrantViolation = errors.Is(sn.err, ErrGrantViolation)
		}
		if s.isClient && p.id != 0 && sn.state == PathUp {
			ps.AwaitingData = p.awaiting()
		}
		if sn.report != nil {
			r := *sn.report
			ps.Reported = &r
		}
		if sn.conn != nil {
			q := sn.conn.ConnectionStats()
			ps.LocalAddr, ps.RemoteAddr = sn.conn.LocalAddr(), sn.conn.RemoteAddr()
			ps.SmoothedRTT, ps.MinRTT, ps.QUIC = q.SmoothedRTT, q.MinRTT, q
		} else if sn.report != nil {
			ps.SmoothedRTT, ps.MinRTT = sn.report.SmoothedRTT, sn.report.MinRTT
		}
		st.Paths = append(st.Paths, ps)
	}
	return st
}
