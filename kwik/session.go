package kwik

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// StreamID identifies a logical stream within a session. Streams opened by
// the client (the dialer) have even IDs, streams opened by the server odd
// ones.
type StreamID uint64

// Session is a kwik session: a set of paths (QUIC connections) carrying
// logical streams. Path 0 connects the client and the primary; a primary
// may add secondary paths (AddPath), which connect the client to
// secondaries and carry data for ranges the primary granted them.
//
// All methods are safe for concurrent use.
type Session struct {
	conf     *Config
	log      *slog.Logger
	isClient bool
	peer     wire.Settings // the peer's SETTINGS; immutable after setup
	maxFrame int           // largest data frame payload we send
	id       uint64        // primary: random session ID, named in tokens and commands
	keys     *clusterKeys  // primary with a SigningKey; nil otherwise

	p0 *path // path 0, to the primary; immutable

	readLat readLatency // client: waits of received frames in reassembly
	tr      *transport

	ctx      context.Context // canceled when the session closes
	cancel   context.CancelCauseFunc
	closeErr atomic.Pointer[SessionError] // set once, before ctx is canceled
	wg       sync.WaitGroup               // the session's goroutines except run
	spawnMu  sync.Mutex                   // orders spawn's wg.Add before run's wg.Wait
	done     chan struct{}                // closed when run has released everything

	mu           sync.Mutex // guards the fields below
	streams      map[StreamID]*Stream
	nextLocalID  StreamID      // ID the next OpenStreamSync uses
	openedLocal  uint64        // streams we opened, in total
	maxLocal     uint64        // streams the peer lets us open, in total (its MAX_STREAMS)
	openSignal   chan struct{} // closed and replaced when maxLocal grows
	nextPeerID   StreamID      // lowest peer-side ID not yet created
	maxPeer      uint64        // streams we let the peer open, in total (our MAX_STREAMS)
	acceptQ      []*Stream
	acceptSignal chan struct{} // cap 1: acceptQ grew
	// tracked, on a primary, holds the streams the client has not yet
	// reported complete, so that its reports reach them after they finish;
	// trackedDone lists the finished ones among them, oldest first.
	tracked     map[StreamID]*Stream
	trackedDone []StreamID

	pathMu      sync.Mutex // guards the fields below and the state fields of every path
	paths       map[PathID]*path
	endedPaths  []PathID // ended secondary paths still in paths, oldest first
	nextPathID  PathID   // primary: ID of the next AddPath
	events      []PathEvent
	eventSignal chan struct{} // cap 1: events grew
	// forgottenPackets sums the QUIC packets received on the ended paths
	// dropped from paths (see PacketsReceived).
	forgottenPackets uint64

	// stalledPaths counts the secondary paths that ended stalled
	// (SessionStats.StalledPaths); updated under pathMu, read atomically.
	stalledPaths atomic.Uint64
	// grantViolationPaths counts, on a client, the secondary paths closed
	// for writing outside their grants (SessionStats.GrantViolationPaths);
	// updated under pathMu, read atomically.
	grantViolationPaths atomic.Uint64

	repMu     sync.Mutex           // guards dirty; a leaf lock (taken after Stream.mu)
	dirty     map[*Stream]struct{} // client: streams with news for the next REPORT
	repWake   chan struct{}        // cap 1: dirty grew
	repUrgent chan struct{}        // cap 1: a stream completed; report now

	fc sync.Mutex // session flow control; leaf lock (taken after Stream.mu)
	// send side
	sendMax    uint64        // the peer's MAX_DATA
	sent       uint64        // sum over streams of bytes committed to frames
	sendSignal chan struct{} // closed and replaced when sendMax grows
	// receive side
	recvMax      uint64 // our MAX_DATA grant
	recvHighest  uint64 // sum over streams of the highest offset received
	recvConsumed uint64 // sum over streams of bytes read or discarded
}

// setupSession runs the kwik handshake on a fresh QUIC connection: the
// dialer opens the control stream, both sides send SETTINGS and read the
// peer's. On failure the connection is closed and tr released.
func setupSession(ctx context.Context, conn *quic.Conn, tr *transport, conf *Config, isClient bool) (*Session, error) {
	s, err := setupSessionImpl(ctx, conn, tr, conf, isClient)
	if err != nil {
		closeAfterSetupError(conn, err)
		tr.release()
		return nil, err
	}
	return s, nil
}

