package kwik

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// path is one QUIC connection of a session. Its control stream carries
// control frames; data frames travel on QUIC unidirectional streams, one per
// logical stream and direction.
//
// On a client, every path is a connection: path 0 to the primary, the others
// to secondaries. On a primary, path 0 is its connection to the client and
// the others are records of the client's secondary paths (conn nil), kept
// up to date by PATH_STATUS and REPORT frames.
type path struct {
	id   PathID
	s    *Session
	conn *quic.Conn    // nil on a primary's record, and while a client dials
	ctrl *quic.Stream  // set with conn
	cr   *bufio.Reader // reads ctrl; owned by the control reader goroutine
	out  ctrlQueue
	addr string // the peer's address (a secondary's, as the primary named it)

	// ctx is done when the path ends; for path 0 it is the session's.
	ctx    context.Context
	cancel context.CancelFunc // nil for path 0

	peerCtrlMax int // client: the secondary's MaxControlFrameSize; set with conn

	// stats are updated atomically.
	stats pathCounters
	// stall detects a stalled secondary path (client side; see stallWatch).
	stall stallWatch

	// Guarded by Session.pathMu.
	state    PathState
	err      *PathError    // why the path ended
	upSignal chan struct{} // closed when state leaves PathPending
	seq      uint64        // primary: sequence number of the last command
	report   *PathReport   // primary: the client's latest report on the path
	// client: streams that finished while this path held grants on them,
	// so that late bytes for them count as duplicates, not as out of grant.
	retired  map[StreamID]struct{}
	retiredQ []StreamID
}

type pathCounters struct {
	dataBytesSent, dataBytesRecv   atomic.Uint64
	dataFramesSent, dataFramesRecv atomic.Uint64
	dupBytes                       atomic.Uint64
	ctrlFramesSent, ctrlFramesRecv atomic.Uint64
	delivered                      atomic.Uint64 // bytes accepted into a stream for the first time
	oogBytes, oogFrames            atomic.Uint64 // secondary bytes and frames outside the grants
	rejectedBytes                  atomic.Uint64 // granted bytes refused by the receive rules
	refusedStreams                 atomic.Uint64 // secondary data streams for streams it may not write
	commandsSent                   atomic.Uint64 // primary: commands sent; client: commands relayed
	commandsDropped                atomic.Uint64 // client: commands not forwarded (see PathStats)
}

func newPath(s *Session, id PathID, conn *quic.Conn, ctrl *quic.Stream, cr *bufio.Reader) *path {
	p := &path{id: id, s: s, conn: conn, ctrl: ctrl, cr: cr, upSignal: make(chan struct{})}
	p.out.max = s.conf.MaxControlQueueBytes
	p.out.wake = make(chan struct{}, 1)
	p.out.full = make(chan struct{})
	p.stall.wake = make(chan struct{}, 1)
	return p
}

// start launches the path's goroutines, owned by the session's WaitGroup.
// A secondary path's are spawned (the session may be closing). The last
// one ends the path when its connection fails or its control queue
// overflows (the peer does not read its control stream): it acts from
// there, not from the writer, which is then blocked in a write that only
// the end of the path releases.
func (p *path) start() {
	s := p.s
	run := s.wg.Go
	if p.id != 0 {
		run = s.spawn
	}
	run(p.readControl)
	run(p.writeControl)
	run(p.acceptData)
	run(func() {
		select {
		case <-p.conn.Context().Done():
			p.connFailed(context.Cause(p.conn.Context()))
		case <-p.out.full:
			p.abort(&SessionError{Code: ControlQueueOverflow, Message: fmt.Sprintf(
				"more than %d bytes of control frames wait for the peer (MaxControlQueueBytes): it does not read its control stream", p.out.max)})
		case <-p.ctx.Done():
		}
	})
}

// abort ends the path because of e: the whole session for path 0, only the
// path for a secondary path.
func (p *path) abort(e *SessionError) {
	if p.id == 0 {
		p.s.closeWith(e)
		return
	}
	p.end(pathErrorFrom(p.id, p.addr, e))
}

// connFailed ends the path because QUIC reported err for its connection.
func (p *path) connFailed(err error) {
	p.abort(sessionErrorFromQUIC(err))
}

