package kwik

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// heapInuse returns the bytes in in-use heap spans after a collection.
func heapInuse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// checkHeapGrowth fails the test if the heap grew by more than bound since
// base, and logs the growth.
func checkHeapGrowth(t *testing.T, what string, base, bound int64) {
	t.Helper()
	grown := heapInuse() - base
	t.Logf("%s: heap grew by %d KiB (bound %d KiB)", what, grown>>10, bound>>10)
	if grown > bound {
		t.Fatalf("%s: heap grew by %d KiB, more than %d KiB", what, grown>>10, bound>>10)
	}
}

// goodCopy starts a normal client's copy on a session of its own to l,
// while a hostile session attacks: size bytes of pattern sent and echoed
// back, hashed on the fly. The returned function waits for the copy and
// fails the test unless every byte came back intact.
func goodCopy(t *testing.T, l *Listener, size int) func() {
	t.Helper()
	_, cliTLS := testTLS(t)
	cli, srv := dialAccept(t, l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	echo(srv)
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			st, err := cli.OpenStreamSync(ctx)
			if err != nil {
				return err
			}
			st.SetDeadline(time.Now().Add(20 * time.Second))
			werr := make(chan error, 1)
			go func() {
				const piece = 64 << 10
				for off := 0; off < size; off += piece {
					if _, err := st.Write(pattern(uint64(off), min(piece, size-off))); err != nil {
						werr <- err
						return
					}
				}
				werr <- st.Close()
			}()
			h := sha256.New()
			n, err := io.Copy(h, st)
			if err != nil {
				return fmt.Errorf("read echo after %d bytes: %w", n, err)
			}
			if err := <-werr; err != nil {
				return fmt.Errorf("write: %w", err)
			}
			if n != int64(size) || !sameSum(h, sha256.Sum256(pattern(0, size))) {
				return fmt.Errorf("echo of %d bytes: got %d bytes, digest mismatch", size, n)
			}
			return nil
		}()
	}()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("normal client: %v", err)
		}
	}
}

func sameSum(h hash.Hash, want [32]byte) bool {
	var got [32]byte
	h.Sum(got[:0])
	return got == want
}

// checkClosed checks that the hostile session was closed by the server
// with code and message, and that the client saw exactly that.
func checkClosed(t *testing.T, p *pair, code ErrorCode, msg string) {
	t.Helper()
	srvErr := closeCause(t, p.srv)
	if srvErr.Code != code || srvErr.Remote || srvErr.Message != msg {
		t.Fatalf("server closed with %v, want local %v: %s", srvErr, code, msg)
	}
	cliErr := closeCause(t, p.cli)
	if cliErr.Code != code || !cliErr.Remote || cliErr.Message != msg {
		t.Fatalf("client sees %v, want remote %v: %s", cliErr, code, msg)
	}
}

