package kwik

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// Secondary is a secondary server's endpoint. The clients of a primary
// connect to it as secondary paths, each presenting a path token the
// primary issued (see Session.AddPath); it admits only valid, unexpired
// tokens issued for its own address, each once. Over an admitted path the
// client relays the primary's commands; AcceptCommand returns those whose
// signature, path, sequence number and expiry verify, and the secondary answers
// by writing data frames for the command's grant (Command.Write).
//
// A secondary never opens or accepts logical streams and holds no
// session: it only writes the ranges it is granted.
type Secondary struct {
	conf *Config
	keys *clusterKeys
	addr string // the advertised address, checked against tokens
	log  *slog.Logger
	tr   *transport
	ql   *quic.Listener

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the accept loop and every path's goroutine
	pending   chan struct{}  // semaphore of maxPendingSessions
	limit     *sessionLimit  // Config.MaxSessions: open paths
	cmds      chan *Command  // verified commands, handed over by AcceptCommand
	closeOnce sync.Once

	mu    sync.Mutex            // guards the fields below
	used  map[[2]uint64]uint64  // admitted tokens (session, path) -> expiry (Unix ms)
	paths map[*secPath]struct{} // open paths

	stats secondaryCounters
}

type secondaryCounters struct {
	pathsAdmitted, pathsOpen                                atomic.Uint64
	tokMissing, tokInvalid, tokExpired, tokWrong, tokReused atomic.Uint64
	cmdAccepted, cmdRefused, cmdReplayed, cmdExpired        atomic.Uint64
	dataBytesSent, dataFramesSent                           atomic.Uint64
	emptyAnswers, pathsWriteStalled                         atomic.Uint64
}

// SecondaryStats is a snapshot of a secondary's counters.
type SecondaryStats struct {
	PathsAdmitted uint64 // paths admitted since the start
	PathsOpen     uint64 // paths open now

	// TokensRefused counts refused paths: the sum of the five reasons.
	TokensRefused        uint64
	TokensMissing        uint64
	TokensInvalid        uint64
	TokensExpired        uint64
	TokensWrongSecondary uint64
	TokensReused         uint64

	CommandsAccepted uint64 // verified and delivered to AcceptCommand
	// CommandsRefused counts commands that were malformed, failed their
	// signature or named another session or path; CommandsReplayed those whose
	// sequence number did not increase; CommandsExpired those past their
	// expiry. None of them was delivered.
	CommandsRefused  uint64
	CommandsReplayed uint64
	CommandsExpired  uint64

	DataBytesSent  uint64 // payload bytes of the data frames written
	DataFramesSent uint64
	// EmptyAnswers counts commands closed before anything was written for
	// them, answered with an empty data stream (see Command.Close).
	EmptyAnswers uint64
	// PathsWriteStalled counts paths closed because their client took no
	// data for Config.WriteTimeout (WriteStalled).
	PathsWriteStalled uint64
	// Refused counts the connections refused, or lost, before they became
	// paths, for reasons other than their token (counted above).
	Refused Refusals
}

