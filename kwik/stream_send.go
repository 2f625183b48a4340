package kwik

import (
	"context"
	"errors"
	"fmt"
	"io"
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
		n, off, err := st.reserve(nil, uint64(min(len(p)-written, st.s.maxFrame)))
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
// the returned offset. ctx may be nil.
func (st *Stream) reserve(ctx context.Context, n uint64) (uint64, uint64, error) {
	var cancel <-chan struct{}
	if ctx != nil {
		cancel = ctx.Done()
	}
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
		if ctx != nil && ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		st.wait(st.writeSignal, more, cancel, dl)
	}
}

// Reserve commits up to n bytes of the stream at its send offset without
// sending them, and returns their offset and count: a range for a secondary
// to write under a grant (Session.SendRawData), or for this side to send
// later with WriteAt. It takes stream and session flow-control credit like
// Write, so a granted range never exceeds the peer's windows, and blocks
// until at least one byte of credit is available, ctx is done, the write
// deadline passes or the session closes. It fails like Write. Reserve and
// Write take turns: the bytes of one Write stay contiguous. Reserve(ctx, 0)
// returns the send offset and 0.
func (st *Stream) Reserve(ctx context.Context, n uint64) (off, got uint64, err error) {
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	if n == 0 {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.sendOff, 0, st.writeErrLocked()
	}
	got, off, err = st.reserve(ctx, n)
	return off, got, err
}

// SendOffset returns the number of bytes committed so far by Write and
// Reserve: the offset where the next one starts.
func (st *Stream) SendOffset() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sendOff
}

// SendCredit returns how many bytes Write or Reserve could commit now
// without blocking: the smaller of the stream's and the session's
// flow-control credit from the peer. A scheduler reserves (and grants) at
// most this much ahead.
func (st *Stream) SendCredit() uint64 {
	st.mu.Lock()
	c := st.sendMax - st.sendOff
	st.mu.Unlock()
	s := st.s
	s.fc.Lock()
	defer s.fc.Unlock()
	return min(c, s.sendMax-s.sent)
}

// WriteAt writes p at stream offset off on path 0. The range must lie
// within the bytes already committed by Write or Reserve (ErrNotReserved
// otherwise): WriteAt sends a reserved range, or sends again a range that
// a secondary was granted but did not deliver (the client keeps the first
// copy of every byte and counts the others as duplicates). It takes no
// flow-control credit and, unlike Write, works after Close: the peer has
// the final size and still accepts the missing bytes. It fails with a
// *StreamError after CancelWrite or the peer's CancelRead and with a
// *SessionError when the session closes. It implements io.WriterAt.
func (st *Stream) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("kwik: WriteAt at negative offset %d", off)
	}
	st.writeMu.Lock()
	defer st.writeMu.Unlock()
	st.mu.Lock()
	committed, err, closed := st.sendOff, st.sendErr, st.closed
	st.mu.Unlock()
	if err == nil {
		err = st.s.err()
	}
	if err != nil {
		return 0, err
	}
	if uint64(off) > committed || uint64(len(p)) > committed-uint64(off) {
		return 0, fmt.Errorf("kwik: WriteAt [%d, +%d) on stream %d, committed %d: %w", off, len(p), st.id, committed, ErrNotReserved)
	}
	written := 0
	for written < len(p) {
		n := min(len(p)-written, st.s.maxFrame)
		if err := st.writeFrame(uint64(off)+uint64(written), p[written:written+n], false); err != nil {
			return written, err
		}
		written += n
	}
	if closed {
		// After Close the FIN is sent: close the data stream opened for
		// these bytes too.
		st.mu.Lock()
		u := st.uni
		st.uni = nil
		st.mu.Unlock()
		if u != nil {
			u.Close()
		}
	}
	return written, nil
}

var _ io.WriterAt = (*Stream)(nil)

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
	u, err := s.p0.conn.OpenUniStreamSync(s.ctx)
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
	ps := &st.s.p0.stats
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
	st.uni = nil // a later WriteAt opens another data stream
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
	st.s.p0.out.push(&wire.ResetStream{StreamID: uint64(st.id), Code: uint64(serr.Code), FinalSize: final})
	st.s.untrack(st.id)
	st.mu.Lock()
	if st.dlvSignal != nil { // wake WaitDelivered
		close(st.dlvSignal)
		st.dlvSignal = nil
	}
	st.mu.Unlock()
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
