package kwik

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/reassembly"
	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// smallWrite is the payload size up to which a frame's header and payload
// are written to QUIC in one call (QUIC copies such small writes anyway).
const smallWrite = 1 << 10

// Stream is a bidirectional logical stream. Read and Write may be used from
// two goroutines at once; Write and Close must not be called concurrently
// with each other, nor Read with Read. Reserve and WriteAt (a primary's
// tools for delegating ranges to secondaries) may be called from any
// goroutine: they take turns with Write.
//
// A stream is finished, and a peer-opened stream's slot returned to the
// peer, once both directions have ended: the write side by Close or
// CancelWrite (or the peer's CancelRead), the read side by a Read that
// returns io.EOF, by CancelRead or by the peer's CancelWrite. As with QUIC,
// an application that knows how much to read must still read to io.EOF (or
// call CancelRead) to release the stream.
type Stream struct {
	s  *Session
	id StreamID

	writeMu  sync.Mutex // serializes Write and Close; held while writing to QUIC
	hdrSent  bool       // the data stream header is written; guarded by writeMu
	hdr      [wire.MaxStreamHeaderLen + wire.MaxDataHeaderLen]byte
	smallBuf []byte // header plus small payload; guarded by writeMu

	mu sync.Mutex // guards the fields below

	// Receive side.
	recv         reassembly.Buffer
	recvGranted  uint64        // our MAX_STREAM_DATA, equal to recv.Limit()
	credited     uint64        // bytes of this stream returned to the session window
	readErr      error         // set by the peer's reset or by CancelRead
	discarding   bool          // after a reset or CancelRead: data is counted, not kept
	recvDone     bool          // the receive side has ended
	readSignal   chan struct{} // cap 1: data, EOF, error, source or deadline change
	readDeadline time.Time
	src          *source       // the pull source, read by Read (see source)
	pushMode     bool          // sources are drained by goroutines; never reverts
	pulling      bool          // Read is reading src
	pullDone     chan struct{} // cap 1: pulling became false in push mode
	arrivals     []arrival     // frames in the reassembly buffer, by end offset

	// Send side.
	sendOff       uint64           // bytes committed to frames
	sendMax       uint64           // the peer's MAX_STREAM_DATA
	sendErr       error            // set by CancelWrite or the peer's STOP_SENDING
	closed        bool             // Close was called
	sendDone      bool             // FIN written or RESET sent
	uni           *quic.SendStream // data stream on path 0, opened by the first write
	writeSignal   chan struct{}    // cap 1: credit, error or deadline change
	writeDeadline time.Time

	finished bool // both sides ended; the session forgot the stream

	// Multipath, receive side (client).
	grants   map[PathID]*rangeSet // what each secondary path may write
	byPath   []wire.PathBytes     // bytes first delivered by each path
	repDirty bool                 // queued for the next REPORT
	repDone  bool                 // reported complete; never reported again

	// Multipath, send side (primary).
	dlv       Delivery      // the client's latest report
	dlvSignal chan struct{} // closed when dlv changes; nil until waited on
}

func newStream(s *Session, id StreamID) *Stream {
	st := &Stream{
		s:           s,
		id:          id,
		recvGranted: s.conf.StreamReceiveWindow,
		sendMax:     s.peer.StreamWindow,
		readSignal:  make(chan struct{}, 1),
		pullDone:    make(chan struct{}, 1),
		writeSignal: make(chan struct{}, 1),
	}
	st.recv.SetLimit(st.recvGranted)
	if !s.isClient {
		s.tracked[id] = st // newStream runs with s.mu held
	}
	return st
}

// StreamID returns the stream's ID.
func (st *Stream) StreamID() StreamID { return st.id }

