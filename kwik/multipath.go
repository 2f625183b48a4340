package kwik

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// PathID identifies a path within a session: 0 is the client's connection
// to the primary, secondary paths count up from 1 in the order the primary
// added them.
type PathID uint64

// PathState is the state of a path.
type PathState int

// Path states. A path goes from PathPending to PathUp, then to PathFailed
// or PathClosed; or from PathPending straight to PathFailed (refused).
const (
	PathPending PathState = iota // added, the client is dialling
	PathUp                       // admitted by the secondary; carries data
	PathFailed                   // refused, or ended by an error
	PathClosed                   // ended in an orderly way (NoError)
)

var stateNames = [...]string{"pending", "up", "failed", "closed"}

func (st PathState) String() string {
	if st >= 0 && int(st) < len(stateNames) {
		return stateNames[st]
	}
	return fmt.Sprintf("PathState(%d)", int(st))
}

func (st PathState) ended() bool { return st == PathFailed || st == PathClosed }

// PathEvent reports a change of a secondary path's state: on a primary when
// the client's PATH_STATUS arrives, on a client when it happens. Err is a
// *PathError for PathFailed and PathClosed, nil otherwise.
type PathEvent struct {
	Path  PathID
	Addr  string
	State PathState
	Err   error
}

// Grant lets a secondary path write logical stream StreamID in
// [Offset, Offset+Length) (see Session.SendRawData).
type Grant struct {
	StreamID StreamID
	Offset   uint64
	Length   uint64
}

// End returns the offset just past the granted range.
func (g Grant) End() uint64 { return g.Offset + g.Length }

// Errors of the multipath API.
var (
	// ErrNotPrimary: AddPath or SendRawData on a client's session.
	ErrNotPrimary = errors.New("kwik: only a primary's session can do this")
	// ErrNoSigningKey: AddPath or SendRawData on a primary whose Config has
	// no SigningKey, or ListenSecondary without VerifyKeys.
	ErrNoSigningKey = errors.New("kwik: no signing key configured")
	// ErrPathNotUp: SendRawData to a path that is not (or no longer) up.
	ErrPathNotUp = errors.New("kwik: path is not up")
	// ErrNotReserved: a grant or a WriteAt beyond the bytes the stream has
	// committed (Write or Reserve), that is beyond what flow control allowed.
	ErrNotReserved = errors.New("kwik: range beyond the stream's reserved bytes")
	// ErrCommandTooLarge: a command whose RAW_DATA frame exceeds the client's
	// MaxControlFrameSize.
	ErrCommandTooLarge = errors.New("kwik: command too large")
	// ErrOutsideGrant: a Command write beyond the command's grant.
	ErrOutsideGrant = errors.New("kwik: write outside the command's grant")
)

// maxEndedPaths bounds the ended secondary paths a session remembers (for
// Stats); older ones are forgotten.
const maxEndedPaths = 16

// maxEvents bounds the queue of undelivered path events; beyond it the
// oldest are dropped.
const maxEvents = 256

// NextPathEvent returns the next change of a secondary path's state. It
// blocks until one happens, ctx is done or the session closes. Events are
// queued until read (at most 256; beyond that the oldest are dropped).
func (s *Session) NextPathEvent(ctx context.Context) (PathEvent, error) {
	for {
		s.pathMu.Lock()
		if len(s.events) > 0 {
			ev := s.events[0]
			s.events[0] = PathEvent{}
			s.events = s.events[1:]
			s.pathMu.Unlock()
			return ev, nil
		}
		s.pathMu.Unlock()
		if err := s.err(); err != nil {
			return PathEvent{}, err
		}
		select {
		case <-s.eventSignal:
		case <-ctx.Done():
			return PathEvent{}, ctx.Err()
		case <-s.ctx.Done():
		}
	}
}

// emitLocked queues an event. Called with pathMu held.
func (s *Session) emitLocked(p *path) {
	ev := PathEvent{Path: p.id, Addr: p.addr, State: p.state}
	if p.err != nil {
		ev.Err = p.err
	}
	if len(s.events) >= maxEvents {
		s.events = s.events[1:]
	}
	s.events = append(s.events, ev)
	notify(s.eventSignal)
}

// setStateLocked moves p to state with err (for an end) and queues the
// event. It reports false if p has ended already. Called with pathMu held.
func (s *Session) setStateLocked(p *path, state PathState, err *PathError) bool {
	if p.state.ended() || p.state == state {
		return false
	}
	if p.state == PathPending {
		close(p.upSignal)
	}
	p.state, p.err = state, err
	if state.ended() {
		s.endedPaths = append(s.endedPaths, p.id)
		for len(s.endedPaths) > maxEndedPaths {
			if old := s.paths[s.endedPaths[0]]; old.conn != nil {
				s.forgottenPackets += old.conn.ConnectionStats().PacketsReceived
			}
			delete(s.paths, s.endedPaths[0])
			s.endedPaths = s.endedPaths[1:]
		}
	}
	s.emitLocked(p)
	return true
}

