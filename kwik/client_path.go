package kwik

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/reassembly"
	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// maxRetired bounds the finished streams a path remembers (see
// path.retired).
const maxRetired = 1024

// handleAddPath starts a secondary path on a client: the primary's
// ADD_PATH names the path, the secondary's address and the token to
// present.
func (s *Session) handleAddPath(f *wire.AddPath) error {
	id := PathID(f.PathID)
	s.pathMu.Lock()
	if id == 0 || id < s.nextPathID {
		s.pathMu.Unlock()
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("ADD_PATH for path %d, which exists or existed", id)}
	}
	s.nextPathID = id + 1
	p := newPath(s, id, nil, nil, nil)
	p.addr = f.Addr
	p.ctx, p.cancel = context.WithCancel(s.ctx)
	full := s.livePathsLocked() >= s.conf.MaxPaths
	s.paths[id] = p
	s.pathMu.Unlock()
	if full {
		p.end(&PathError{Path: id, Addr: f.Addr, Code: PathRefused, Message: ErrPathLimit.Error(), Err: ErrPathLimit})
		return nil
	}
	s.log.Debug("kwik: dialling secondary", "path", id, "addr", f.Addr)
	token := f.Token
	s.spawn(func() { p.dial(token) })
	return nil
}

// dial connects path p to its secondary and presents token. It runs on a
// session goroutine.
func (p *path) dial(token []byte) {
	s := p.s
	ctx, cancel := context.WithTimeout(p.ctx, s.conf.HandshakeTimeout)
	defer cancel()
	conn, ctrl, br, peer, err := s.dialSecondary(ctx, p.id, p.addr, token)
	if err != nil {
		if s.ctx.Err() == nil {
			p.end(pathErrorFrom(p.id, p.addr, err))
		}
		return
	}
	s.pathMu.Lock()
	if p.ctx.Err() != nil { // the session is closing
		s.pathMu.Unlock()
		conn.CloseWithError(quic.ApplicationErrorCode(NoError), "session closed")
		return
	}
	p.conn, p.ctrl, p.cr = conn, ctrl, br
	p.peerCtrlMax = int(peer.MaxControlFrameSize)
	s.setStateLocked(p, PathUp, nil)
	// Queued under pathMu, so that PATH_STATUS frames leave in the order of
	// the state changes.
	s.p0.out.push(&wire.PathStatus{PathID: uint64(p.id), State: wire.PathStateUp})
	s.pathMu.Unlock()
	p.start()
	if s.conf.PathStallTimeout > 0 {
		s.spawn(p.watchStall)
	}
	s.reportSoon()
	s.log.Debug("kwik: secondary path up", "path", p.id, "addr", p.addr)
}

// dialSecondary opens a QUIC connection to the secondary at addr on the
// session's UDP socket, sends SETTINGS and the token (as ADD_PATH) on a new
// control stream and waits for the secondary's SETTINGS, which it sends
// only if it admits the path.
func (s *Session) dialSecondary(ctx context.Context, id PathID, addr string, token []byte) (*quic.Conn, *quic.Stream, *bufio.Reader, *wire.Settings, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("kwik: secondary address: %w", err)
	}
	tlsConf := s.conf.TLSConfig
	if tlsConf.ServerName == "" {
		tlsConf = tlsConf.Clone()
		tlsConf.ServerName = host
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("kwik: secondary address: %w", err)
	}
	conn, err := s.tr.tr.Dial(ctx, ua, tlsConf, s.conf.quicConfig(true))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("kwik: dial secondary %s: %w", addr, clientCertificateError(err))
	}
	ctrl, err := conn.OpenStreamSync(ctx)
	if err == nil {
		err = writeFrames(ctrl, localSettings(s.conf), &wire.AddPath{PathID: uint64(id), Addr: addr, Token: token})
	}
	if err != nil {
		if isConnError(err) {
			err = sessionErrorFromQUIC(err)
		}
		err = withCertificateRefusal(conn, err)
		conn.CloseWithError(quic.ApplicationErrorCode(InternalError), "handshake failed")
		return nil, nil, nil, nil, fmt.Errorf("kwik: open path to %s: %w", addr, err)
	}
	br := bufio.NewReaderSize(ctrl, 512)
	f, err := readFirstFrame(ctx, ctrl, br, s.conf, "secondary SETTINGS")
	var peer *wire.Settings
	if err == nil {
		peer, err = checkSettings(f)
	}
	if err != nil {
		err = withCertificateRefusal(conn, err)
		closeAfterSetupError(conn, err)
		return nil, nil, nil, nil, err
	}
	return conn, ctrl, br, peer, nil
}