// Read reads contiguous bytes of the stream. It blocks until some arrive,
// and returns io.EOF after the last byte. It fails with a *StreamError after
// the peer's CancelWrite or a local CancelRead, with a *SessionError when
// the session closes, and with an error matching os.ErrDeadlineExceeded
// when the read deadline passes.
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	for {
		if st.readErr != nil {
			err := st.readErr
			st.mu.Unlock()
			return 0, err
		}
		if st.recv.Readable() {
			if len(p) == 0 {
				st.mu.Unlock()
				return 0, nil
			}
			n := st.recv.Read(p)
			if len(st.arrivals) > 0 {
				st.countReadLocked(time.Now())
			}
			st.afterReadLocked() // unlocks
			return n, nil
		}
		if st.recv.Done() {
			st.mu.Unlock()
			return 0, io.EOF
		}
		if err := st.s.err(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			st.mu.Unlock()
			return 0, nil
		}
		dl := st.readDeadline
		if !dl.IsZero() && !time.Now().Before(dl) {
			st.mu.Unlock()
			return 0, errDeadline
		}
		if src := st.src; src != nil && !st.pushMode {
			st.pulling = true
			if !dl.Equal(src.deadline) {
				src.rs.SetReadDeadline(dl)
				src.deadline = dl
			}
			st.mu.Unlock()
			n, err := st.pull(src, p)
			st.mu.Lock()
			st.pulling = false
			if st.pushMode {
				notify(st.pullDone)
			}
			if n > 0 {
				st.mu.Unlock()
				return n, nil
			}
			var se *SessionError
			switch {
			case err == nil:
			case err == errSourceEnded:
				if st.src == src {
					st.src = nil
				}
			case err == errPullDeadline:
				if !st.pushMode { // not a kick: the caller's deadline passed
					st.mu.Unlock()
					return 0, errDeadline
				}
			case errors.As(err, &se):
				st.s.closeWith(se)
			}
			continue
		}
		st.mu.Unlock()
		st.wait(st.readSignal, nil, nil, dl)
		st.mu.Lock()
	}
}

// pull reads src, the stream's only source, on the caller's goroutine. Bytes
// of a frame that continue the stream at the read offset go straight into p
// (n > 0); anything else (a bare FIN, out-of-order data) is applied to the
// reassembly buffer and pull returns 0 with a nil error, for Read to look
// again.
func (st *Stream) pull(src *source, p []byte) (int, error) {
	if err := src.header(st); err != nil || !src.inFrame {
		return 0, err
	}
	n, err := src.br.Read(p[:min(uint64(len(p)), src.rest)])
	if n == 0 {
		return 0, src.sourceError(noEOF(err))
	}
	direct, err := st.delivered(src, p[:n])
	if err != nil {
		return 0, err
	}
	src.consumed(n)
	if !direct {
		return 0, nil
	}
	return n, nil
}

// delivered accounts data that pull read from src into the caller's buffer.
// If it continues the stream at the read offset, it stays there (direct);
// otherwise it is pushed into the reassembly buffer like any other piece.
func (st *Stream) delivered(src *source, data []byte) (direct bool, err error) {
	fin := src.fin && uint64(len(data)) == src.rest
	st.mu.Lock()
	if src.off != st.recv.ReadOffset() || st.discarding {
		st.mu.Unlock()
		return false, st.push(src.p, src.off, data, fin, nil)
	}
	var inc uint64
	if end := src.off + uint64(len(data)); end > st.recv.Highest() {
		inc = end - st.recv.Highest()
	}
	if err := st.s.chargeRecv(inc); err != nil {
		st.mu.Unlock()
		return false, st.s.dataViolation(src.p, st.id, errSessionWindow)
	}
	dup, err := st.recv.Advance(src.off, len(data), fin)
	if err != nil {
		st.mu.Unlock()
		return false, st.s.dataViolation(src.p, st.id, err)
	}
	if dup > 0 {
		src.p.stats.dupBytes.Add(uint64(dup))
	}
	src.p.stats.delivered.Add(uint64(len(data) - dup))
	st.noteRecvLocked(src.p.id, uint64(len(data)-dup))
	st.afterReadLocked()
	return true, nil
}

// afterReadLocked follows the application's consumption of stream data: it
// grants more stream credit once half the window is free, returns session
// credit and finishes the receive side at the end. It unlocks st.mu.
func (st *Stream) afterReadLocked() {
	var grant uint64
	if _, fin := st.recv.FinalSize(); !fin && !st.discarding {
		win := st.s.conf.StreamReceiveWindow
		if next := st.recv.ReadOffset() + win; next-st.recvGranted >= win/2 {
			st.recvGranted = next
			st.recv.SetLimit(next)
			grant = next
		}
	}
	credit := st.settleLocked()
	finished := st.checkRecvLocked()
	st.mu.Unlock()
	st.s.consumed(credit)
	if grant != 0 {
		st.s.p0.out.setMaxStreamData(st.id, grant)
	}
	if finished {
		st.s.streamFinished(st)
	}
}