// closeAfterSetupError closes a connection whose kwik handshake failed.
func closeAfterSetupError(conn *quic.Conn, err error) {
	var se *SessionError
	if errors.As(err, &se) && !se.Remote && se.Err == nil {
		conn.CloseWithError(quic.ApplicationErrorCode(se.Code), se.Message)
	} else {
		conn.CloseWithError(quic.ApplicationErrorCode(InternalError), "handshake failed")
	}
}

// localSettings returns the SETTINGS this side announces.
func localSettings(conf *Config) *wire.Settings {
	return &wire.Settings{
		StreamWindow:        conf.StreamReceiveWindow,
		SessionWindow:       conf.SessionReceiveWindow,
		MaxStreams:          uint64(conf.MaxIncomingStreams),
		MaxDataFramePayload: uint64(conf.MaxDataFramePayload),
		MaxControlFrameSize: uint64(conf.MaxControlFrameSize),
	}
}

// writeFrames writes frames to ctrl in one write.
func writeFrames(ctrl *quic.Stream, frames ...wire.Frame) error {
	var b []byte
	for _, f := range frames {
		b = wire.AppendFrame(b, f)
	}
	_, err := ctrl.Write(b)
	return err
}

// readFirstFrame reads one control frame from br (on ctrl) within ctx and
// returns it with errors translated: a SessionError for the connection's
// or the frame's failure, ctx's error if it ended first.
func readFirstFrame(ctx context.Context, ctrl *quic.Stream, br *bufio.Reader, conf *Config, what string) (wire.Frame, error) {
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { ctrl.SetReadDeadline(time.Now()) })
	f, _, err := wire.ReadControlFrame(br, conf.MaxControlFrameSize, nil)
	if !stop() && err == nil {
		// ctx ended: the read deadline may change under us, so give up.
		err = ctx.Err()
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("kwik: read %s: %w", what, ctxErr)
		}
		if isConnError(err) {
			return nil, fmt.Errorf("kwik: read %s: %w", what, sessionErrorFromQUIC(err))
		}
		return nil, fmt.Errorf("kwik: read %s: %w", what, controlReadError(err))
	}
	ctrl.SetReadDeadline(time.Time{})
	return f, nil
}

// checkSettings checks that f is an acceptable SETTINGS frame.
func checkSettings(f wire.Frame) (*wire.Settings, error) {
	peer, ok := f.(*wire.Settings)
	if !ok {
		return nil, &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("first control frame is %v, not SETTINGS", f.Type())}
	}
	if peer.MaxDataFramePayload < minFrameLimit || peer.MaxControlFrameSize < minFrameLimit {
		return nil, &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf(
			"SETTINGS: frame limits %d/%d below %d", peer.MaxDataFramePayload, peer.MaxControlFrameSize, minFrameLimit)}
	}
	return peer, nil
}