// end ends secondary path p (client side) with e: it closes the
// connection, tells the primary (PATH_STATUS) and queues the PathEvent. Only
// the first call counts.
func (p *path) end(e *PathError) {
	s := p.s
	state := PathFailed
	if e.Code == NoError {
		state = PathClosed
	}
	s.pathMu.Lock()
	if e.Code == PathStalled && !p.state.ended() {
		s.stalledPaths.Add(1) // before the event, so that its reader sees it
	}
	changed := s.setStateLocked(p, state, e)
	conn := p.conn
	if changed && s.ctx.Err() == nil {
		reason := e.Message
		if len(reason) > wire.MaxReasonLen {
			reason = reason[:wire.MaxReasonLen]
		}
		ws := uint64(wire.PathStateFailed)
		if state == PathClosed {
			ws = wire.PathStateClosed
		}
		s.p0.out.push(&wire.PathStatus{PathID: uint64(p.id), State: ws, Code: uint64(e.Code), Reason: reason})
	}
	s.pathMu.Unlock()
	if !changed {
		return
	}
	p.cancel()
	if conn != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(e.Code), e.Message)
	}
	s.reportSoon()
	if s.ctx.Err() == nil {
		s.log.Info("kwik: secondary path ended", "path", p.id, "addr", p.addr, "state", state, "err", e)
	}
}

// relayCommand applies the primary's RAW_DATA on a client: it records the
// command's grant for its path and forwards the frame, unchanged, to the
// secondary. A command for a path that is not up is dropped and counted.
func (s *Session) relayCommand(f *wire.RawData) error {
	c, err := wire.ParseCommand(f.Command)
	if err != nil {
		return &SessionError{Code: ProtocolViolation, Message: "RAW_DATA: " + err.Error()}
	}
	id := PathID(f.PathID)
	if c.PathID != f.PathID {
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("RAW_DATA for path %d carries a command for path %d", id, c.PathID)}
	}
	s.pathMu.Lock()
	p := s.paths[id]
	up := p != nil && p.state == PathUp
	known := id < s.nextPathID
	s.pathMu.Unlock()
	switch {
	case p == nil && !known:
		return &SessionError{Code: ProtocolViolation, Message: fmt.Sprintf("RAW_DATA for path %d, which was never added", id)}
	case p == nil:
		s.p0.stats.commandsDropped.Add(1) // a path ended long ago
		return nil
	case !up:
		p.stats.commandsDropped.Add(1)
		return nil
	case len(f.Command)+8 > p.peerCtrlMax: // 8: the longest path ID
		p.stats.commandsDropped.Add(1)
		s.log.Warn("kwik: command too large for the secondary; dropped", "path", id, "bytes", len(f.Command), "limit", p.peerCtrlMax)
		return nil
	}
	st, err := s.streamFor(StreamID(c.Grant.StreamID))
	if err != nil {
		return err
	}
	if st == nil {
		// The stream has finished: the bytes would be duplicates.
		p.stats.commandsDropped.Add(1)
		return nil
	}
	if err := st.addGrant(id, c.Grant); err != nil {
		return err
	}
	p.out.push(f)
	p.stats.commandsSent.Add(1)
	p.stall.noteWork()
	return nil
}

// retireGrants remembers, on every path that held grants on st, that st has
// finished (client side).
func (s *Session) retireGrants(st *Stream) {
	st.mu.Lock()
	ids := make([]PathID, 0, len(st.grants))
	for id := range st.grants {
		ids = append(ids, id)
	}
	st.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	s.pathMu.Lock()
	defer s.pathMu.Unlock()
	for _, id := range ids {
		p := s.paths[id]
		if p == nil {
			continue
		}
		if p.retired == nil {
			p.retired = make(map[StreamID]struct{})
		}
		p.retired[st.id] = struct{}{}
		p.retiredQ = append(p.retiredQ, st.id)
		if len(p.retiredQ) > maxRetired {
			delete(p.retired, p.retiredQ[0])
			p.retiredQ = p.retiredQ[1:]
		}
	}
}