// ListenSecondary listens for secondary paths on the UDP address addr
// (host:port; port 0 picks one). conf.TLSConfig must hold the server
// certificate (clients verify it like the primary's) and conf.VerifyKeys the
// public keys of the primary's SigningKey. Tokens must name conf.AdvertiseAddr,
// or by default the bound address. At most conf.MaxSessions paths are open
// at once (see Config).
func ListenSecondary(addr string, conf *Config) (*Secondary, error) {
	c, err := conf.resolve()
	if err != nil {
		return nil, err
	}
	keys, err := newVerifyKeys(c.VerifyKeys)
	if err != nil {
		return nil, fmt.Errorf("kwik: ListenSecondary: %w", err)
	}
	tr, err := newTransport(addr, c.Logger)
	if err != nil {
		return nil, err
	}
	limit := newSessionLimit(c)
	limit.refused.countCertificateRefusals(tr.tr)
	ql, err := tr.tr.Listen(c.TLSConfig, c.quicConfigFor(false, true))
	if err != nil {
		tr.release()
		return nil, fmt.Errorf("kwik: listen on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sec := &Secondary{
		conf:    c,
		keys:    keys,
		addr:    c.AdvertiseAddr,
		tr:      tr,
		ql:      ql,
		ctx:     ctx,
		cancel:  cancel,
		pending: make(chan struct{}, maxPendingSessions),
		limit:   limit,
		cmds:    make(chan *Command),
		used:    make(map[[2]uint64]uint64),
		paths:   make(map[*secPath]struct{}),
	}
	if sec.addr == "" {
		sec.addr = tr.conn.LocalAddr().String()
	}
	sec.log = c.Logger.With("kwik_side", "secondary", "addr", sec.addr)
	sec.wg.Go(sec.acceptLoop)
	return sec, nil
}

// Addr returns the secondary's UDP address.
func (sec *Secondary) Addr() net.Addr { return sec.tr.conn.LocalAddr() }

// AdvertisedAddr returns the address tokens must name.
func (sec *Secondary) AdvertisedAddr() string { return sec.addr }

// Stats returns the secondary's counters.
func (sec *Secondary) Stats() SecondaryStats {
	c := &sec.stats
	st := SecondaryStats{
		PathsAdmitted:        c.pathsAdmitted.Load(),
		PathsOpen:            c.pathsOpen.Load(),
		TokensMissing:        c.tokMissing.Load(),
		TokensInvalid:        c.tokInvalid.Load(),
		TokensExpired:        c.tokExpired.Load(),
		TokensWrongSecondary: c.tokWrong.Load(),
		TokensReused:         c.tokReused.Load(),
		CommandsAccepted:     c.cmdAccepted.Load(),
		CommandsRefused:      c.cmdRefused.Load(),
		CommandsReplayed:     c.cmdReplayed.Load(),
		CommandsExpired:      c.cmdExpired.Load(),
		DataBytesSent:        c.dataBytesSent.Load(),
		DataFramesSent:       c.dataFramesSent.Load(),
		EmptyAnswers:         c.emptyAnswers.Load(),
		PathsWriteStalled:    c.pathsWriteStalled.Load(),
		Refused:              sec.limit.refused.snapshot(),
	}
	st.TokensRefused = st.TokensMissing + st.TokensInvalid + st.TokensExpired + st.TokensWrongSecondary + st.TokensReused
	return st
}

// AcceptCommand returns the next verified command relayed by a client. It
// blocks until one arrives, ctx is done or the secondary is closed (then
// the error matches ErrClosed). A client's path reads no further command
// until this one is accepted.
func (sec *Secondary) AcceptCommand(ctx context.Context) (*Command, error) {
	select {
	case c := <-sec.cmds:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-sec.ctx.Done():
		return nil, fmt.Errorf("kwik: secondary: %w", ErrClosed)
	}
}

// Close stops accepting paths, closes the open ones (NoError: their
// clients see the paths closed) and waits for the secondary's goroutines.
func (sec *Secondary) Close() error {
	sec.closeOnce.Do(func() {
		sec.cancel()
		sec.ql.Close()
		sec.mu.Lock()
		for p := range sec.paths {
			p.conn.CloseWithError(quic.ApplicationErrorCode(NoError), "secondary closing")
		}
		sec.mu.Unlock()
		sec.wg.Wait()
		sec.tr.release()
	})
	return nil
}

func (sec *Secondary) acceptLoop() {
	for {
		select {
		case sec.pending <- struct{}{}:
		case <-sec.ctx.Done():
			return
		}
		conn, err := sec.ql.Accept(sec.ctx)
		if err != nil {
			<-sec.pending
			return
		}
		sec.wg.Go(func() { sec.serve(conn) })
	}
}

// serve admits conn as a path and then serves it until it ends.
func (sec *Secondary) serve(conn *quic.Conn) {
	src := sourceOf(conn)
	if reason := sec.limit.acquire(src); reason != "" {
		<-sec.pending
		sec.limit.refuse(conn, reason, sec.log)
		return
	}
	defer sec.limit.release(src)
	p, err := sec.admit(conn)
	sec.limit.setupDone(src)
	<-sec.pending
	if err != nil {
		reason := refusalReason(err)
		if reason == nil {
			if sec.ctx.Err() == nil {
				sec.limit.refused.setupFailed(err)
			}
			sec.log.Info("kwik: secondary path setup failed", "remote", conn.RemoteAddr().String(), "err", err)
			conn.CloseWithError(quic.ApplicationErrorCode(InternalError), "handshake failed")
			return
		}
		sec.countRefusal(reason)
		sec.log.Warn("kwik: path refused", "remote", conn.RemoteAddr().String(), "err", err)
		conn.CloseWithError(quic.ApplicationErrorCode(PathRefused), reason.Error())
		return
	}
	sec.mu.Lock()
	if sec.ctx.Err() != nil {
		sec.mu.Unlock()
		conn.CloseWithError(quic.ApplicationErrorCode(NoError), "secondary closing")
		return
	}
	sec.paths[p] = struct{}{}
	sec.mu.Unlock()
	sec.stats.pathsAdmitted.Add(1)
	sec.stats.pathsOpen.Add(1)
	sec.log.Debug("kwik: path admitted", "remote", conn.RemoteAddr().String(), "session", p.sessionID, "path", p.id)
	p.readCommands()
	// A no-op if readCommands closed it already, or the client did.
	p.conn.CloseWithError(quic.ApplicationErrorCode(NoError), "secondary closing")
	p.cancel()
	sec.mu.Lock()
	delete(sec.paths, p)
	sec.mu.Unlock()
	sec.stats.pathsOpen.Add(^uint64(0))
}

// refusalReason returns the refusal sentinel err matches, or nil.
func refusalReason(err error) error {
	for _, r := range refusals {
		if errors.Is(err, r) {
			return r
		}
	}
	return nil
}

func (sec *Secondary) countRefusal(reason error) {
	c := &sec.stats
	switch reason {
	case ErrTokenMissing:
		c.tokMissing.Add(1)
	case ErrTokenInvalid:
		c.tokInvalid.Add(1)
	case ErrTokenExpired:
		c.tokExpired.Add(1)
	case ErrTokenWrongSecondary:
		c.tokWrong.Add(1)
	case ErrTokenReused:
		c.tokReused.Add(1)
	}
}

// admit runs the secondary side of a path's handshake: it reads the
// client's SETTINGS and token (ADD_PATH), checks the token and answers with
// its own SETTINGS. It returns an error matching a refusal sentinel if the
// token is missing or not acceptable.
func (sec *Secondary) admit(conn *quic.Conn) (*secPath, error) {
	ctx, cancel := context.WithTimeout(sec.ctx, sec.conf.SetupTimeout)
	defer cancel()
	ctrl, err := conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("kwik: accept control stream: %w", err)
	}
	dl, _ := ctx.Deadline()
	ctrl.SetReadDeadline(dl)
	stop := context.AfterFunc(sec.ctx, func() { ctrl.SetReadDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReaderSize(ctrl, 512)
	f, _, err := wire.ReadControlFrame(br, sec.conf.MaxControlFrameSize, nil)
	if err != nil {
		return nil, fmt.Errorf("kwik: read SETTINGS: %w", err)
	}
	peer, err := checkSettings(f)
	if err != nil {
		return nil, err
	}
	f, _, err = wire.ReadControlFrame(br, sec.conf.MaxControlFrameSize, nil)
	switch {
	case err != nil && (isConnError(err) || sec.ctx.Err() != nil):
		return nil, fmt.Errorf("kwik: read path token: %w", err)
	case errors.Is(err, wire.ErrMalformed):
		return nil, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	case err != nil: // end of stream, deadline, oversized frame
		return nil, fmt.Errorf("%w: %w", ErrTokenMissing, err)
	}
	ap, ok := f.(*wire.AddPath)
	if !ok {
		return nil, fmt.Errorf("%w: got %v", ErrTokenMissing, f.Type())
	}
	now := sec.conf.now()
	tok, err := sec.keys.verifyToken(ap.Token, sec.addr, now)
	if err != nil {
		return nil, err
	}
	if tok.PathID != ap.PathID {
		return nil, fmt.Errorf("%w: token for path %d presented for path %d", ErrTokenInvalid, tok.PathID, ap.PathID)
	}
	if err := sec.useToken(tok, unixMilli(now)); err != nil {
		return nil, err
	}
	ctrl.SetReadDeadline(time.Time{})
	if err := writeFrames(ctrl, localSettings(sec.conf)); err != nil {
		return nil, fmt.Errorf("kwik: send SETTINGS: %w", err)
	}
	pctx, pcancel := context.WithCancel(sec.ctx)
	return &secPath{
		sec:       sec,
		conn:      conn,
		ctrl:      ctrl,
		br:        br,
		sessionID: tok.SessionID,
		id:        PathID(tok.PathID),
		maxFrame:  int(min(uint64(sec.conf.MaxDataFramePayload), peer.MaxDataFramePayload)),
		ctx:       pctx,
		cancel:    pcancel,
		open:      make(chan struct{}, sec.conf.MaxCommandsPerPath),
	}, nil
}

// useToken records an admitted token, refusing one admitted before. Tokens
// are forgotten once expired, when they can no longer be presented.
func (sec *Secondary) useToken(tok *wire.PathToken, now uint64) error {
	sec.mu.Lock()
	defer sec.mu.Unlock()
	for k, exp := range sec.used {
		if exp < now {
			delete(sec.used, k)
		}
	}
	k := [2]uint64{tok.SessionID, tok.PathID}
	if _, ok := sec.used[k]; ok {
		return ErrTokenReused
	}
	sec.used[k] = tok.Expiry
	return nil
}

// secPath is a path admitted by a secondary: a client's connection on
// behalf of one session of the primary.
type secPath struct {
	sec       *Secondary
	conn      *quic.Conn
	ctrl      *quic.Stream
	br        *bufio.Reader // reads ctrl; owned by readCommands
	sessionID uint64
	id        PathID
	maxFrame  int
	ctx       context.Context // done when the path ends
	cancel    context.CancelFunc
	lastSeq   uint64        // sequence number of the last accepted command; owned by readCommands
	open      chan struct{} // semaphore of Config.MaxCommandsPerPath: commands handed over, not yet done
	stalled   atomic.Bool   // a write timed out and closed the path: counted and logged once
}

// readCommands reads RAW_DATA frames until the path ends and hands the
// verified commands to AcceptCommand. Any other frame, or a malformed one,
// closes the path.
func (p *secPath) readCommands() {
	sec := p.sec
	stop := context.AfterFunc(p.ctx, func() { p.ctrl.SetReadDeadline(time.Now()) })
	defer stop()
	var buf []byte
	bad := 0 // commands refused as malformed, forged, misdirected or replayed
	for {
		f, nbuf, err := readControlFrameTimed(p.ctrl, p.br, sec.conf.MaxControlFrameSize, sec.conf.FrameTimeout, buf)
		buf = nbuf
		if err == nil && p.ctx.Err() != nil {
			// The path ended while a frame was read, and its deadline
			// (set by stop's callback) may have been cleared.
			return
		}
		if err != nil {
			if p.ctx.Err() == nil && !isConnError(err) {
				se := controlReadError(err)
				p.conn.CloseWithError(quic.ApplicationErrorCode(se.Code), se.Message)
			}
			return
		}
		rd, ok := f.(*wire.RawData)
		if !ok {
			p.conn.CloseWithError(quic.ApplicationErrorCode(ProtocolViolation), fmt.Sprintf("unexpected control frame %v", f.Type()))
			return
		}
		c, err := p.verify(rd)
		if err != nil {
			sec.log.Warn("kwik: command refused", "session", p.sessionID, "path", p.id, "err", err)
			if !errors.Is(err, errCommandExpired) {
				if bad++; bad >= maxBadCommands {
					p.conn.CloseWithError(quic.ApplicationErrorCode(ProtocolViolation),
						fmt.Sprintf("%d relayed commands refused, the last: %v", bad, err))
					return
				}
			}
			continue
		}
		sec.stats.cmdAccepted.Add(1)
		// The path's share of the commands being served: it reads no
		// further command while MaxCommandsPerPath of its own are open.
		select {
		case p.open <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		select {
		case sec.cmds <- c:
		case <-p.ctx.Done():
			c.done()
			return
		}
	}
}

// verify checks a relayed command and counts a refusal.
func (p *secPath) verify(rd *wire.RawData) (*Command, error) {
	c := &p.sec.stats
	wc, err := p.sec.keys.verifyCommand(rd.Command)
	switch {
	case err != nil:
	case rd.PathID != uint64(p.id) || wc.PathID != uint64(p.id) || wc.SessionID != p.sessionID:
		err = fmt.Errorf("%w: session %x path %d on session %x path %d", errCommandPath, wc.SessionID, wc.PathID, p.sessionID, p.id)
	case wc.Seq <= p.lastSeq:
		c.cmdReplayed.Add(1)
		return nil, fmt.Errorf("%w: sequence number %d after %d", errCommandReplayed, wc.Seq, p.lastSeq)
	case wc.Expiry < unixMilli(p.sec.conf.now()):
		c.cmdExpired.Add(1)
		return nil, errCommandExpired
	default:
		p.lastSeq = wc.Seq
		return &Command{
			p:       p,
			grant:   Grant{StreamID: StreamID(wc.Grant.StreamID), Offset: wc.Grant.Offset, Length: wc.Grant.Length},
			payload: wc.Payload,
			seq:     wc.Seq,
		}, nil
	}
	c.cmdRefused.Add(1)
	return nil, err
}

// Command is a verified command from the primary, relayed by a client over
// one path. Its grant lets the secondary write the granted range of a
// logical stream of the client's session; Write and WriteAt send data
// frames over the path the command came on. Methods are safe for concurrent
// use; writes are serialized.
type Command struct {
	p       *secPath
	grant   Grant
	payload []byte
	seq     uint64

	mu       sync.Mutex       // serializes writes; guards the fields below
	written  uint64           // bytes written by Write
	u        *quic.SendStream // the data stream, opened by the first write
	hdrSent  bool
	answered bool // a data stream was opened for the command (or Close sent an empty one)

	doneOnce sync.Once // gives back the path's slot (secPath.open)
}

// done gives back the command's slot of its path's share, once.
func (c *Command) done() {
	c.doneOnce.Do(func() { <-c.p.open })
}

var _ io.WriterAt = (*Command)(nil)

// Grant returns the range the command lets this secondary write.
func (c *Command) Grant() Grant { return c.grant }

// Payload returns the primary's opaque command. The caller must not modify it.
func (c *Command) Payload() []byte { return c.payload }

// PathID returns the path the command came on.
func (c *Command) PathID() PathID { return c.p.id }

// SessionID returns the primary's ID of the session the path belongs to.
func (c *Command) SessionID() uint64 { return c.p.sessionID }

// Seq returns the command's sequence number on its path.
func (c *Command) Seq() uint64 { return c.seq }

// RemoteAddr returns the client's address.
func (c *Command) RemoteAddr() net.Addr { return c.p.conn.RemoteAddr() }

// Context returns a context that is done when the command's path ends.
func (c *Command) Context() context.Context { return c.p.ctx }

// Write sends p as the next bytes of the grant: the first Write starts at
// Grant().Offset, each later one where the previous ended. A Write that
// would go beyond the grant sends nothing and fails with ErrOutsideGrant.
// The data stream closes by itself once the whole grant is written.
func (c *Command) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if uint64(len(p)) > c.grant.Length-c.written {
		return 0, fmt.Errorf("kwik: Write of %d bytes with %d left of the grant: %w", len(p), c.grant.Length-c.written, ErrOutsideGrant)
	}
	n, err := c.writeLocked(c.grant.Offset+c.written, p, false)
	c.written += uint64(n)
	if err == nil && c.written == c.grant.Length {
		c.closeLocked()
		c.done()
	}
	return n, err
}

// WriteAt sends p at stream offset off, which must lie, with p, within the
// grant (ErrOutsideGrant otherwise, and nothing is sent).
func (c *Command) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.grant
	if off < 0 || uint64(off) < g.Offset || uint64(off) > g.End() || uint64(len(p)) > g.End()-uint64(off) {
		return 0, fmt.Errorf("kwik: WriteAt [%d, +%d) outside the grant [%d, %d): %w", off, len(p), g.Offset, g.End(), ErrOutsideGrant)
	}
	return c.writeLocked(uint64(off), p, false)
}

// Close closes the command's data stream; later writes open another. Call
// it when done writing, unless Write completed the grant, and also when the
// command cannot be served. It is idempotent.
//
// The first Close of a command for which nothing was written (the
// secondary cannot serve it) sends an empty data stream, the stream header
// alone, which the client reads and drops (SecondaryStats.EmptyAnswers):
// a client closes a path that sends no data after it was given work
// (Config.PathStallTimeout), and this answer tells it that the secondary
// is alive, only unable to serve that command.
func (c *Command) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.answered {
		c.answered = true
		c.answerEmptyLocked()
	}
	c.closeLocked()
	c.done()
	return nil
}

