package kwik

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// This file holds the limits that keep a hostile peer from holding a
// server's resources: the session limit of a listener or secondary
// (Config.MaxSessions), the deadline of a control frame that never ends
// (Config.FrameTimeout) and the secondary's tolerance of refused
// commands (maxBadCommands). The other limits live with what they bound:
// receive windows in stream.go and session.go, stream limits in session.go,
// frame sizes in the decoders.

// sessionLimit counts the sessions (or a secondary's paths) open at once
// against Config.MaxSessions.
type sessionLimit struct {
	max int          // < 0: no limit
	n   atomic.Int64 // slots taken
}

func newSessionLimit(max int) *sessionLimit { return &sessionLimit{max: max} }

// acquire takes a slot, or returns false at the limit.
func (sl *sessionLimit) acquire() bool {
	for {
		n := sl.n.Load()
		if sl.max >= 0 && n >= int64(sl.max) {
			return false
		}
		if sl.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release returns a slot taken by acquire.
func (sl *sessionLimit) release() { sl.n.Add(-1) }

// open returns the number of slots taken.
func (sl *sessionLimit) open() int { return int(sl.n.Load()) }

// message is the reason a connection beyond the limit is closed with.
func (sl *sessionLimit) message() string {
	return fmt.Sprintf("session limit of %d reached", sl.max)
}

// refuse closes conn, which is beyond the limit, with SessionLimitError.
func (sl *sessionLimit) refuse(conn *quic.Conn, log *slog.Logger) {
	log.Warn("kwik: connection refused", "remote", conn.RemoteAddr().String(), "reason", sl.message())
	conn.CloseWithError(quic.ApplicationErrorCode(SessionLimitError), sl.message())
}

// errFrameTimeout reports a control frame that began but did not end within
// Config.FrameTimeout.
var errFrameTimeout = errors.New("control frame not completed in time")

// readControlFrameTimed reads one control frame from br, which reads ctrl:
// it waits as long as it takes for the frame's first byte, then at most
// timeout for the rest. Only a frame not yet whole in br's buffer costs a
// deadline. The caller must be ctrl's only reader and must not rely on a
// read deadline of its own across the call.
func readControlFrameTimed(ctrl *quic.Stream, br *bufio.Reader, max int, timeout time.Duration, buf []byte) (wire.Frame, []byte, error) {
	if _, err := br.Peek(1); err != nil {
		return nil, buf, err
	}
	b, _ := br.Peek(br.Buffered())
	n, ok := wire.ControlFrameLen(b)
	timed := !ok || n > uint64(len(b))
	if timed {
		ctrl.SetReadDeadline(time.Now().Add(timeout))
	}
	f, buf, err := wire.ReadControlFrame(br, max, buf)
	if timed {
		ctrl.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: %v", errFrameTimeout, timeout)
		}
	}
	return f, buf, err
}

// connError translates err into a *SessionError if it reports the end of
// the connection (so that the peer's code and reason, such as a listener's
// SessionLimitError, reach the caller), and returns it unchanged otherwise.
func connError(err error) error {
	if isConnError(err) {
		return sessionErrorFromQUIC(err)
	}
	return err
}

// headerTimeout returns the error that closes session s because reading the
// headers of a new data stream failed with err: a ProtocolViolation if
// they did not come within FrameTimeout (sourceError reports the deadline
// as errPullDeadline), otherwise err as a *SessionError.
func headerTimeout(s *Session, err error) *SessionError {
	if err == errPullDeadline {
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf(
			"data stream without its headers after %v", s.conf.FrameTimeout)}
	}
	return asSessionError(err)
}

// maxBadCommands is how many relayed commands a secondary refuses on one
// path as malformed, forged, misdirected or replayed before it closes the
// path with ProtocolViolation: an honest client relays the primary's
// commands unchanged and in order, so it never causes one. Expired
// commands (a slow relay) are refused without counting.
const maxBadCommands = 8
