package kwik

import (
	"bufio"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// path is one QUIC connection of a session. Its control stream carries
// control frames; data frames travel on QUIC unidirectional streams, one per
// logical stream and direction.
type path struct {
	id   int
	s    *Session
	conn *quic.Conn
	ctrl *quic.Stream
	cr   *bufio.Reader // reads ctrl; owned by the control reader goroutine
	out  ctrlQueue
	// stats are updated atomically.
	stats pathCounters
}

type pathCounters struct {
	dataBytesSent, dataBytesRecv   atomic.Uint64
	dataFramesSent, dataFramesRecv atomic.Uint64
	dupBytes                       atomic.Uint64
	ctrlFramesSent, ctrlFramesRecv atomic.Uint64
}

func newPath(s *Session, id int, conn *quic.Conn, ctrl *quic.Stream, cr *bufio.Reader) *path {
	p := &path{id: id, s: s, conn: conn, ctrl: ctrl, cr: cr}
	p.out.wake = make(chan struct{}, 1)
	return p
}

// start launches the path's goroutines, owned by the session's WaitGroup.
func (p *path) start() {
	s := p.s
	s.wg.Go(p.readControl)
	s.wg.Go(p.writeControl)
	s.wg.Go(p.acceptData)
	s.wg.Go(func() {
		select {
		case <-p.conn.Context().Done():
			s.closeFromConn(context.Cause(p.conn.Context()))
		case <-s.ctx.Done():
		}
	})
}

// readControl reads and applies control frames until the session ends.
func (p *path) readControl() {
	s := p.s
	var buf []byte
	for {
		f, nbuf, err := wire.ReadControlFrame(p.cr, s.conf.MaxControlFrameSize, buf)
		buf = nbuf
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if isConnError(err) {
				s.closeFromConn(err)
				return
			}
			s.closeWith(controlReadError(err))
			return
		}
		p.stats.ctrlFramesRecv.Add(1)
		if err := s.handleControl(p, f); err != nil {
			s.closeWith(asSessionError(err))
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
func (p *path) writeControl() {
	s := p.s
	var buf []byte
	for {
		select {
		case <-p.out.wake:
		case <-s.ctx.Done():
			return
		}
		var n int
		buf, n = p.out.drain(buf[:0])
		if n == 0 {
			continue
		}
		if _, err := p.ctrl.Write(buf); err != nil {
			if s.ctx.Err() == nil {
				if isConnError(err) {
					s.closeFromConn(err)
				} else {
					s.closeWith(&SessionError{Code: InternalError, Message: "write control stream: " + err.Error(), Err: err})
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
		rs, err := p.conn.AcceptUniStream(s.ctx)
		if err != nil {
			if s.ctx.Err() == nil && isConnError(err) {
				s.closeFromConn(err)
			}
			return
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
	id, err := wire.ReadStreamHeader(src.br)
	if err != nil {
		if err = src.sourceError(noEOF(err)); err != errSourceEnded {
			s.closeWith(asSessionError(err))
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
			s.closeWith(asSessionError(err))
		}
		return
	}
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

// ctrlQueue holds control frames waiting to be written. Window updates are
// coalesced: only the latest value per stream (and for the session) is sent.
type ctrlQueue struct {
	mu            sync.Mutex // guards the fields below
	frames        []wire.Frame
	maxData       uint64 // 0: none pending
	maxStreams    uint64 // 0: none pending
	maxStreamData map[uint64]uint64

	wake chan struct{} // cap 1
}

func (q *ctrlQueue) push(f wire.Frame) {
	q.mu.Lock()
	q.frames = append(q.frames, f)
	q.mu.Unlock()
	notify(q.wake)
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
// frames.
func (q *ctrlQueue) drain(b []byte) ([]byte, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for i, f := range q.frames {
		b = wire.AppendFrame(b, f)
		q.frames[i] = nil
		n++
	}
	q.frames = q.frames[:0]
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
