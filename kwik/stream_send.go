package kwik

import (
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// Write writes p to the stream and returns when all of it is handed to QUIC.
// It blocks while the peer's stream or session window is full. It fails
// with ErrStreamClosed after Close, with a *StreamError after CancelWrite or
// the peer's CancelRead, with a *SessionError when the session closes and
// with an error matching os.ErrDeadlineExceeded when the write deadline
// passes; the count says how many bytes were written before that.
func (st *Stream) Write(p []byte) (int, error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if len(p) == 0 {
		st.mu.Lock()
		err := st.writeErrLocked()
		st.mu.Unlock()
		return 0, err
	}
	written := 0
	for written < len(p) {
		n, off, err := st.reserve(uint64(min(len(p)-written, st.s.maxFrame)))
		if err != nil {
			return written, err
		}
		if err := st.writeFrame(off, p[written:written+int(n)], false); err != nil {
			return written, err
		}
		written += int(n)
	}
	return written, nil
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.sendErr != nil:
		return st.sendErr
	case st.closed:
		return ErrStreamClosed
	}
	return st.s.err()
}

// reserve waits for stream and session credit and commits up to n bytes at
// the returned offset.
func (st *Stream) reserve(n uint64) (uint64, uint64, error) {
	for {
		st.mu.Lock()
		if err := st.writeErrLocked(); err != nil {
			st.mu.Unlock()
			return 0, 0, err
		}
		dl := st.writeDeadline
		if !dl.IsZero() && !time.Now().Before(dl) {
			st.mu.Unlock()
			return 0, 0, errDeadline
		}
		var more <-chan struct{}
		if credit := st.sendMax - st.sendOff; credit > 0 {
			got, ch := st.s.reserveSend(min(n, credit))
			if got > 0 {
				off := st.sendOff
				st.sendOff += got
				st.mu.Unlock()
				return got, off, nil
			}
			more = ch
		}
		st.mu.Unlock()
		st.wait(st.writeSignal, more, dl)
	}
}

// dataStream returns the QUIC stream that carries this stream's data on
// path 0, opening it on first use.
func (st *Stream) dataStream() (*quic.SendStream, error) {
	st.mu.Lock()
	u := st.uni
	st.mu.Unlock()
	if u != nil {
		return u, nil
	}
	s := st.s
	u, err := s.paths[0].conn.OpenUniStreamSync(s.ctx)
	if err != nil {
		if isConnError(err) {
			s.closeFromConn(err)
		}
		if serr := s.err(); serr != nil {
			return nil, serr
		}
		return nil, fmt.Errorf("kwik: open data stream for stream %d: %w", st.id, err)
	}
	st.mu.Lock()
	if serr, ok := st.sendErr.(*StreamError); ok {
		st.mu.Unlock()
		u.CancelWrite(quic.StreamErrorCode(serr.Code))
		return nil, serr
	}
	st.uni = u
	st.hdrSent = false
	st.mu.Unlock()
	return u, nil
}

// writeFrame writes the data frame [off, off+len(data)) to the data stream.
// Called with writeMu held.
func (st *Stream) writeFrame(off uint64, data []byte, fin bool) error {
	u, err := st.dataStream()
	if err != nil {
		return err
	}
	b := st.hdr[:0]
	if !st.hdrSent {
		b = wire.AppendStreamHeader(b, uint64(st.id))
	}
	b = wire.DataHeader{Offset: off, Length: uint64(len(data)), Fin: fin}.Append(b)
	if len(data) <= smallWrite {
		if st.smallBuf == nil {
			st.smallBuf = make([]byte, 0, len(st.hdr)+smallWrite)
		}
		sb := append(append(st.smallBuf[:0], b...), data...)
		_, err = u.Write(sb)
	} else if _, err = u.Write(b); err == nil {
		_, err = u.Write(data)
	}
	if err != nil {
		return st.writeFailed(err)
	}
	st.hdrSent = true
	ps := &st.s.paths[0].stats
	ps.dataFramesSent.Add(1)
	ps.dataBytesSent.Add(uint64(len(data)))
	return nil
}

// writeFailed translates an error from writing the data stream.
func (st *Stream) writeFailed(err error) error {
	s := st.s
	var qse *quic.StreamError
	if errors.As(err, &qse) {
		st.mu.Lock()
		serr := st.sendErr
		st.mu.Unlock()
		if serr != nil {
			return serr
		}
		return &StreamError{StreamID: st.id, Code: ErrorCode(qse.ErrorCode), Remote: qse.Remote}
	}
	if isConnError(err) {
		s.closeFromConn(err)
	}
	if serr := s.err(); serr != nil {
		return serr
	}
	return fmt.Errorf("kwik: write stream %d: %w", st.id, err)
}

// Close ends the write direction: the peer reads io.EOF after the data
// written so far. Reading is unaffected. Close after Close is a no-op;
// after CancelWrite or the peer's CancelRead it returns that *StreamError.
func (st *Stream) Close() error {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	st.mu.Lock()
	if st.sendErr != nil {
		err := st.sendErr
		st.mu.Unlock()
		return err
	}
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	off := st.sendOff
	st.mu.Unlock()
	if err := st.writeFrame(off, nil, true); err != nil {
		return err
	}
	st.uni.Close()
	st.mu.Lock()
	st.sendDone = true
	finished := st.finishLocked()
	st.mu.Unlock()
	if finished {
		st.s.streamFinished(st)
	}
	return nil
}

// CancelWrite ends the write direction abruptly: the peer's Read fails with
// a *StreamError carrying code (Remote true), and a blocked or later Write
// fails with a local one. Data not yet delivered may be lost. It does
// nothing after Close has completed or an earlier cancellation.
func (st *Stream) CancelWrite(code ErrorCode) {
	st.resetSend(&StreamError{StreamID: st.id, Code: code})
}

// handleStopSending applies the peer's STOP_SENDING: the write side is reset
// with the peer's code.
func (st *Stream) handleStopSending(code ErrorCode) {
	st.resetSend(&StreamError{StreamID: st.id, Code: code, Remote: true})
}

// resetSend resets the write direction with serr and sends RESET_STREAM.
func (st *Stream) resetSend(serr *StreamError) {
	st.mu.Lock()
	if st.sendDone || st.sendErr != nil {
		st.mu.Unlock()
		return
	}
	st.sendErr = serr
	st.sendDone = true
	final, u := st.sendOff, st.uni
	finished := st.finishLocked()
	st.mu.Unlock()
	if u != nil {
		u.CancelWrite(quic.StreamErrorCode(serr.Code))
	}
	st.s.paths[0].out.push(&wire.ResetStream{StreamID: uint64(st.id), Code: uint64(serr.Code), FinalSize: final})
	notify(st.writeSignal)
	if finished {
		st.s.streamFinished(st)
	}
}

// handleMaxStreamData applies the peer's MAX_STREAM_DATA.
func (st *Stream) handleMaxStreamData(v uint64) {
	st.mu.Lock()
	raised := v > st.sendMax
	if raised {
		st.sendMax = v
	}
	st.mu.Unlock()
	if raised {
		notify(st.writeSignal)
	}
}