// answerEmptyLocked sends an empty data stream for the command's stream,
// unless the path has ended or the client's stream limit is reached (then
// the client judges the path by its other data). It does not block: a
// header fits any stream's initial window. Called with c.mu held.
func (c *Command) answerEmptyLocked() {
	p := c.p
	if p.ctx.Err() != nil {
		return
	}
	u, err := p.conn.OpenUniStream()
	if err != nil {
		return
	}
	if _, err := u.Write(wire.AppendStreamHeader(nil, uint64(c.grant.StreamID))); err != nil {
		u.CancelWrite(quic.StreamErrorCode(InternalError))
		return
	}
	u.Close()
	p.sec.stats.emptyAnswers.Add(1)
}

func (c *Command) closeLocked() {
	if c.u != nil {
		c.u.Close()
		c.u = nil
	}
}

// writeLocked sends data at off in frames of at most the path's frame
// size, with FIN on the last one if fin (only tests send FIN: a client
// drops it). Called with c.mu held; no grant check.
func (c *Command) writeLocked(off uint64, data []byte, fin bool) (int, error) {
	p := c.p
	if len(data) == 0 && !fin {
		return 0, nil
	}
	timeout := p.sec.conf.WriteTimeout
	if c.u == nil {
		ctx, cancel := context.WithTimeoutCause(p.ctx, timeout, os.ErrDeadlineExceeded)
		u, err := p.conn.OpenUniStreamSync(ctx)
		cancel()
		if err != nil {
			if errors.Is(context.Cause(ctx), os.ErrDeadlineExceeded) && p.ctx.Err() == nil {
				err = os.ErrDeadlineExceeded
			}
			return 0, c.writeError(err)
		}
		c.u, c.hdrSent, c.answered = u, false, true
	}
	// Each frame must leave within WriteTimeout: a client that stops
	// reading its path gets it closed (writeError), and the command's
	// slot back.
	c.u.SetWriteDeadline(time.Now().Add(timeout))
	written := 0
	var hdr [wire.MaxStreamHeaderLen + wire.MaxDataHeaderLen]byte
	for first := true; first || written < len(data); first = false {
		n := min(len(data)-written, p.maxFrame)
		b := hdr[:0]
		if !c.hdrSent {
			b = wire.AppendStreamHeader(b, uint64(c.grant.StreamID))
		}
		last := written+n == len(data)
		b = wire.DataHeader{Offset: off + uint64(written), Length: uint64(n), Fin: fin && last}.Append(b)
		if _, err := c.u.Write(b); err != nil {
			return written, c.writeError(err)
		}
		c.hdrSent = true
		if _, err := c.u.Write(data[written : written+n]); err != nil {
			return written, c.writeError(err)
		}
		written += n
		p.sec.stats.dataFramesSent.Add(1)
		p.sec.stats.dataBytesSent.Add(uint64(n))
	}
	return written, nil
}

