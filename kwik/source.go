package kwik

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/reassembly"
	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// source is a QUIC data stream from the peer feeding one logical stream.
//
// A logical stream with a single source is read in pull mode: the
// application's Read reads the QUIC stream itself, straight into the
// caller's buffer, with no copy and no goroutine in between (the fast path).
// A stream with several sources (later: several paths), or whose reading was
// canceled, is read in push mode: one goroutine per source reads frames into
// the stream's reassembly buffer. A source switches from pull to push at
// most once, never back; Stream.pulling and Stream.pushMode hand it over so
// that exactly one goroutine reads it at a time.
type source struct {
	p  *path
	rs *quic.ReceiveStream
	br *bufio.Reader
	id StreamID // the logical stream, once the header is read

	deadline time.Time // last read deadline set on rs in pull mode; guarded by Stream.mu

	// Frame state, owned by the goroutine that reads the source.
	inFrame bool
	off     uint64 // offset of the next payload byte of the current frame
	rest    uint64 // payload bytes left in the current frame
	fin     bool   // the current frame ends the stream
	small   [reassembly.SmallPiece]byte
}

func newSource(p *path, rs *quic.ReceiveStream) *source {
	return &source{p: p, rs: rs, br: bufio.NewReaderSize(rs, 512)}
}

// errSourceEnded reports that a source has no more frames: its QUIC stream
// ended or was reset. The logical stream's fate travels in control frames.
var errSourceEnded = errors.New("kwik: data stream ended")

// sourceError classifies an error from reading a source. It returns
// errSourceEnded for the end or reset of the QUIC stream, the session's
// error if the session is gone (closing it on a connection error), and a
// *SessionError for a protocol violation (not yet applied).
func (src *source) sourceError(err error) error {
	s := src.p.s
	var qse *quic.StreamError
	switch {
	case err == io.EOF, errors.As(err, &qse):
		return errSourceEnded
	case isConnError(err):
		s.closeFromConn(err)
	}
	if serr := s.err(); serr != nil {
		return serr
	}
	switch {
	case errors.Is(err, wire.ErrMalformed):
		return &SessionError{Code: ProtocolViolation, Message: err.Error()}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &SessionError{Code: ProtocolViolation, Message: "data stream ended inside a frame"}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errPullDeadline
	}
	return &SessionError{Code: InternalError, Message: "read data stream: " + err.Error(), Err: err}
}

// header reads the next frame header unless a frame is in progress, checks
// it and counts it. Zero-length frames (a bare FIN) are applied at once; then
// header returns with inFrame false. st may be nil (a finished stream).
func (src *source) header(st *Stream) error {
	if src.inFrame {
		return nil
	}
	s := src.p.s
	h, err := wire.ReadDataHeaderAtomic(src.br)
	if err != nil {
		return src.sourceError(err)
	}
	if h.Length > uint64(s.conf.MaxDataFramePayload) {
		return &SessionError{Code: FrameSizeError, Message: fmt.Sprintf(
			"data frame of %d bytes on stream %d exceeds the limit of %d", h.Length, src.id, s.conf.MaxDataFramePayload)}
	}
	src.p.stats.dataFramesRecv.Add(1)
	src.p.stats.dataBytesRecv.Add(h.Length)
	if st != nil {
		if err := st.admit(src.p, h); err != nil {
			return err
		}
	}
	src.inFrame, src.off, src.rest, src.fin = true, h.Offset, h.Length, h.Fin
	if h.Length == 0 {
		src.inFrame = false
		if st != nil {
			if err := st.push(src.p, h.Offset, nil, h.Fin, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// consumed advances the frame state past n payload bytes.
func (src *source) consumed(n int) {
	src.off += uint64(n)
	src.rest -= uint64(n)
	if src.rest == 0 {
		src.inFrame = false
	}
}

// pushPiece reads the next piece of the current frame (at most a chunk) and
// pushes it into st's buffer, or drops it if st is nil. If the read fails
// part way (say, a pull interrupted by a kick), the bytes read are still
// pushed, so the frame state stays true to the stream position.
func (src *source) pushPiece(st *Stream) error {
	n := int(min(src.rest, reassembly.MaxChunk))
	off := src.off
	if st == nil {
		k, err := io.CopyN(io.Discard, src.br, int64(n))
		src.p.stats.dupBytes.Add(uint64(k))
		src.consumed(int(k))
		if err != nil {
			return src.sourceError(noEOF(err))
		}
		return nil
	}
	var c *reassembly.Chunk
	buf := src.small[:0]
	if n <= reassembly.SmallPiece {
		buf = src.small[:n]
	} else {
		c = reassembly.NewChunk(n)
		buf = c.Bytes()
	}
	k, rerr := io.ReadFull(src.br, buf)
	var err error
	if k > 0 {
		fin := src.fin && uint64(k) == src.rest
		err = st.push(src.p, off, buf[:k], fin, c)
	}
	if c != nil {
		c.Release()
	}
	if err != nil {
		return err
	}
	src.consumed(k)
	if rerr != nil {
		return src.sourceError(noEOF(rerr))
	}
	return nil
}

// drain reads src in push mode until it ends. st may be nil: the payload of
// a finished stream is dropped. It runs on a session goroutine and closes
// the session on a violation.
func (src *source) drain(st *Stream) {
	s := src.p.s
	src.rs.SetReadDeadline(time.Time{})
	for {
		err := src.header(st)
		for err == nil && src.inFrame {
			err = src.pushPiece(st)
		}
		if err != nil {
			var se *SessionError
			if errors.As(err, &se) {
				s.closeWith(se)
			}
			return
		}
	}
}