func setupSessionImpl(ctx context.Context, conn *quic.Conn, tr *transport, conf *Config, isClient bool) (*Session, error) {
	var ctrl *quic.Stream
	var err error
	if isClient {
		ctrl, err = conn.OpenStreamSync(ctx)
	} else {
		ctrl, err = conn.AcceptStream(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("kwik: open control stream: %w", connError(err))
	}
	if err := writeFrames(ctrl, localSettings(conf)); err != nil {
		return nil, fmt.Errorf("kwik: send SETTINGS: %w", connError(err))
	}
	br := bufio.NewReaderSize(ctrl, 512)
	f, err := readFirstFrame(ctx, ctrl, br, conf, "SETTINGS")
	if err != nil {
		return nil, err
	}
	peer, err := checkSettings(f)
	if err != nil {
		return nil, err
	}

	sctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		conf:         conf,
		log:          conf.Logger.With("kwik_side", side(isClient), "remote", conn.RemoteAddr().String()),
		isClient:     isClient,
		peer:         *peer,
		maxFrame:     int(min(uint64(conf.MaxDataFramePayload), peer.MaxDataFramePayload)),
		tr:           tr,
		ctx:          sctx,
		cancel:       cancel,
		done:         make(chan struct{}),
		streams:      make(map[StreamID]*Stream),
		maxLocal:     peer.MaxStreams,
		openSignal:   make(chan struct{}),
		maxPeer:      uint64(conf.MaxIncomingStreams),
		acceptSignal: make(chan struct{}, 1),
		paths:        make(map[PathID]*path),
		nextPathID:   1,
		eventSignal:  make(chan struct{}, 1),
		repWake:      make(chan struct{}, 1),
		repUrgent:    make(chan struct{}, 1),
		sendMax:      peer.SessionWindow,
		sendSignal:   make(chan struct{}),
		recvMax:      conf.SessionReceiveWindow,
	}
	if isClient {
		s.nextLocalID, s.nextPeerID = 0, 1
		s.dirty = make(map[*Stream]struct{})
	} else {
		s.nextLocalID, s.nextPeerID = 1, 0
		s.tracked = make(map[StreamID]*Stream)
		var idb [8]byte
		rand.Read(idb[:])
		s.id = binary.BigEndian.Uint64(idb[:])
		if conf.SigningKey != nil {
			if s.keys, err = newSigningKeys(conf.SigningKey); err != nil {
				cancel(nil)
				return nil, err
			}
		}
	}
	p := newPath(s, 0, conn, ctrl, br)
	p.ctx = sctx
	p.state = PathUp
	p.addr = conn.RemoteAddr().String()
	p.stats.ctrlFramesSent.Add(1)
	p.stats.ctrlFramesRecv.Add(1)
	s.p0 = p
	p.start()
	if isClient {
		s.wg.Go(s.runReports)
	}
	go s.run()
	s.log.Debug("kwik: session established")
	return s, nil
}

func side(isClient bool) string {
	if isClient {
		return "client"
	}
	return "server"
}

// run waits for the session to close, closes its paths, waits for its
// goroutines and releases the transport.
func (s *Session) run() {
	<-s.ctx.Done()
	e := s.closeErr.Load()
	s.p0.conn.CloseWithError(quic.ApplicationErrorCode(e.Code), e.Message)
	// A path registers its connection under pathMu only while the session
	// is open, so every connection is closed here or by its dialler.
	s.pathMu.Lock()
	for _, p := range s.paths {
		if p.conn != nil {
			p.conn.CloseWithError(quic.ApplicationErrorCode(e.Code), e.Message)
		}
	}
	s.pathMu.Unlock()
	s.spawnMu.Lock() // no spawn after this: ctx is done
	s.spawnMu.Unlock()
	s.wg.Wait()
	s.tr.release()
	close(s.done)
}

// spawn runs f on a goroutine that Close waits for, unless the session is
// closing (then f does not run).
func (s *Session) spawn(f func()) {
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	s.wg.Go(f)
}

// closeWith closes the session with e unless it is already closed. It does
// not wait; it may be called from the session's own goroutines.
func (s *Session) closeWith(e *SessionError) {
	if s.closeErr.CompareAndSwap(nil, e) {
		if !e.Remote && e.Code != NoError {
			s.log.Warn("kwik: closing session", "code", e.Code, "reason", e.Message)
		} else {
			s.log.Debug("kwik: session closed", "code", e.Code, "reason", e.Message, "remote", e.Remote)
		}
		s.cancel(e)
	}
}

// closeFromConn closes the session because QUIC reported err for a path.
func (s *Session) closeFromConn(err error) {
	s.closeWith(sessionErrorFromQUIC(err))
}

// err returns the error that closed the session, or nil.
func (s *Session) err() error {
	if e := s.closeErr.Load(); e != nil {
		return e
	}
	return nil
}

// CloseWithError closes the session, telling the peer code and msg, and
// waits until the session's goroutines have stopped. Pending and later
// operations fail with a *SessionError (matching ErrClosed). It returns nil;
// closing a closed session is a no-op.
func (s *Session) CloseWithError(code ErrorCode, msg string) error {
	s.closeWith(&SessionError{Code: code, Message: msg})
	<-s.done
	return nil
}