// readControl reads and applies control frames until the path ends.
func (p *path) readControl() {
	s := p.s
	var buf []byte
	for {
		if h := s.conf.beforeControlRead; h != nil && p.id == 0 {
			if h(p.ctx); p.ctx.Err() != nil {
				return
			}
		}
		f, nbuf, err := readControlFrameTimed(p.ctrl, p.cr, s.conf.MaxControlFrameSize, s.conf.FrameTimeout, buf)
		buf = nbuf
		if err != nil {
			if p.ctx.Err() != nil {
				return
			}
			if isConnError(err) {
				p.connFailed(err)
				return
			}
			p.abort(controlReadError(err))
			return
		}
		p.stats.ctrlFramesRecv.Add(1)
		if err := s.handleControl(p, f); err != nil {
			p.abort(asSessionError(err))
			return
		}
	}
}

// controlReadError turns a failure to read a control frame into the error
// that closes the session.
func controlReadError(err error) *SessionError {
	var se *quic.StreamError
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		return &SessionError{Code: FrameSizeError, Message: err.Error()}
	case errors.Is(err, errFrameTimeout):
		return &SessionError{Code: ProtocolViolation, Message: err.Error()}
	case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrUnknownFrame):
		return &SessionError{Code: ProtocolViolation, Message: err.Error()}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &SessionError{Code: ProtocolViolation, Message: "control stream closed by peer"}
	case errors.As(err, &se):
		return &SessionError{Code: ProtocolViolation, Message: "control stream reset by peer"}
	default:
		return &SessionError{Code: InternalError, Message: "control stream: " + err.Error(), Err: err}
	}
}

func asSessionError(err error) *SessionError {
	var se *SessionError
	if errors.As(err, &se) {
		return se
	}
	return &SessionError{Code: InternalError, Message: err.Error(), Err: err}
}

// writeControl sends queued control frames, coalescing them into one write.
// A write blocks while the peer does not read (QUIC flow control): until
// the path ends, which closes the connection.
func (p *path) writeControl() {
	var buf []byte
	for {
		select {
		case <-p.out.wake:
		case <-p.ctx.Done():
			return
		}
		var n int
		buf, n = p.out.drain(buf[:0])
		if n == 0 {
			continue
		}
		_, err := p.ctrl.Write(buf)
		p.out.wrote()
		if cap(buf) > ctrlBufKeep {
			buf = nil // a burst's buffer is not kept for the session's life
		}
		if err != nil {
			if p.ctx.Err() == nil {
				if isConnError(err) {
					p.connFailed(err)
				} else {
					p.abort(&SessionError{Code: InternalError, Message: "write control stream: " + err.Error(), Err: err})
				}
			}
			return
		}
		p.stats.ctrlFramesSent.Add(uint64(n))
	}
}

// acceptData accepts the peer's data streams and starts a reader for each.
func (p *path) acceptData() {
	s := p.s
	for {
		rs, err := p.conn.AcceptUniStream(p.ctx)
		if err != nil {
			if p.ctx.Err() == nil && isConnError(err) {
				p.connFailed(err)
			}
			return
		}
		if p.id != 0 {
			s.spawn(func() { p.readSecondaryData(rs) })
			continue
		}
		s.spawn(func() { p.readData(rs) })
	}
}

