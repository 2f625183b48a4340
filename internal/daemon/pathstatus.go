package daemon

import (
	"context"
	"time"

	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// PathReportTimeout bounds how long GET /status waits for the primary's
// PATH_REPORT answer before it reports the client-side fields alone.
const PathReportTimeout = 2 * time.Second

// pathStatus returns the status of every path of the client's session,
// merging the client's own statistics with the primary's PATH_REPORT
// answer, whether the client holds a live session, and why the coordinator
// fields are absent ("" when the primary answered). The primary is asked
// only while a session is live, for at most PathReportTimeout (and never
// past ctx).
func (s *statusSource) pathStatus(ctx context.Context) (paths []control.Path, connected bool, reportErr string) {
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

// mergePaths returns one control.Path per path of the client's session, in
// its order, with the coordinator fields of the primary's record of the
// same path ID when there is one (reports may be nil).
func mergePaths(client []kwik.PathStats, reports []transfer.PathReport) []control.Path {
	byID := make(map[kwik.PathID]*transfer.PathReport, len(reports))
	for i := range reports {
		byID[reports[i].ID] = &reports[i]
	}
	out := make([]control.Path, 0, len(client))
	for _, p := range client {
		ps := control.Path{
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