// livePathsLocked counts the secondary paths pending or up.
func (s *Session) livePathsLocked() int {
	n := 0
	for _, p := range s.paths {
		if !p.state.ended() {
			n++
		}
	}
	return n
}

// AddPath, on a primary's session with a SigningKey, tells the client to
// open a path to the secondary at addr (host:port, spelled as that
// secondary's AdvertiseAddr). The client receives a token, the primary's
// signature over the session, the path, addr and an expiry
// (Config.TokenLifetime), dials addr and presents it; the secondary admits
// the path if the token verifies.
//
// AddPath returns the new path's ID as soon as it has one and blocks until
// the client reports the path up (nil error) or failed (a *PathError, which
// matches the refusal's sentinel, such as ErrTokenExpired), ctx is done or
// the session closes. If ctx ends first the path stays pending: its outcome
// arrives as a PathEvent. Later changes arrive as PathEvents too.
func (s *Session) AddPath(ctx context.Context, addr string) (PathID, error) {
	return s.AddPathAs(ctx, addr, "")
}

// AddPathAs is AddPath for a secondary whose certificate the client must
// verify for serverName, a DNS name or IP address that may differ from
// the host of addr (one certificate per server: a secondary's certificate
// then names it alone). An empty serverName is AddPath's rule: the host of
// addr, or the client's Config.TLSConfig.ServerName when it set one.
func (s *Session) AddPathAs(ctx context.Context, addr, serverName string) (PathID, error) {
	if s.isClient {
		return 0, ErrNotPrimary
	}
	if s.keys == nil {
		return 0, ErrNoSigningKey
	}
	if addr == "" || len(addr) > wire.MaxAddrLen {
		return 0, fmt.Errorf("kwik: AddPath: address of %d bytes (1 to %d)", len(addr), wire.MaxAddrLen)
	}
	if len(serverName) > wire.MaxServerNameLen {
		return 0, fmt.Errorf("kwik: AddPath: server name of %d bytes (at most %d)", len(serverName), wire.MaxServerNameLen)
	}
	if err := s.err(); err != nil {
		return 0, err
	}
	s.pathMu.Lock()
	id := s.nextPathID
	s.nextPathID++
	p := newPath(s, id, nil, nil, nil)
	p.addr = addr
	s.paths[id] = p
	token := s.keys.issueToken(s.id, id, addr, s.conf.now().Add(s.conf.TokenLifetime))
	// Pushed under pathMu, so that path IDs reach the client in order.
	s.p0.out.push(&wire.AddPath{PathID: uint64(id), Addr: addr, Token: token, ServerName: serverName})
	s.pathMu.Unlock()
	s.log.Debug("kwik: adding path", "path", id, "addr", addr)

	select {
	case <-p.upSignal:
	case <-ctx.Done():
		return id, ctx.Err()
	case <-s.ctx.Done():
		return id, s.err()
	}
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	if p.err != nil {
		return id, p.err
	}
	return id, nil
}

// handlePathStatus applies the client's PATH_STATUS on a primary.
func (s *Session) handlePathStatus(f *wire.PathStatus) error {
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	p := s.paths[PathID(f.PathID)]
	if p == nil {
		if PathID(f.PathID) < s.nextPathID {
			return nil // an ended path, forgotten
		}
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("PATH_STATUS for path %d, which was never added", f.PathID)}
	}
	switch f.State {
	case wire.PathStateUp:
		if p.state != PathPending {
			return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("PATH_STATUS up for path %d, which is %v", f.PathID, p.state)}
		}
		s.setStateLocked(p, PathUp, nil)
		s.log.Debug("kwik: path up", "path", p.id, "addr", p.addr)
	default:
		pe := &PathError{Path: p.id, Addr: p.addr, Code: ErrorCode(f.Code), Message: f.Reason, Remote: true}
		switch pe.Code {
		case PathRefused:
			pe.Err = refusalByText(f.Reason)
		case PathStalled:
			pe.Err = ErrPathStalled
		}
		state := PathFailed
		if f.State == wire.PathStateClosed {
			state = PathClosed
		}
		if pe.Code == PathStalled && !p.state.ended() {
			s.stalledPaths.Add(1)
		}
		if s.setStateLocked(p, state, pe) {
			s.log.Info("kwik: path ended", "path", p.id, "addr", p.addr, "state", state, "reason", f.Reason)
		}
	}
	return nil
}

