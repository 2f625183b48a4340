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
	s.log.Debug("kwik: dialling secondary", "path", id, "addr", f.Addr, "server_name", f.ServerName)
	token, name := f.Token, f.ServerName
	s.spawn(func() { p.dial(token, name) })
	return nil
}

// dial connects path p to its secondary, verifying its certificate for
// serverName (see dialSecondary), and presents token. It runs on a session
// goroutine.
func (p *path) dial(token []byte, serverName string) {
	s := p.s
	ctx, cancel := context.WithTimeout(p.ctx, s.conf.HandshakeTimeout)
	defer cancel()
	conn, ctrl, br, peer, err := s.dialSecondary(ctx, p.id, p.addr, serverName, token)
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
// only if it admits the path. The secondary's certificate must be valid
// for serverName, the name the primary announced for it; when that is
// empty, for the client's TLSConfig.ServerName, or else the host of addr.
func (s *Session) dialSecondary(ctx context.Context, id PathID, addr, serverName string, token []byte) (*quic.Conn, *quic.Stream, *bufio.Reader, *wire.Settings, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("kwik: secondary address: %w", err)
	}
	tlsConf := s.conf.TLSConfig
	switch {
	case serverName != "":
		tlsConf = tlsConf.Clone()
		tlsConf.ServerName = serverName
	case tlsConf.ServerName == "":
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
	if errors.Is(e.Err, ErrGrantViolation) && !p.state.ended() {
		s.grantViolationPaths.Add(1)
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

// Bounds on what a secondary may write outside its grants (client side).
// A secondary path that exceeds one is closed with ProtocolViolation
// (matching ErrGrantViolation), counted (PathStats.GrantViolation,
// SessionStats.GrantViolationPaths) and reported to the primary as
// PATH_STATUS failed. An honest secondary writes only the ranges its
// commands grant, so it reaches none: its late bytes for a stream that
// finished count as duplicates, unless the path has since seen more than
// maxRetired of its streams finish (then as a refused stream).
const (
	// maxOutOfGrantBytes bounds the bytes outside the path's grants,
	// for streams it may not write included (OutOfGrantBytes).
	maxOutOfGrantBytes = 1 << 20
	// maxOutOfGrantFrames bounds the data frames with bytes outside the
	// grants, with a FIN or without payload (OutOfGrantFrames).
	maxOutOfGrantFrames = 8
	// maxRefusedStreams bounds the data streams for logical streams that
	// do not exist (RefusedStreams).
	maxRefusedStreams = 4
)

// ErrGrantViolation is matched (errors.Is) by the *PathError, of code
// ProtocolViolation, of a secondary path that the client closed because
// its secondary wrote outside its grants beyond a bound: more than 1 MiB,
// in more than 8 data frames, or for more than 4 streams that do not
// exist.
var ErrGrantViolation = errors.New("kwik: secondary wrote outside its grants")

// checkGrantBounds ends secondary path p (client side), and reports true,
// if its secondary has written outside its grants beyond a bound (see
// maxOutOfGrantBytes).
func (p *path) checkGrantBounds() bool {
	var what string
	switch b, f, r := p.stats.oogBytes.Load(), p.stats.oogFrames.Load(), p.stats.refusedStreams.Load(); {
	case b > maxOutOfGrantBytes:
		what = fmt.Sprintf("%d bytes outside its grants, over the limit of %d", b, maxOutOfGrantBytes)
	case f > maxOutOfGrantFrames:
		what = fmt.Sprintf("%d data frames outside its grants, over the limit of %d", f, maxOutOfGrantFrames)
	case r > maxRefusedStreams:
		what = fmt.Sprintf("data for %d streams that do not exist, over the limit of %d", r, maxRefusedStreams)
	default:
		return false
	}
	p.end(&PathError{Path: p.id, Addr: p.addr, Code: ProtocolViolation, Message: "secondary wrote " + what, Err: ErrGrantViolation})
	return true
}

// grantedRun reports whether byte off of st lies inside path id's grants,
// and how many bytes from off, at most n, lie on the same side. Grants
// only grow, so bytes inside stay inside.
func (st *Stream) grantedRun(id PathID, off, n uint64) (in bool, run uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	first := true
	st.grants[id].clip(off, off+n, func(a, b uint64, inside bool) {
		if first {
			in, run, first = inside, b-a, false
		}
	})
	return in, run
}

// readSecondaryData reads a data stream from a secondary (client side). Its
// bytes are pushed into the logical stream only where the path's grants
// cover them; the rest is dropped and counted. A secondary never opens a
// logical stream: a data stream for a stream that does not exist is read
// to its end and counted (RefusedStreams, OutOfGrantBytes), or, for a
// stream that finished while the path held grants on it, counted as
// duplicates. Framing errors end the path, never the session, and so does
// writing outside the grants beyond a bound (see maxOutOfGrantBytes).
//
// Only granted bytes count as data for stall detection (see stallWatch):
// bytes inside the path's grants, whatever becomes of them, bytes for a
// stream that finished while the path held grants on it, and the empty
// data stream that answers a command the secondary cannot serve (a header
// naming such a stream, then the end). Headers and bytes outside the
// grants do not.
func (p *path) readSecondaryData(rs *quic.ReceiveStream) {
	s := p.s
	dr := &dataReader{rs: rs, w: &p.stall}
	br := bufio.NewReaderSize(dr, 512)
	raw, err := wire.ReadStreamHeader(br)
	if err != nil {
		p.secondaryReadFailed(noEOF(err))
		return
	}
	id := StreamID(raw)
	st := s.lookupStream(id)
	dupOnly := false
	held := false // p holds grants on st
	if st != nil {
		st.mu.Lock()
		st.toPushLocked() // several sources from now on
		held = st.grants[p.id] != nil
		st.mu.Unlock()
	} else if dupOnly = p.isRetired(id); !dupOnly {
		p.stats.refusedStreams.Add(1)
		s.reportSoon()
		s.log.Warn("kwik: secondary tried to write a stream it has no grant on", "path", p.id, "stream", id)
		if p.checkGrantBounds() {
			return
		}
	}
	var small [reassembly.SmallPiece]byte
	for frames := 0; ; frames++ {
		h, err := wire.ReadDataHeader(br)
		if err != nil {
			if err == io.EOF && frames == 0 && (held || dupOnly) {
				p.stall.noteData() // an empty answer (Command.Close)
			}
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
		// A secondary never ends a stream, nor sends an empty frame.
		outside := h.Length == 0 || (h.Fin && st != nil)
		off, rest := h.Offset, h.Length
		for rest > 0 {
			n := min(rest, reassembly.MaxChunk)
			in := dupOnly
			if st != nil {
				in, n = st.grantedRun(p.id, off, n)
			}
			var k int
			var rerr error
			dr.granted = in
			switch {
			case st == nil || !in:
				var k64 int64
				k64, rerr = io.CopyN(io.Discard, br, int64(n))
				k = int(k64)
			default:
				var c *reassembly.Chunk
				var buf []byte
				if n > reassembly.SmallPiece {
					c = reassembly.NewChunk(int(n))
					buf = c.Bytes()
				} else {
					buf = small[:n]
				}
				k, rerr = io.ReadFull(br, buf)
				if k > 0 && st.pushGranted(p, off, buf[:k], c) {
					outside = true // not expected: grants only grow
				}
				if c != nil {
					c.Release()
				}
			}
			dr.granted = false
			switch {
			case in && k > 0:
				// Also for bytes read ahead with the header.
				p.stall.noteData()
				if st == nil {
					p.stats.dupBytes.Add(uint64(k))
				}
			case !in:
				p.stats.oogBytes.Add(uint64(k))
				outside = true
				s.reportSoon()
			}
			if rerr != nil {
				p.secondaryReadFailed(noEOF(rerr))
				return
			}
			if !in && p.checkGrantBounds() {
				return
			}
			off += n
			rest -= n
		}
		if outside {
			p.stats.oogFrames.Add(1)
			s.reportSoon()
			if p.checkGrantBounds() {
				return
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