// writeError translates an error from the path's connection or data stream.
func (c *Command) writeError(err error) error {
	switch {
	case isConnError(err):
		return fmt.Errorf("kwik: path %d: %w", c.p.id, sessionErrorFromQUIC(err))
	case c.p.ctx.Err() != nil:
		return fmt.Errorf("kwik: path %d: %w", c.p.id, ErrClosed)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The client takes none of the path's data: the path goes, and
		// with it every command it holds.
		// Several commands' writes may time out together: the first
		// closes the path, and the path is counted and logged once.
		p := c.p
		msg := fmt.Sprintf("the client took no data for %v", p.sec.conf.WriteTimeout)
		if p.stalled.CompareAndSwap(false, true) {
			p.sec.stats.pathsWriteStalled.Add(1)
			p.sec.log.Warn("kwik: closing a path whose client reads nothing", "remote", p.conn.RemoteAddr().String(),
				"session", p.sessionID, "path", p.id, "timeout", p.sec.conf.WriteTimeout)
			p.conn.CloseWithError(quic.ApplicationErrorCode(WriteStalled), msg)
			p.cancel()
		}
		return fmt.Errorf("kwik: path %d: %s: %w", p.id, msg, errDeadline)
	}
	return fmt.Errorf("kwik: command data stream: %w", err)
}