// Close closes the session with NoError; see CloseWithError.
func (s *Session) Close() error {
	return s.CloseWithError(NoError, "")
}

// Context returns a context that is done when the session is closed. Its
// cause (context.Cause) is the *SessionError.
func (s *Session) Context() context.Context { return s.ctx }

// RemoteAddr returns the address of the peer on path 0.
func (s *Session) RemoteAddr() net.Addr { return s.p0.conn.RemoteAddr() }

// LocalAddr returns the local address of path 0.
func (s *Session) LocalAddr() net.Addr { return s.p0.conn.LocalAddr() }

func (s *Session) isLocal(id StreamID) bool { return (id%2 == 0) == s.isClient }

// OpenStreamSync opens a logical stream. It blocks while the peer's limit on
// concurrent streams is reached, until ctx is done or the session closes.
// The peer learns about the stream when its first data (or Close, or
// CancelWrite) arrives.
func (s *Session) OpenStreamSync(ctx context.Context) (*Stream, error) {
	for {
		s.mu.Lock()
		if err := s.err(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		if s.openedLocal < s.maxLocal {
			id := s.nextLocalID
			s.nextLocalID += 2
			s.openedLocal++
			st := newStream(s, id)
			s.streams[id] = st
			s.mu.Unlock()
			return st, nil
		}
		ch := s.openSignal
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
		}
	}
}

// AcceptStream returns the next logical stream the peer opened, in order of
// stream ID. It blocks until one arrives, ctx is done or the session closes.
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	for {
		s.mu.Lock()
		if len(s.acceptQ) > 0 {
			st := s.acceptQ[0]
			s.acceptQ[0] = nil
			s.acceptQ = s.acceptQ[1:]
			if len(s.acceptQ) > 0 {
				notify(s.acceptSignal)
			}
			s.mu.Unlock()
			return st, nil
		}
		if err := s.err(); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.acceptSignal:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
		}
	}
}

// streamFor returns the stream id names in a frame from the peer. A
// peer-side ID not seen before opens that stream and every lower one not yet
// opened (for AcceptStream), within our MAX_STREAMS. It returns nil, nil for
// a stream that has finished: frames for it are ignored.
func (s *Session) streamFor(id StreamID) (*Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil {
		return st, nil
	}
	if s.isLocal(id) {
		if id >= s.nextLocalID {
			return nil, &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("frame for stream %d, which we never opened", id)}
		}
		return nil, nil
	}
	if id < s.nextPeerID {
		return nil, nil
	}
	if uint64(id/2)+1 > s.maxPeer {
		return nil, &SessionError{Code: StreamLimitError, Message: fmt.Sprintf("stream %d beyond the limit of %d streams", id, s.maxPeer)}
	}
	if s.err() != nil {
		return nil, nil
	}
	var st *Stream
	for n := s.nextPeerID; n <= id; n += 2 {
		st = newStream(s, n)
		s.streams[n] = st
		s.acceptQ = append(s.acceptQ, st)
	}
	s.nextPeerID = id + 2
	notify(s.acceptSignal)
	return st, nil
}

// maxTrackedDone bounds the finished streams a primary keeps for the
// client's reports.
const maxTrackedDone = 4096

// streamFinished forgets a stream whose both directions have ended and, if
// the peer opened it, lets the peer open another. On a client, the paths
// holding grants on the stream remember it first, so that a secondary's
// late bytes for it, which find no stream, count as duplicates.
func (s *Session) streamFinished(st *Stream) {
	if s.isClient {
		s.retireGrants(st)
	}
	s.mu.Lock()
	delete(s.streams, st.id)
	if s.tracked[st.id] == st {
		// Still awaiting the client's complete report: keep it, but only
		// the latest maxTrackedDone such streams, so that a client that
		// never reports cannot make the primary hold every stream.
		s.trackedDone = append(s.trackedDone, st.id)
		if len(s.trackedDone) > maxTrackedDone {
			delete(s.tracked, s.trackedDone[0])
			s.trackedDone = s.trackedDone[1:]
		}
	}
	local := s.isLocal(st.id)
	var grant uint64
	if !local {
		s.maxPeer++
		grant = s.maxPeer
	}
	s.mu.Unlock()
	if grant != 0 {
		s.p0.out.setMaxStreams(grant)
	}
}