// errPullDeadline reports that a pull read hit the QUIC stream's deadline:
// the caller's, or a kick from toPushLocked.
var errPullDeadline = errors.New("kwik: pull deadline")

// attach adds src, a new data stream from the peer, to the stream. It
// returns true if the caller must drain src in push mode; otherwise src
// becomes the stream's pull source.
func (st *Stream) attach(src *source) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.pushMode && st.src == nil && !st.discarding && !st.recvDone {
		st.src = src
		notify(st.readSignal)
		return false
	}
	st.toPushLocked()
	return true
}

// toPushLocked switches the stream to push mode for good: a pull source is
// handed to a goroutine that drains it into the buffer, after interrupting
// a Read that is pulling from it. Called when a second source arrives and
// when the receive side ends or discards, so that every QUIC stream is read
// to its end.
func (st *Stream) toPushLocked() {
	if st.pushMode {
		return
	}
	st.pushMode = true
	src := st.src
	st.src = nil
	if src == nil {
		return
	}
	if st.pulling {
		src.rs.SetReadDeadline(time.Unix(1, 0)) // kick the pulling Read
	}
	st.s.spawn(func() {
		st.mu.Lock()
		for st.pulling {
			st.mu.Unlock()
			select {
			case <-st.pullDone:
			case <-st.s.ctx.Done():
				return
			}
			st.mu.Lock()
		}
		st.mu.Unlock()
		src.drain(st)
	})
}

// wait blocks until sig, more or cancel fires, the session closes or dl
// passes.
func (st *Stream) wait(sig chan struct{}, more, cancel <-chan struct{}, dl time.Time) {
	var timeout <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-sig:
	case <-more:
	case <-cancel:
	case <-timeout:
	case <-st.s.ctx.Done():
	}
}

// settleLocked moves this stream's contribution to the session's consumed
// bytes up to date and returns the increase: bytes read, or, once the stream
// discards, every byte received.
func (st *Stream) settleLocked() uint64 {
	target := st.recv.ReadOffset()
	if st.discarding {
		target = st.recv.Highest()
	}
	if target <= st.credited {
		return 0
	}
	d := target - st.credited
	st.credited = target
	return d
}

// checkRecvLocked marks the receive side ended once the final size is known
// and everything is read or discarded, and reports whether the whole stream
// has just finished.
func (st *Stream) checkRecvLocked() bool {
	if !st.recvDone {
		if _, fin := st.recv.FinalSize(); fin && (st.discarding || st.recv.Done()) {
			st.recvDone = true
			st.toPushLocked() // read the rest of any pull source
		}
	}
	return st.finishLocked()
}

func (st *Stream) finishLocked() bool {
	if st.finished || !st.recvDone || !st.sendDone {
		return false
	}
	st.finished = true
	return true
}

// admit checks a data frame header from path p before its payload is read.
func (st *Stream) admit(p *path, h wire.DataHeader) error {
	st.mu.Lock()
	err := st.recv.Check(h.Offset, h.Length, h.Fin)
	var inc uint64
	if end := h.End(); end > st.recv.Highest() {
		inc = end - st.recv.Highest()
	}
	st.mu.Unlock()
	if err == nil && inc > st.s.recvRoom() {
		err = errSessionWindow
	}
	if err != nil {
		return st.s.dataViolation(p, st.id, err)
	}
	return nil
}

var errSessionWindow = errors.New("data beyond the session receive window")

// dataViolation decides the fate of data from path p that breaks the
// receive rules (window, final size, fragmentation), and is the one place to
// do so for path 0, the primary's: it closes the session. Secondaries'
// data never reaches it: pushGranted drops and counts whatever of theirs
// breaks a rule or lies outside their grants.
func (s *Session) dataViolation(p *path, id StreamID, err error) *SessionError {
	code := ProtocolViolation
	switch {
	case errors.Is(err, reassembly.ErrWindow), errors.Is(err, errSessionWindow), errors.Is(err, reassembly.ErrTooFragmented):
		code = FlowControlError
	case errors.Is(err, reassembly.ErrFinalSize):
		code = FinalSizeError
	}
	return &SessionError{Code: code, Message: fmt.Sprintf("stream %d on path %d: %v", id, p.id, err)}
}