// readData reads the header of a data stream from the peer and hands the
// stream to its logical stream: as the pull source that Read reads, or, if
// the logical stream has one already or has finished, drained here in push
// mode.
func (p *path) readData(rs *quic.ReceiveStream) {
	s := p.s
	src := newSource(p, rs)
	// The headers must come within FrameTimeout (see headerTimeout); the
	// deadline is cleared before the stream is handed over.
	rs.SetReadDeadline(time.Now().Add(s.conf.FrameTimeout))
	id, err := wire.ReadStreamHeader(src.br)
	if err != nil {
		if err = src.sourceError(noEOF(err)); err != errSourceEnded {
			s.closeWith(headerTimeout(s, err))
		}
		return
	}
	src.id = StreamID(id)
	st, err := s.streamFor(src.id)
	if err != nil {
		s.closeWith(asSessionError(err))
		return
	}
	// The first frame header is checked here, so that a peer cannot slip
	// an invalid frame past a stream the application does not read.
	if err := src.header(st); err != nil {
		if err != errSourceEnded {
			s.closeWith(headerTimeout(s, err))
		}
		return
	}
	rs.SetReadDeadline(time.Time{})
	if st != nil && !st.attach(src) {
		return
	}
	src.drain(st)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ctrlQueue holds control frames waiting to be written, encoded. Window
// updates are coalesced: only the latest value per stream (and for the
// session) is sent. Other frames are bounded by bytes: those queued and
// those of the batch being written count against max, so that a peer that
// stops reading its control stream makes this side hold at most max bytes
// of them (Config.MaxControlQueueBytes). The frame that would exceed it is
// dropped and the queue fails: full is closed, which ends the path (see
// path.start), and later frames are dropped too. push never blocks, so a
// sender never waits on the writer, whatever locks it holds.
type ctrlQueue struct {
	max int // bound on the bytes held (queued plus being written); 0: none. Set at creation.

	mu       sync.Mutex // guards the fields below
	pending  []byte     // encoded frames, in push order
	nPending int        // frames in pending
	writing  int        // bytes of pushed frames drained and not yet written
	peak     int        // the most bytes held at once
	dropped  uint64     // frames dropped: beyond max, or after the queue failed
	failed   bool       // a frame was dropped; full is closed

	maxData       uint64 // 0: none pending
	maxStreams    uint64 // 0: none pending
	maxStreamData map[uint64]uint64

	wake chan struct{} // cap 1
	full chan struct{} // closed when the queue fails
}

// ctrlBufKeep is the largest control frame buffer kept for reuse after a
// write; a burst's bigger buffer is dropped.
const ctrlBufKeep = 64 << 10

// push queues f. It never blocks. If f would take the bytes held (queued,
// and being written) beyond max while some are held, f is dropped and
// counted, and the queue fails (see ctrlQueue). It reports whether f was
// queued.
func (q *ctrlQueue) push(f wire.Frame) bool {
	q.mu.Lock()
	if q.failed {
		q.dropped++
		q.mu.Unlock()
		return false
	}
	start := len(q.pending)
	q.pending = wire.AppendFrame(q.pending, f)
	held := q.writing + len(q.pending)
	if q.max > 0 && held > q.max && q.writing+start > 0 {
		q.pending = q.pending[:start]
		q.dropped++
		q.failed = true
		close(q.full)
		q.mu.Unlock()
		return false
	}
	q.nPending++
	q.peak = max(q.peak, held)
	q.mu.Unlock()
	notify(q.wake)
	return true
}

// stats returns the most bytes the queue held at once and the frames it
// dropped.
func (q *ctrlQueue) stats() (peak int, dropped uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.peak, q.dropped
}

func (q *ctrlQueue) setMaxData(v uint64) {
	q.mu.Lock()
	q.maxData = max(q.maxData, v)
	q.mu.Unlock()
	notify(q.wake)
}

func (q *ctrlQueue) setMaxStreams(v uint64) {
	q.mu.Lock()
	q.maxStreams = max(q.maxStreams, v)
	q.mu.Unlock()
	notify(q.wake)
}

func (q *ctrlQueue) setMaxStreamData(id StreamID, v uint64) {
	q.mu.Lock()
	if q.maxStreamData == nil {
		q.maxStreamData = make(map[uint64]uint64)
	}
	q.maxStreamData[uint64(id)] = max(q.maxStreamData[uint64(id)], v)
	q.mu.Unlock()
	notify(q.wake)
}

// drain appends every pending frame to b and returns it with the number of
// frames. The pushed frames among them count as being written (held)
// until wrote.
func (q *ctrlQueue) drain(b []byte) ([]byte, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	b = append(b, q.pending...)
	n := q.nPending
	q.writing = len(q.pending)
	q.pending, q.nPending = q.pending[:0], 0
	if cap(q.pending) > ctrlBufKeep {
		q.pending = nil
	}
	if q.maxData != 0 {
		b = wire.AppendFrame(b, &wire.MaxData{Max: q.maxData})
		q.maxData = 0
		n++
	}
	if q.maxStreams != 0 {
		b = wire.AppendFrame(b, &wire.MaxStreams{Max: q.maxStreams})
		q.maxStreams = 0
		n++
	}
	for id, v := range q.maxStreamData {
		b = wire.AppendFrame(b, &wire.MaxStreamData{StreamID: id, Max: v})
		delete(q.maxStreamData, id)
		n++
	}
	return b, n
}

// wrote records that the batch of the last drain has been written (or
// failed to be).
func (q *ctrlQueue) wrote() {
	q.mu.Lock()
	q.writing = 0
	q.mu.Unlock()
}
