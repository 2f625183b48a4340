package kwik

import (
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// SessionStats is a snapshot of a session's counters, one entry per path.
type SessionStats struct {
	Paths []PathStats
}

// PathStats describes one path. Data counters count payload bytes of data
// frames (not headers); received bytes include duplicates.
type PathStats struct {
	ID         int // 0 for the primary path
	LocalAddr  net.Addr
	RemoteAddr net.Addr

	SmoothedRTT time.Duration
	MinRTT      time.Duration

	DataBytesSent      uint64
	DataBytesReceived  uint64
	DataFramesSent     uint64
	DataFramesReceived uint64
	// DuplicateBytes counts received payload bytes dropped because they had
	// arrived before (or belonged to a finished stream).
	DuplicateBytes uint64

	ControlFramesSent     uint64
	ControlFramesReceived uint64

	// QUIC holds quic-go's statistics of the connection.
	QUIC quic.ConnectionStats
}

// Stats returns the session's statistics. It may be called at any time,
// also after the session closed.
func (s *Session) Stats() SessionStats {
	st := SessionStats{Paths: make([]PathStats, 0, len(s.paths))}
	for _, p := range s.paths {
		q := p.conn.ConnectionStats()
		st.Paths = append(st.Paths, PathStats{
			ID:                    p.id,
			LocalAddr:             p.conn.LocalAddr(),
			RemoteAddr:            p.conn.RemoteAddr(),
			SmoothedRTT:           q.SmoothedRTT,
			MinRTT:                q.MinRTT,
			DataBytesSent:         p.stats.dataBytesSent.Load(),
			DataBytesReceived:     p.stats.dataBytesRecv.Load(),
			DataFramesSent:        p.stats.dataFramesSent.Load(),
			DataFramesReceived:    p.stats.dataFramesRecv.Load(),
			DuplicateBytes:        p.stats.dupBytes.Load(),
			ControlFramesSent:     p.stats.ctrlFramesSent.Load(),
			ControlFramesReceived: p.stats.ctrlFramesRecv.Load(),
			QUIC:                  q,
		})
	}
	return st
}