// push stores a piece of a data frame that arrived on path p. c, if not nil,
// holds data (see reassembly.Buffer.Push).
func (st *Stream) push(p *path, off uint64, data []byte, fin bool, c *reassembly.Chunk) error {
	at := time.Now()
	st.mu.Lock()
	ready := off <= st.recv.ReadOffset()
	old := st.recv.Highest()
	if end := off + uint64(len(data)); end > old {
		if err := st.s.chargeRecv(end - old); err != nil {
			st.mu.Unlock()
			return st.s.dataViolation(p, st.id, errSessionWindow)
		}
	}
	dup, err := st.recv.Push(off, data, fin, c)
	if err != nil {
		st.mu.Unlock()
		return st.s.dataViolation(p, st.id, err)
	}
	st.noteRecvLocked(p.id, uint64(len(data)-dup))
	if dup < len(data) && !st.discarding {
		st.noteArrivalLocked(off+uint64(len(data)), at, ready)
	}
	credit := st.settleLocked()
	wake := st.recv.Readable() || st.recv.Done()
	finished := st.checkRecvLocked()
	st.mu.Unlock()
	if dup > 0 {
		p.stats.dupBytes.Add(uint64(dup))
	}
	p.stats.delivered.Add(uint64(len(data) - dup))
	st.s.consumed(credit)
	if wake {
		notify(st.readSignal)
	}
	if finished {
		st.s.streamFinished(st)
	}
	return nil
}

// handleReset applies the peer's RESET_STREAM.
func (st *Stream) handleReset(code ErrorCode, final uint64) error {
	st.mu.Lock()
	old := st.recv.Highest()
	if final > old {
		if err := st.s.chargeRecv(final - old); err != nil {
			st.mu.Unlock()
			return st.s.dataViolation(st.s.p0, st.id, errSessionWindow)
		}
	}
	if _, err := st.recv.Push(final, nil, true, nil); err != nil {
		st.mu.Unlock()
		return st.s.dataViolation(st.s.p0, st.id, err)
	}
	if !st.recvDone && !st.discarding {
		st.readErr = &StreamError{StreamID: st.id, Code: code, Remote: true}
		st.discarding = true
		st.arrivals = nil
		st.recv.Discard()
		st.toPushLocked()
	}
	credit := st.settleLocked()
	finished := st.checkRecvLocked()
	st.mu.Unlock()
	st.s.consumed(credit)
	notify(st.readSignal)
	if finished {
		st.s.streamFinished(st)
	}
	return nil
}

// CancelRead ends the read direction: buffered and later data is discarded,
// the peer is asked to stop sending (its Write fails with a *StreamError
// carrying code, Remote true), and later Reads fail with a local
// *StreamError. It does nothing after EOF, a reset or an earlier CancelRead.
func (st *Stream) CancelRead(code ErrorCode) {
	st.mu.Lock()
	if st.recvDone || st.discarding {
		st.mu.Unlock()
		return
	}
	st.readErr = &StreamError{StreamID: st.id, Code: code}
	st.discarding = true
	st.arrivals = nil
	st.recv.Discard()
	st.toPushLocked()
	_, finKnown := st.recv.FinalSize()
	credit := st.settleLocked()
	finished := st.checkRecvLocked()
	st.mu.Unlock()
	st.s.consumed(credit)
	if !finKnown {
		st.s.p0.out.push(&wire.StopSending{StreamID: uint64(st.id), Code: uint64(code)})
	}
	notify(st.readSignal)
	if finished {
		st.s.streamFinished(st)
	}
}

// SetReadDeadline sets the time after which a blocked or later Read fails
// with an error matching os.ErrDeadlineExceeded. The zero time means none.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.readDeadline = t
	if st.pulling && !st.pushMode {
		st.src.rs.SetReadDeadline(t)
		st.src.deadline = t
	}
	st.mu.Unlock()
	notify(st.readSignal)
	return nil
}

// SetWriteDeadline sets the time after which a Write still waiting for
// flow-control credit fails with an error matching os.ErrDeadlineExceeded.
// A frame already handed to QUIC is completed. The zero time means none.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.writeDeadline = t
	st.mu.Unlock()
	notify(st.writeSignal)
	return nil
}

// SetDeadline sets both the read and the write deadline.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}