func TestListenerRefusesSessionsBeyondMaxSessions(t *testing.T) {
	p := newPair(t, func(srv, _ *Config) { srv.MaxSessions = 2 })
	echo(p.srv)
	_, cliTLS := testTLS(t)
	cc := &Config{TLSConfig: cliTLS, Logger: quietLogger()}
	second, secondSrv := dialAccept(t, p.l, cc)
	echo(secondSrv)
	if n := p.l.Sessions(); n != 2 {
		t.Fatalf("Sessions() = %d, want 2", n)
	}

	start := time.Now()
	s, err := Dial(testCtx(t), p.l.Addr().String(), cc)
	if err == nil {
		s.Close()
		t.Fatal("a third session was set up")
	}
	var se *SessionError
	if !errors.As(err, &se) || se.Code != SessionLimitError || !se.Remote || se.Message != "session limit of 2 reached" {
		t.Fatalf("Dial beyond the limit: %v, want a remote SESSION_LIMIT_ERROR", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	if n := p.l.Sessions(); n != 2 {
		t.Fatalf("Sessions() = %d after a refusal, want 2", n)
	}
	if got, err := roundTrip(testCtx(t), p.cli, []byte("first")); err != nil || string(got) != "first" {
		t.Fatalf("first session: %q, %v", got, err)
	}
	if st := p.l.Stats(); st != (ListenerStats{Sessions: 2, Refused: Refusals{SessionLimit: 1}}) {
		t.Fatalf("Stats() = %+v, want 2 sessions and 1 refused at the session limit", st)
	}

	// A closed session frees its slot.
	second.Close()
	waitFor(t, "the closed session's slot", func() bool { return p.l.Sessions() == 1 })
	third, thirdSrv := dialAccept(t, p.l, cc)
	echo(thirdSrv)
	if got, err := roundTrip(testCtx(t), third, []byte("third")); err != nil || string(got) != "third" {
		t.Fatalf("session after a slot freed: %q, %v", got, err)
	}
}

func TestSecondaryRefusesPathsBeyondMaxSessions(t *testing.T) {
	c := newCluster(t, 1, func(_, sec, _ *Config) { sec.MaxSessions = 1 })
	sec := c.secs[0]
	first := c.addPaths(t)[0]
	_, err := c.srv.AddPath(testCtx(t), sec.AdvertisedAddr())
	var pe *PathError
	if !errors.As(err, &pe) || pe.Code != SessionLimitError || pe.Message != "session limit of 1 reached" {
		t.Fatalf("second path to a secondary with MaxSessions 1: %v", err)
	}
	if st := pathStats(t, c.cli, first); st.State != PathUp {
		t.Fatalf("first path %v", st.State)
	}
	if st := sec.Stats(); st.PathsOpen != 1 || st.PathsAdmitted != 1 || st.Refused != (Refusals{SessionLimit: 1}) {
		t.Fatalf("secondary stats %+v, want 1 path open and 1 refused at the session limit", st)
	}
}

// TestHostileClientOpensThousandsOfStreams opens every stream the server
// allows, each with data the server application never reads, then one
// more: the server holds a bounded amount of memory for them and closes
// the session with STREAM_LIMIT_ERROR; a normal client copying at the same
// time is unaffected.
func TestHostileClientOpensThousandsOfStreams(t *testing.T) {
	const streams = DefaultMaxIncomingStreams
	p := newPair(t, nil) // the server never accepts the streams
	base := heapInuse()
	check := goodCopy(t, p.l, 8<<20)
	for i := range streams {
		rawData(t, p.cli, dataFrames(uint64(2*i), frame{data: make([]byte, 4096)}))
	}
	waitFor(t, "every stream on the server", func() bool {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		return len(p.srv.streams) == streams
	})
	check()
	// Measured in one process: both ends of the streams, 4 KiB of data
	// each and their QUIC state: about 12 KiB per stream in all.
	checkHeapGrowth(t, fmt.Sprintf("%d open streams", streams), base, streams*20<<10)

	rawData(t, p.cli, dataFrames(2*streams, frame{data: []byte("x")}))
	checkClosed(t, p, StreamLimitError, fmt.Sprintf("stream %d beyond the limit of %d streams", 2*streams, streams))
}

// TestHostileClientOpensEmptyDataStreams opens thousands of data streams
// and never sends their headers: the server closes the session after
// FrameTimeout, instead of holding a goroutine per stream for as long as
// the client keeps the connection alive.
func TestHostileClientOpensEmptyDataStreams(t *testing.T) {
	const streams = 2000
	p := newPair(t, func(srv, _ *Config) { srv.FrameTimeout = 2 * time.Second })
	base := heapInuse()
	check := goodCopy(t, p.l, 8<<20)
	for range streams {
		u, err := p.cli.p0.conn.OpenUniStreamSync(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Write([]byte{0x40}); err != nil { // half a stream header
			t.Fatal(err)
		}
	}
	check()
	// Measured in one process: both ends' QUIC streams and the server's
	// reader of each, about 7 KiB per stream.
	checkHeapGrowth(t, fmt.Sprintf("%d streams without headers", streams), base, streams*16<<10)
	checkClosed(t, p, ProtocolViolation, "data stream without its headers after 2s")
}

// TestHostileClientSendsEndlessControlFrame starts a control frame and
// never finishes it: the server closes the session after FrameTimeout.
func TestHostileClientSendsEndlessControlFrame(t *testing.T) {
	p := newPair(t, func(srv, _ *Config) { srv.FrameTimeout = time.Second })
	base := heapInuse()
	check := goodCopy(t, p.l, 8<<20)
	b := quicvarint.Append(nil, uint64(wire.TypeMaxData))
	b = quicvarint.Append(b, DefaultMaxControlFrameSize) // the largest body allowed
	rawControl(t, p.cli, append(b, make([]byte, 100)...))
	check()
	// The server holds at most one control frame body.
	checkHeapGrowth(t, "an endless control frame", base, 4<<20)
	checkClosed(t, p, ProtocolViolation, "control frame not completed in time: 1s")
}

// TestSecondaryClosesPathThatReplaysCommands relays a genuine command and
// then replays it again and again: the secondary serves it once, counts
// the copies and, at the eighth, closes the path with PROTOCOL_VIOLATION.
// Another client's transfer through the same secondary completes.
func TestSecondaryClosesPathThatReplaysCommands(t *testing.T) {
	const size = 4 << 20
	c := newCluster(t, 1, nil)
	sec := c.secs[0]
	serveCommands(t, sec, func(cmd *Command) {
		g := cmd.Grant()
		_, err := cmd.Write(pattern(g.Offset, int(g.Length)))
		// The hostile client's path may close under the write.
		if err != nil && cmd.SessionID() != c.srv.id {
			t.Errorf("secondary write of %+v: %v", g, err)
		}
	})
	hostile := c.addPaths(t)[0]
	base := heapInuse()

	// A normal client, with a path of its own to the secondary, fetches a
	// stream half of which the secondary sends.
	_, cliTLS := testTLS(t)
	good, goodSrv := dialAccept(t, c.l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	gid, err := goodSrv.AddPath(testCtx(t), sec.AdvertisedAddr())
	if err != nil {
		t.Fatal(err)
	}
	goodDone := make(chan error, 1)
	go func() {
		st, err := good.OpenStreamSync(testCtx(t))
		if err == nil {
			_, err = st.Write([]byte("get"))
		}
		if err == nil {
			err = st.Close()
		}
		if err != nil {
			goodDone <- err
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, st)
		if err == nil && (n != size || !sameSum(h, sha256.Sum256(pattern(0, size)))) {
			err = fmt.Errorf("got %d bytes, digest mismatch", n)
		}
		goodDone <- err
	}()
	gst, err := goodSrv.AcceptStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(gst); err != nil {
		t.Fatal(err)
	}

	// The hostile client relays a genuine command, then replays it while
	// the normal transfer runs.
	_, srv := c.request(t)
	g := Grant{StreamID: srv.StreamID(), Offset: reserve(t, srv, 100), Length: 100}
	genuine := c.command(hostile, 1, time.Now().Add(time.Minute), g, string(make([]byte, 32<<10)), nil)
	for range maxBadCommands + 8 {
		c.pushCommand(t, hostile, genuine)
	}

	const unit = 256 << 10
	for off := uint64(0); off < size; off += unit {
		o := reserve(t, gst, unit)
		if (off/unit)%2 == 0 {
			if err := goodSrv.SendRawData(gid, Grant{StreamID: gst.StreamID(), Offset: o, Length: unit}, []byte("unit")); err != nil {
				t.Fatal(err)
			}
		} else if _, err := gst.WriteAt(pattern(o, unit), int64(o)); err != nil {
			t.Fatal(err)
		}
	}
	if err := gst.Close(); err != nil {
		t.Fatal(err)
	}

	ev, err := c.cli.NextPathEvent(testCtx(t))
	for err == nil && ev.State == PathUp {
		ev, err = c.cli.NextPathEvent(testCtx(t))
	}
	want := fmt.Sprintf("%d relayed commands refused, the last: command replayed: sequence number 1 after 1", maxBadCommands)
	var pe *PathError
	if err != nil || ev.Path != hostile || ev.State != PathFailed || !errors.As(ev.Err, &pe) ||
		pe.Code != ProtocolViolation || !pe.Remote || pe.Message != want {
		t.Fatalf("hostile client's path event %+v (%v), %v; want failed with PROTOCOL_VIOLATION: %s", ev, ev.Err, err, want)
	}
	if err := <-goodDone; err != nil {
		t.Fatalf("normal client: %v", err)
	}
	if ps := pathStats(t, good, gid); ps.State != PathUp || ps.DeliveredBytes != size/2 {
		t.Fatalf("normal client's secondary path: %v, %d bytes delivered; want up, %d", ps.State, ps.DeliveredBytes, size/2)
	}
	if st := sec.Stats(); st.CommandsReplayed != maxBadCommands || st.CommandsAccepted != 1+size/unit/2 {
		t.Fatalf("secondary stats %+v; want %d replayed, %d accepted", st, maxBadCommands, 1+size/unit/2)
	}
	if c.cli.Context().Err() != nil {
		t.Fatal("the hostile client's session ended with its path")
	}
	// The secondary kept nothing of the replays: at most one control frame.
	checkHeapGrowth(t, "replayed commands", base, 4<<20)
}

// TestShortTokenLifetime gives tokens and commands a short lifetime and
// moves the secondary's clock past it: a command issued before is refused
// as expired (the path stays up), and a new path cannot be added.
func TestShortTokenLifetime(t *testing.T) {
	const lifetime = 2 * time.Second
	var skew atomic.Int64 // added to the secondary's clock
	c := newCluster(t, 1, func(prim, sec, _ *Config) {
		prim.TokenLifetime = lifetime
		sec.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	accepted := make(chan string, 4)
	serveCommands(t, c.secs[0], func(cmd *Command) { accepted <- string(cmd.Payload()) })
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	g := Grant{StreamID: srv.StreamID(), Offset: reserve(t, srv, 100), Length: 100}
	if err := c.srv.SendRawData(id, g, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-accepted:
		if got != "fresh" {
			t.Fatalf("accepted %q", got)
		}
	case <-testCtx(t).Done():
		t.Fatal("fresh command not accepted")
	}

	skew.Store(int64(lifetime + time.Second))
	if err := c.srv.SendRawData(id, g, []byte("late")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the late command refused", func() bool { return c.secs[0].Stats().CommandsExpired == 1 })
	if st := pathStats(t, c.cli, id); st.State != PathUp {
		t.Fatalf("path %v after an expired command", st.State)
	}
	if _, err := c.srv.AddPath(testCtx(t), c.secs[0].AdvertisedAddr()); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("AddPath with the secondary's clock past the token lifetime: %v, want ErrTokenExpired", err)
	}
	select {
	case got := <-accepted:
		t.Fatalf("expired command %q accepted", got)
	default:
	}
	if st := c.secs[0].Stats(); st.CommandsAccepted != 1 || st.TokensExpired != 1 {
		t.Fatalf("secondary stats %+v", st)
	}
}

func TestLimitDefaults(t *testing.T) {
	srvTLS, _ := testTLS(t)
	c, err := (&Config{TLSConfig: srvTLS}).resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessions != 256 || c.FrameTimeout != 30*time.Second {
		t.Fatalf("MaxSessions %d, FrameTimeout %v; want 256, 30s", c.MaxSessions, c.FrameTimeout)
	}
	if c, err := (&Config{TLSConfig: srvTLS, IdleTimeout: time.Minute}).resolve(); err != nil || c.FrameTimeout != time.Minute {
		t.Fatalf("FrameTimeout %v with a 1-minute IdleTimeout, want the same", c.FrameTimeout)
	}
	if _, err := (&Config{TLSConfig: srvTLS, FrameTimeout: -1}).resolve(); err == nil {
		t.Fatal("negative FrameTimeout accepted")
	}
	a, b := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	unlimited := newSessionLimit(&Config{MaxSessions: -1, MaxSessionsPerSource: -1, MaxSetupsPerSource: -1})
	for range 1000 {
		if r := unlimited.acquire(a); r != "" {
			t.Fatalf("no limits refused a session: %s", r)
		}
	}
	one := newSessionLimit(&Config{MaxSessions: 1, MaxSessionsPerSource: -1, MaxSetupsPerSource: -1})
	if one.acquire(a) != "" || one.acquire(b) != "session limit of 1 reached" {
		t.Fatal("MaxSessions 1: want one slot")
	}
	one.setupDone(a)
	one.release(a)
	if one.acquire(b) != "" || one.open() != 1 {
		t.Fatal("a released slot was not reused")
	}
}

// TestSessionLimitPerSource: one source address holds at most
// MaxSessionsPerSource slots and MaxSetupsPerSource of them in setup;
// other addresses are not held back by it, and released slots come back.
func TestSessionLimitPerSource(t *testing.T) {
	a, b := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")
	sl := newSessionLimit(&Config{MaxSessions: 10, MaxSessionsPerSource: 3, MaxSetupsPerSource: 2})
	for i := range 2 {
		if r := sl.acquire(a); r != "" {
			t.Fatalf("setup %d of a: %s", i, r)
		}
	}
	if r := sl.acquire(a); r != "limit of 2 handshakes per source address reached" {
		t.Fatalf("third setup of a: %q", r)
	}
	sl.setupDone(a)
	sl.setupDone(a)
	if r := sl.acquire(a); r != "" {
		t.Fatalf("third session of a once its setups ended: %s", r)
	}
	sl.setupDone(a)
	if r := sl.acquire(a); r != "limit of 3 sessions per source address reached" {
		t.Fatalf("fourth session of a: %q", r)
	}
	if r := sl.acquire(b); r != "" {
		t.Fatalf("b held back by a: %s", r)
	}
	sl.setupDone(b)
	sl.release(a)
	if r := sl.acquire(a); r != "" || sl.open() != 4 {
		t.Fatalf("a released slot of a: %q, %d open, want 4", r, sl.open())
	}
}

// TestListenerLimitsPerSource dials a listener from 127.0.0.2: beyond
// MaxSessionsPerSource sessions, and beyond MaxSetupsPerSource
// connections that never send SETTINGS (which it closes after
// SetupTimeout), that address is refused at once, while a client from
// 127.0.0.1 sets up a session meanwhile.
func TestListenerLimitsPerSource(t *testing.T) {
	p := newPair(t, func(srv, _ *Config) {
		srv.MaxSessionsPerSource = 4
		srv.MaxSetupsPerSource = 2
		srv.SetupTimeout = time.Second
	})
	echo(p.srv) // the pair's own session, from 127.0.0.1
	_, cliTLS := testTLS(t)
	from2 := &Config{TLSConfig: cliTLS, Logger: quietLogger(), LocalAddr: "127.0.0.2:0"}
	var held []*Session
	for range 2 {
		s, srv := dialAccept(t, p.l, from2)
		echo(srv)
		held = append(held, s)
	}

	// Connections from 127.0.0.2 that stop after the QUIC handshake.
	rawTLS := cliTLS.Clone()
	rawTLS.NextProtos = []string{ALPN}
	rawTLS.ServerName = "127.0.0.1"
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	var raws []*quic.Conn
	for range 2 {
		c, err := tr.Dial(testCtx(t), p.l.Addr().(*net.UDPAddr), rawTLS, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, c)
	}
	waitFor(t, "the silent connections in setup", func() bool { return p.l.Sessions() == 5 })
	start := time.Now()
	for _, want := range []string{"limit of 4 sessions per source address reached", "limit of 2 handshakes per source address reached"} {
		if want == "limit of 2 handshakes per source address reached" {
			held[0].Close() // a session slot free again: the setups are the limit now
			waitFor(t, "the closed session's slot", func() bool { return p.l.Sessions() == 4 })
		}
		s, err := Dial(testCtx(t), p.l.Addr().String(), from2)
		var se *SessionError
		if err == nil {
			s.Close()
			t.Fatalf("a session from 127.0.0.2 beyond the limits was set up (want %q)", want)
		}
		if !errors.As(err, &se) || se.Code != SessionLimitError || se.Message != want {
			t.Fatalf("Dial from 127.0.0.2: %v, want SESSION_LIMIT_ERROR %q", err, want)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusals took %v", d)
	}
	other, otherSrv := dialAccept(t, p.l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	echo(otherSrv)
	if got, err := roundTrip(testCtx(t), other, []byte("local")); err != nil || string(got) != "local" {
		t.Fatalf("a session from 127.0.0.1: %q, %v", got, err)
	}
	for i, c := range raws {
		select {
		case <-c.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("silent connection %d still open 10 s after its SetupTimeout", i)
		}
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("silent connections closed after %v, before their SetupTimeout", d)
	}
	want := Refusals{SourceSessionLimit: 1, SourceSetupLimit: 1, SetupTimeouts: 2}
	waitFor(t, "the setup timeouts counted", func() bool { return p.l.Stats().Refused.SetupTimeouts >= 2 })
	if got := p.l.Stats().Refused; got != want {
		t.Errorf("Stats().Refused = %+v, want %+v", got, want)
	}
}

// hostilePath opens a path to sec as a client that never reads would: a
// QUIC connection that grants the secondary 16 KiB of receive window in
// all, a valid token for path pid of c's session, and then the commands
// cmds relayed, none of whose data it will ever take.
func hostilePath(t *testing.T, c *cluster, sec *Secondary, pid PathID, cmds [][]byte) *quic.Conn {
	t.Helper()
	ctx := testCtx(t)
	_, cliTLS := testTLS(t)
	tlsConf := cliTLS.Clone()
	tlsConf.NextProtos = []string{ALPN}
	tlsConf.ServerName = "127.0.0.1"
	const win = 16 << 10
	conn, err := quic.DialAddr(ctx, sec.Addr().String(), tlsConf, &quic.Config{
		InitialStreamReceiveWindow: win, MaxStreamReceiveWindow: win,
		InitialConnectionReceiveWindow: win, MaxConnectionReceiveWindow: win,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.srv.keys.issueToken(c.srv.id, pid, sec.AdvertisedAddr(), time.Now().Add(time.Minute))
	if err := writeFrames(ctrl, localSettings(c.cli.conf), &wire.AddPath{PathID: uint64(pid), Addr: sec.AdvertisedAddr(), Token: tok}); err != nil {
		t.Fatal(err)
	}
	if _, err := readFirstFrame(ctx, ctrl, bufio.NewReader(ctrl), c.cli.conf, "secondary SETTINGS"); err != nil {
		t.Fatalf("the hostile path was not admitted: %v", err)
	}
	for _, b := range cmds {
		if err := writeFrames(ctrl, &wire.RawData{PathID: uint64(pid), Command: b}); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// TestSecondaryPathShareAndWriteTimeout: a client that never reads its
// secondary path gets at most MaxCommandsPerPath of its commands handed
// over at once (the next once one is done) while another client's path
// is served, and its path is closed with WriteStalled once a command's
// write has waited WriteTimeout for it, which ends the write with an
// error and frees its commands.
func TestSecondaryPathShareAndWriteTimeout(t *testing.T) {
	c := newCluster(t, 1, func(_, sec, _ *Config) {
		sec.MaxCommandsPerPath = 2
		sec.WriteTimeout = 300 * time.Millisecond
	})
	sec := c.secs[0]
	const hostile = PathID(99)
	exp := time.Now().Add(time.Minute)
	g := Grant{StreamID: 1, Offset: 0, Length: 1 << 20}
	var cmds [][]byte
	for seq := range uint64(3) {
		cmds = append(cmds, c.command(hostile, seq+1, exp, g, fmt.Sprintf("hostile %d", seq+1), nil))
	}
	conn := hostilePath(t, c, sec, hostile, cmds)
	var held []*Command
	for range 2 {
		cmd, err := sec.AcceptCommand(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, cmd)
	}

	// The hostile path's share is taken: its third command waits, while
	// the good client's path gets its command at once.
	good := c.addPaths(t)[0]
	_, srv := c.request(t)
	if _, err := srv.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.SendRawData(good, Grant{StreamID: srv.StreamID(), Length: 100}, []byte("good")); err != nil {
		t.Fatal(err)
	}
	cmd, err := sec.AcceptCommand(testCtx(t))
	if err != nil || string(cmd.Payload()) != "good" {
		t.Fatalf("the good path's command: %v, %v; want it before the hostile third", cmd, err)
	}
	cmd.Close()
	held[1].Close()
	third, err := sec.AcceptCommand(testCtx(t))
	if err != nil || string(third.Payload()) != "hostile 3" {
		t.Fatalf("after one hostile command was closed: %v, %v; want hostile 3", third, err)
	}

	// Both held commands write at once: the first write to time out
	// closes the path, which ends the other, and the path is counted once.
	start := time.Now()
	var errs [2]error
	var wg sync.WaitGroup
	for i, cmd := range []*Command{held[0], third} {
		wg.Go(func() { _, errs[i] = cmd.Write(make([]byte, g.Length)) })
	}
	wg.Wait()
	d := time.Since(start)
	if errs[0] == nil || errs[1] == nil || d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("two writes the client does not take: %v and %v after %v; want both to fail after about 300ms", errs[0], errs[1], d)
	}
	if !errors.Is(errs[0], os.ErrDeadlineExceeded) && !errors.Is(errs[1], os.ErrDeadlineExceeded) {
		t.Fatalf("two writes the client does not take: %v and %v; want a deadline error", errs[0], errs[1])
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the hostile connection is still open after its write timed out")
	}
	var appErr *quic.ApplicationError
	if !errors.As(context.Cause(conn.Context()), &appErr) || ErrorCode(appErr.ErrorCode) != WriteStalled {
		t.Errorf("the hostile connection ended with %v, want WRITE_STALLED", context.Cause(conn.Context()))
	}
	if st := sec.Stats(); st.PathsWriteStalled != 1 {
		t.Errorf("PathsWriteStalled = %d, want 1", st.PathsWriteStalled)
	}
	if pathStats(t, c.cli, good).State != PathUp {
		t.Error("the good client's path went down")
	}
}