// isRetired reports whether stream id finished while p held grants on it.
func (p *path) isRetired(id StreamID) bool {
	p.s.pathMu.Lock()
	defer p.s.pathMu.Unlock()
	_, ok := p.retired[id]
	return ok
}

// lookupStream returns an existing stream, never creating one.
func (s *Session) lookupStream(id StreamID) *Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

// readSecondaryData reads a data stream from a secondary (client side). Its
// bytes are pushed into the logical stream only where the path's grants
// cover them; the rest is dropped and counted. A secondary never opens a
// logical stream: a data stream for a stream that does not exist is read
// to its end and counted (RefusedStreams, OutOfGrantBytes), or, for a
// stream that finished while the path held grants on it, counted as
// duplicates. Framing errors end the path, never the session. Every byte
// read counts as data for stall detection (see stallWatch).
func (p *path) readSecondaryData(rs *quic.ReceiveStream) {
	s := p.s
	br := bufio.NewReaderSize(dataReader{rs, &p.stall}, 512)
	raw, err := wire.ReadStreamHeader(br)
	if err != nil {
		p.secondaryReadFailed(noEOF(err))
		return
	}
	id := StreamID(raw)
	st := s.lookupStream(id)
	dupOnly := false
	if st != nil {
		st.mu.Lock()
		st.toPushLocked() // several sources from now on
		st.mu.Unlock()
	} else if dupOnly = p.isRetired(id); !dupOnly {
		p.stats.refusedStreams.Add(1)
		s.reportSoon()
		s.log.Warn("kwik: secondary tried to write a stream it has no grant on", "path", p.id, "stream", id)
	}
	var small [reassembly.SmallPiece]byte
	for {
		h, err := wire.ReadDataHeader(br)
		if err != nil {
			p.secondaryReadFailed(err)
			return
		}
		if h.Length > uint64(s.conf.MaxDataFramePayload) {
			p.abort(&SessionError{Code: FrameSizeError, Message: fmt.Sprintf(
				"data frame of %d bytes on stream %d exceeds the limit of %d", h.Length, id, s.conf.MaxDataFramePayload)})
			return
		}
		p.stats.dataFramesRecv.Add(1)
		p.stats.dataBytesRecv.Add(h.Length)
		outside := h.Fin && st != nil // a secondary never ends a stream
		off, rest := h.Offset, h.Length
		for rest > 0 {
			n := int(min(rest, reassembly.MaxChunk))
			if st == nil {
				k, err := io.CopyN(io.Discard, br, int64(n))
				if dupOnly {
					p.stats.dupBytes.Add(uint64(k))
				} else {
					p.stats.oogBytes.Add(uint64(k))
					outside = true
				}
				if err != nil {
					p.secondaryReadFailed(noEOF(err))
					return
				}
			} else {
				var c *reassembly.Chunk
				var buf []byte
				if n > reassembly.SmallPiece {
					c = reassembly.NewChunk(n)
					buf = c.Bytes()
				} else {
					buf = small[:n]
				}
				k, rerr := io.ReadFull(br, buf)
				if k > 0 && st.pushGranted(p, off, buf[:k], c) {
					outside = true
				}
				if c != nil {
					c.Release()
				}
				if rerr != nil {
					p.secondaryReadFailed(noEOF(rerr))
					return
				}
			}
			off += uint64(n)
			rest -= uint64(n)
		}
		if outside {
			p.stats.oogFrames.Add(1)
			if st == nil || h.Fin {
				s.reportSoon()
			}
		}
	}
}

// secondaryReadFailed handles the end of a secondary's data stream: a clean
// end or a reset is normal, a connection error ends the path (as its
// watcher would), anything else is a framing violation that ends the path.
func (p *path) secondaryReadFailed(err error) {
	var qse *quic.StreamError
	switch {
	case err == io.EOF, errors.As(err, &qse), p.ctx.Err() != nil:
	case isConnError(err):
		p.connFailed(err)
	case errors.Is(err, wire.ErrMalformed):
		p.abort(&SessionError{Code: ProtocolViolation, Message: err.Error()})
	case errors.Is(err, io.ErrUnexpectedEOF):
		p.abort(&SessionError{Code: ProtocolViolation, Message: "data stream ended inside a frame"})
	default:
		p.abort(&SessionError{Code: InternalError, Message: "read data stream: " + err.Error(), Err: err})
	}
}