// SendRawData, on a primary's session with a SigningKey, relays payload, an
// opaque command, through the client to the secondary of path, with a write
// grant: that secondary may write grant.StreamID in [grant.Offset,
// grant.End()). The command is signed with the primary's SigningKey and
// carries a per-path sequence number and an expiry (Config.TokenLifetime),
// so that the client can neither forge, alter nor replay it; the client
// reads the grant (in clear) and records it before forwarding.
//
// The granted range must lie within the bytes the stream has committed by
// Write or Reserve (ErrNotReserved otherwise), so that a grant never
// exceeds the client's windows. Granting a range that another path also
// sends (hedging) is allowed: the client keeps the first copy and counts
// the other as duplicate bytes.
//
// SendRawData does not block: the command is queued on path 0. It fails with
// ErrPathNotUp unless the client has reported path up, and with
// ErrCommandTooLarge if the frame exceeds the client's MaxControlFrameSize.
// The secondary receives the command from AcceptCommand.
func (s *Session) SendRawData(path PathID, grant Grant, payload []byte) error {
	if s.isClient {
		return ErrNotPrimary
	}
	if s.keys == nil {
		return ErrNoSigningKey
	}
	if err := s.err(); err != nil {
		return err
	}
	if grant.Length == 0 || grant.Offset > wire.MaxVarint-grant.Length {
		return fmt.Errorf("kwik: SendRawData: grant [%d, +%d) is empty or beyond 2^62", grant.Offset, grant.Length)
	}
	st := s.streamForGrant(grant.StreamID)
	if st == nil {
		return fmt.Errorf("kwik: SendRawData: stream %d is not open", grant.StreamID)
	}
	st.mu.Lock()
	committed, sendErr := st.sendOff, st.sendErr
	st.mu.Unlock()
	if sendErr != nil {
		return sendErr
	}
	if grant.End() > committed {
		return fmt.Errorf("kwik: SendRawData: grant up to %d, stream %d committed %d: %w", grant.End(), grant.StreamID, committed, ErrNotReserved)
	}

	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	p := s.paths[path]
	if p == nil || p.state != PathUp {
		state := "unknown"
		if p != nil {
			state = p.state.String()
		}
		return fmt.Errorf("kwik: SendRawData to path %d (%s): %w", path, state, ErrPathNotUp)
	}
	c := &wire.Command{
		SessionID: s.id,
		PathID:    uint64(path),
		Seq:       p.seq + 1,
		Expiry:    unixMilli(s.conf.now().Add(s.conf.TokenLifetime)),
		Grant:     wire.Grant{StreamID: uint64(grant.StreamID), Offset: grant.Offset, Length: grant.Length},
		Payload:   payload,
	}
	f := &wire.RawData{PathID: uint64(path), Command: s.keys.signCommand(c)}
	if n := len(wire.AppendFrame(nil, f)) - 2; n > int(s.peer.MaxControlFrameSize) {
		return fmt.Errorf("kwik: SendRawData: frame of about %d bytes, the client accepts %d: %w", n, s.peer.MaxControlFrameSize, ErrCommandTooLarge)
	}
	p.seq++
	// Pushed under pathMu, so that commands leave in sequence order.
	s.p0.out.push(f)
	p.stats.commandsSent.Add(1)
	return nil
}

// streamForGrant returns the open or still tracked stream id, or nil.
func (s *Session) streamForGrant(id StreamID) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		return st
	}
	return s.tracked[id]
}

// PathReport is what the client last reported about one path, as the
// primary sees it in PathStats.Reported. Byte counts are payload bytes of
// data frames, cumulative since the path was opened.
type PathReport struct {
	At time.Time // when the report arrived (primary's clock)

	DeliveredBytes   uint64 // accepted into a stream for the first time
	ReceivedBytes    uint64 // received, duplicates and dropped bytes included
	ReceivedFrames   uint64
	DuplicateBytes   uint64
	OutOfGrantBytes  uint64 // dropped: outside the path's grants
	OutOfGrantFrames uint64
	RefusedStreams   uint64 // data streams for streams the path may not write

	SmoothedRTT time.Duration // the client's RTT estimates for the path
	MinRTT      time.Duration

	// DeliveryRate is an estimate of the path's goodput in bytes per
	// second: a moving average (gain 1/4) of DeliveredBytes' growth between
	// reports, over the reports where it grew. Reports arrive every
	// ReportInterval while data flows, so it underestimates a path that was
	// idle for part of an interval.
	DeliveryRate float64
}

// updateReport applies one path entry of a REPORT arriving at now.
// Called with pathMu held.
func (p *path) updateReport(r *wire.PathReport, now time.Time) {
	prev := p.report
	n := &PathReport{
		At:               now,
		DeliveredBytes:   r.Delivered,
		ReceivedBytes:    r.Received,
		ReceivedFrames:   r.Frames,
		DuplicateBytes:   r.Duplicate,
		OutOfGrantBytes:  r.OutOfGrant,
		OutOfGrantFrames: r.OutOfGrantFrames,
		RefusedStreams:   r.RefusedStreams,
		SmoothedRTT:      time.Duration(min(r.SmoothedRTTMicro, 1<<40)) * time.Microsecond,
		MinRTT:           time.Duration(min(r.MinRTTMicro, 1<<40)) * time.Microsecond,
	}
	if prev != nil {
		n.DeliveryRate = prev.DeliveryRate
		if dt := now.Sub(prev.At).Seconds(); dt > 0 && r.Delivered > prev.DeliveredBytes {
			sample := float64(r.Delivered-prev.DeliveredBytes) / dt
			if n.DeliveryRate == 0 {
				n.DeliveryRate = sample
			} else {
				n.DeliveryRate += (sample - n.DeliveryRate) / 4
			}
		}
	}
	p.report = n
}
