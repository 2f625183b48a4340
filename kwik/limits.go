package kwik

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// This file holds the limits that keep a hostile peer from holding a
// server's resources: the session limits of a listener or secondary
// (Config.MaxSessions, MaxSessionsPerSource, MaxSetupsPerSource), the deadline of a control frame that never ends
// (Config.FrameTimeout) and the secondary's tolerance of refused
// commands (maxBadCommands). The control queue's bound (ctrlQueue,
// Config.MaxControlQueueBytes) lives in path.go, and the client's bounds on
// a secondary's data outside its grants (maxOutOfGrantBytes and the
// others) in client_path.go. The other limits live with what they bound:
// receive windows in stream.go and session.go, stream limits in session.go,
// frame sizes in the decoders.

// sessionLimit counts the sessions (or a secondary's paths) open at once,
// in all and per source IP address, and among them those still in setup
// (the QUIC handshake done, the kwik one not yet) per source address:
// Config.MaxSessions, MaxSessionsPerSource and MaxSetupsPerSource. So one
// host cannot take every slot, nor every pending setup.
type sessionLimit struct {
	max, perSource, setupsPerSource int // < 0: no limit

	mu       sync.Mutex // guards n and bySource
	n        int
	bySource map[netip.Addr]*sourceSlots

	refused refusalCounters
}

// Refusals counts the connections a Listener or Secondary refused or lost
// before they became sessions (paths), by reason. A connection is counted
// once, for the first reason that ended it.
type Refusals struct {
	// SessionLimit, SourceSessionLimit and SourceSetupLimit count
	// connections closed at once with SessionLimitError at
	// Config.MaxSessions, MaxSessionsPerSource and MaxSetupsPerSource.
	SessionLimit, SourceSessionLimit, SourceSetupLimit uint64
	// SetupTimeouts counts connections closed because kwik's handshake
	// did not end within Config.SetupTimeout; SetupFailures those whose
	// kwik handshake failed otherwise (a malformed SETTINGS, the
	// connection lost). A secondary counts the paths it refused for their
	// token in SecondaryStats instead.
	SetupTimeouts, SetupFailures uint64
	// ClientCertificates counts TLS handshakes this side ended over the
	// client's certificate: none presented while the TLSConfig requires
	// one, or one it does not accept (see RequireClientCertificates).
	ClientCertificates uint64
}

// refusalCounters are the atomics behind Refusals.
type refusalCounters struct {
	sessionLimit, sourceSessions, sourceSetups atomic.Uint64
	setupTimeouts, setupFailures, clientCerts  atomic.Uint64
}

func (c *refusalCounters) snapshot() Refusals {
	return Refusals{
		SessionLimit:       c.sessionLimit.Load(),
		SourceSessionLimit: c.sourceSessions.Load(),
		SourceSetupLimit:   c.sourceSetups.Load(),
		SetupTimeouts:      c.setupTimeouts.Load(),
		SetupFailures:      c.setupFailures.Load(),
		ClientCertificates: c.clientCerts.Load(),
	}
}

// setupFailed counts a connection whose kwik handshake failed with err:
// a timeout if err reports a deadline passing (that of
// Config.SetupTimeout), a failure otherwise.
func (c *refusalCounters) setupFailed(err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		c.setupTimeouts.Add(1)
	} else {
		c.setupFailures.Add(1)
	}
}

// countCertificateRefusals makes tr count, in c, the connections it
// accepts that end in a TLS alert this side sent about the client's
// certificate (see isCertificateRefusal). It must be called before tr
// listens.
func (c *refusalCounters) countCertificateRefusals(tr *quic.Transport) {
	tr.ConnContext = func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
		context.AfterFunc(ctx, func() {
			if isCertificateRefusal(context.Cause(ctx)) {
				c.clientCerts.Add(1)
			}
		})
		return ctx, nil
	}
}

// isCertificateRefusal reports whether err, the end of a connection, is a
// TLS alert this side sent about the peer's certificate.
func isCertificateRefusal(err error) bool {
	var trErr *quic.TransportError
	if !errors.As(err, &trErr) || trErr.Remote || !trErr.ErrorCode.IsCryptoError() {
		return false
	}
	switch uint8(trErr.ErrorCode) {
	case alertCertificateRequired, alertUnknownCA, alertCertificateExpired, alertBadCertificate,
		alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateUnknown:
		return true
	}
	return false
}

// sourceSlots are the slots one source address holds.
type sourceSlots struct {
	open  int // sessions of the source, in setup or set up
	setup int // of which in setup
}

func newSessionLimit(c *Config) *sessionLimit {
	return &sessionLimit{
		max: c.MaxSessions, perSource: c.MaxSessionsPerSource, setupsPerSource: c.MaxSetupsPerSource,
		bySource: make(map[netip.Addr]*sourceSlots),
	}
}

// sourceOf returns the IP address conn comes from (IPv4 unmapped).
func sourceOf(conn *quic.Conn) netip.Addr {
	if ua, ok := conn.RemoteAddr().(*net.UDPAddr); ok {
		return ua.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// acquire takes a slot, in setup, for a connection from src. It returns
// "" or, at a limit, the reason the connection is refused (and counts the
// refusal).
func (sl *sessionLimit) acquire(src netip.Addr) string {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	ss := sl.bySource[src]
	if ss == nil {
		ss = &sourceSlots{}
	}
	switch {
	case sl.max >= 0 && sl.n >= sl.max:
		sl.refused.sessionLimit.Add(1)
		return fmt.Sprintf("session limit of %d reached", sl.max)
	case sl.perSource >= 0 && ss.open >= sl.perSource:
		sl.refused.sourceSessions.Add(1)
		return fmt.Sprintf("limit of %d sessions per source address reached", sl.perSource)
	case sl.setupsPerSource >= 0 && ss.setup >= sl.setupsPerSource:
		sl.refused.sourceSetups.Add(1)
		return fmt.Sprintf("limit of %d handshakes per source address reached", sl.setupsPerSource)
	}
	sl.n++
	ss.open++
	ss.setup++
	sl.bySource[src] = ss
	return ""
}

// setupDone ends the setup of a connection from src that holds a slot,
// whatever its outcome.
func (sl *sessionLimit) setupDone(src netip.Addr) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if ss := sl.bySource[src]; ss != nil && ss.setup > 0 {
		ss.setup--
	}
}

// release returns the slot of a connection from src taken by acquire;
// setupDone must have been called for it.
func (sl *sessionLimit) release(src netip.Addr) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.n--
	if ss := sl.bySource[src]; ss != nil {
		if ss.open--; ss.open <= 0 {
			delete(sl.bySource, src)
		}
	}
}

// open returns the number of slots taken.
func (sl *sessionLimit) open() int {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.n
}

// refuse closes conn, which is beyond a limit, with SessionLimitError and
// reason as the message.
func (sl *sessionLimit) refuse(conn *quic.Conn, reason string, log *slog.Logger) {
	log.Warn("kwik: connection refused", "remote", conn.RemoteAddr().String(), "reason", reason)
	conn.CloseWithError(quic.ApplicationErrorCode(SessionLimitError), reason)
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
