package daemon

import (
	"context"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// PathStatus describes one path of the mount's session. The client-side
// fields come from the daemon's own kwik session and are always present.
// The coordinator fields (pointers) come from the primary's PATH_REPORT
// answer and are absent (null, omitted from the JSON) when the primary did
// not answer within PathReportTimeout (see Status.PathReportError) or does
// not know the path.
type PathStatus struct {
	// ID is the kwik PathID: 0 for the primary, then the secondaries.
	ID int `json:"id"`
	// Remote is the peer's address as the client dialled it.
	Remote string `json:"remote"`
	// State is the path's state on the client: pending, up, failed or
	// closed.
	State string `json:"state"`
	// Stalled: the client closed the path (State failed) because it
	// received no data for kwik's Config.PathStallTimeout after it was
	// given work.
	Stalled bool `json:"stalled,omitempty"`
	// AwaitingDataMillis is, for a secondary path that is up, how long it
	// has owed data: the age of the oldest command relayed to it since its
	// last data, in milliseconds; 0 when it owes none.
	AwaitingDataMillis float64 `json:"awaiting_data_ms,omitempty"`
	// RTTMillis is the client's smoothed RTT of the path, in milliseconds.
	RTTMillis float64 `json:"rtt_ms"`
	// BytesDelivered counts the bytes the path delivered first (accepted
	// into a stream for the first time), metadata replies included.
	BytesDelivered uint64 `json:"bytes_delivered"`
	// BytesReceived counts the payload bytes received on the path,
	// duplicates included; Duplicates the received bytes that had arrived
	// before by another path.
	BytesReceived uint64 `json:"bytes_received"`
	Duplicates    uint64 `json:"duplicate_bytes"`

	// RateBytesPerSec is the primary coordinator's estimate of the path's
	// goodput; absent also when the primary has none (a path not up).
	RateBytesPerSec *uint64 `json:"rate_bytes_per_sec,omitempty"`
	// ChunksDelivered counts the file chunks of READ replies the primary
	// credits to the path in this session (each chunk of a reply to exactly
	// one path); DataBytesDelivered their bytes.
	ChunksDelivered    *uint64 `json:"chunks_delivered,omitempty"`
	DataBytesDelivered *uint64 `json:"data_bytes_delivered,omitempty"`
	// Strikes counts the corrupt chunks the path was blamed for in this
	// session.
	Strikes *uint64 `json:"strikes,omitempty"`
	// InFlightBytes counts READ reply bytes the primary assigned to the
	// path that the client has not yet reported delivered.
	InFlightBytes *uint64 `json:"in_flight_bytes,omitempty"`
}

// PathReportTimeout bounds how long GET /status waits for the primary's
// PATH_REPORT answer before it reports the client-side fields alone.
const PathReportTimeout = 2 * time.Second

// pathStatus returns the status of every path of the client's session,
// merging the client's own statistics with the primary's PATH_REPORT
// answer, whether the client holds a live session, and why the coordinator
// fields are absent ("" when the primary answered). The primary is asked
// only while a session is live, for at most PathReportTimeout (and never
// past ctx).
func (s *statusSource) pathStatus(ctx context.Context) (paths []PathStatus, connected bool, reportErr string) {
	if _, live := s.client.SessionStats(); !live {
		return nil, false, "not connected to the primary"
	}
	ctx, cancel := context.WithTimeout(ctx, PathReportTimeout)
	defer cancel()
	reports, err := s.client.PathReport(ctx)
	if err != nil {
		reportErr = err.Error()
		reports = nil
	}
	// The session's statistics after the answer: a session that died and
	// was dialled again meanwhile is the one the primary described.
	ss, connected := s.client.SessionStats()
	return mergePaths(ss.Paths, reports), connected, reportErr
}

// mergePaths returns one PathStatus per path of the client's session, in
// its order, with the coordinator fields of the primary's record of the
// same path ID when there is one (reports may be nil).
func mergePaths(client []kwik.PathStats, reports []transfer.PathReport) []PathStatus {
	byID := make(map[kwik.PathID]*transfer.PathReport, len(reports))
	for i := range reports {
		byID[reports[i].ID] = &reports[i]
	}
	out := make([]PathStatus, 0, len(client))
	for _, p := range client {
		ps := PathStatus{
			ID:             p.ID,
			State:          p.State.String(),
			Stalled:        p.Stalled,
			RTTMillis:      float64(p.SmoothedRTT.Microseconds()) / 1000,
			BytesDelivered: p.DeliveredBytes,
			BytesReceived:  p.DataBytesReceived,
			Duplicates:     p.DuplicateBytes,
		}
		if p.AwaitingData > 0 {
			ps.AwaitingDataMillis = float64(p.AwaitingData.Microseconds()) / 1000
		}
		if p.RemoteAddr != nil {
			ps.Remote = p.RemoteAddr.String()
		} else {
			ps.Remote = p.Addr
		}
		if r := byID[kwik.PathID(p.ID)]; r != nil {
			if r.Rate > 0 {
				ps.RateBytesPerSec = ptr(r.Rate)
			}
			ps.ChunksDelivered = ptr(r.DeliveredChunks)
			ps.DataBytesDelivered = ptr(r.DeliveredBytes)
			ps.Strikes = ptr(r.Strikes)
			ps.InFlightBytes = ptr(r.InFlightBytes)
		}
		out = append(out, ps)
	}
	return out
}

func ptr[T any](v T) *T { return &v }