// reserveSend takes up to n bytes of session send credit. It returns 0 and
// a channel that is closed when more credit arrives if none is available.
// Called with the stream's mutex held.
func (s *Session) reserveSend(n uint64) (uint64, <-chan struct{}) {
	s.fc.Lock()
	defer s.fc.Unlock()
	avail := s.sendMax - s.sent
	if avail == 0 {
		return 0, s.sendSignal
	}
	n = min(n, avail)
	s.sent += n
	return n, nil
}

// chargeRecv accounts inc more bytes of highest offset received on some
// stream against our MAX_DATA. Called with the stream's mutex held.
func (s *Session) chargeRecv(inc uint64) error {
	if inc == 0 {
		return nil
	}
	s.fc.Lock()
	defer s.fc.Unlock()
	if s.recvHighest+inc > s.recvMax {
		return &SessionError{Code: FlowControlError, Message: fmt.Sprintf(
			"session receive window exceeded: %d bytes received, window ends at %d", s.recvHighest+inc, s.recvMax)}
	}
	s.recvHighest += inc
	return nil
}

// recvRoom returns how many more bytes the session window admits.
func (s *Session) recvRoom() uint64 {
	s.fc.Lock()
	defer s.fc.Unlock()
	return s.recvMax - s.recvHighest
}

// consumed returns credit for n bytes read or discarded by the receiver and
// queues MAX_DATA once half the session window is free again.
func (s *Session) consumed(n uint64) {
	if n == 0 {
		return
	}
	s.fc.Lock()
	s.recvConsumed += n
	win := s.conf.SessionReceiveWindow
	newMax := s.recvConsumed + win
	update := newMax-s.recvMax >= win/2
	if update {
		s.recvMax = newMax
	}
	s.fc.Unlock()
	if update {
		s.p0.out.setMaxData(newMax)
	}
}

// handleControl applies one control frame from path p. On a secondary path
// (client side) no frame is expected: the secondary only sends data.
func (s *Session) handleControl(p *path, f wire.Frame) error {
	if p.id != 0 {
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("unexpected control frame %v on a secondary path", f.Type())}
	}
	switch f := f.(type) {
	case *wire.AddPath:
		if s.isClient {
			return s.handleAddPath(f)
		}
	case *wire.RawData:
		if s.isClient {
			return s.relayCommand(f)
		}
	case *wire.PathStatus:
		if !s.isClient {
			return s.handlePathStatus(f)
		}
	case *wire.Report:
		if !s.isClient {
			return s.handleReport(f)
		}
	}
	switch f := f.(type) {
	case *wire.Settings:
		return &SessionError{Code: ProtocolViolation, Message: "second SETTINGS frame"}
	case *wire.MaxData:
		s.fc.Lock()
		if f.Max > s.sendMax {
			s.sendMax = f.Max
			close(s.sendSignal)
			s.sendSignal = make(chan struct{})
		}
		s.fc.Unlock()
	case *wire.MaxStreams:
		s.mu.Lock()
		if f.Max > s.maxLocal {
			s.maxLocal = f.Max
			close(s.openSignal)
			s.openSignal = make(chan struct{})
		}
		s.mu.Unlock()
	case *wire.MaxStreamData:
		st, err := s.streamFor(StreamID(f.StreamID))
		if st == nil || err != nil {
			return err
		}
		st.handleMaxStreamData(f.Max)
	case *wire.ResetStream:
		st, err := s.streamFor(StreamID(f.StreamID))
		if st == nil || err != nil {
			return err
		}
		return st.handleReset(ErrorCode(f.Code), f.FinalSize)
	case *wire.StopSending:
		st, err := s.streamFor(StreamID(f.StreamID))
		if st == nil || err != nil {
			return err
		}
		st.handleStopSending(ErrorCode(f.Code))
	default:
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("unexpected control frame %v", f.Type())}
	}
	return nil
}

// notify wakes the receiver of a capacity-1 signal channel without blocking.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
