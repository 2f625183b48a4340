package kwik

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// TestSecondaryOutsideGrantIsDropped lets a secondary write around its
// grant and end the stream: the client keeps only the granted bytes,
// counts the rest exactly, drops the FIN and keeps the session.
func TestSecondaryOutsideGrantIsDropped(t *testing.T) {
	const k = 50 << 10
	c := newCluster(t, 1, nil)
	wrote := make(chan error, 1)
	serveCommands(t, c.secs[0], func(cmd *Command) {
		g := cmd.Grant()
		cmd.mu.Lock()
		defer cmd.mu.Unlock()
		// [g.Offset-k, g.End()+k): junk, the granted bytes, junk, as one
		// frame; then a bare FIN inside the grant.
		data := append(append(bytes.Repeat([]byte{0xee}, k), pattern(g.Offset, int(g.Length))...), bytes.Repeat([]byte{0xee}, k)...)
		_, err := cmd.writeLocked(g.Offset-k, data, false)
		if err == nil {
			_, err = cmd.writeLocked(g.Offset+10, nil, true)
		}
		wrote <- err
	})
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	off := reserve(t, srv, 6*k)
	grant := Grant{StreamID: srv.StreamID(), Offset: off + 2*k, Length: 2 * k}
	if err := c.srv.SendRawData(id, grant, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// Only then the primary sends the rest: had the junk been kept, it
	// would be read in place of the primary's bytes.
	waitFor(t, "the secondary's frames", func() bool {
		ps := pathStats(t, c.cli, id)
		return ps.DeliveredBytes+ps.OutOfGrantBytes == 4*k && ps.DataFramesReceived == 2 && ps.OutOfGrantFrames == 2
	})
	if _, err := srv.WriteAt(pattern(0, 2*k), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.WriteAt(pattern(4*k, 2*k), 4*k); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readDigest(t, cli); n != 6*k || sum != sha256.Sum256(pattern(0, 6*k)) {
		t.Fatalf("read %d bytes, digest mismatch", n)
	}
	ps := pathStats(t, c.cli, id)
	if ps.DeliveredBytes != 2*k || ps.OutOfGrantBytes != 2*k || ps.OutOfGrantFrames != 2 || ps.RejectedBytes != 0 || ps.State != PathUp {
		t.Fatalf("delivered %d, out of grant %d in %d frames, rejected %d, state %v; want %d, %d in 2, 0, up",
			ps.DeliveredBytes, ps.OutOfGrantBytes, ps.OutOfGrantFrames, ps.RejectedBytes, ps.State, 2*k, 2*k)
	}
	waitFor(t, "the report", func() bool {
		r := pathStats(t, c.srv, id).Reported
		return r != nil && r.OutOfGrantBytes == 2*k && r.OutOfGrantFrames == 2
	})
	c.request(t)
	if c.cli.Context().Err() != nil {
		t.Fatal("session closed")
	}
}

// TestSecondaryCannotOpenStream lets a secondary send data for a stream
// the primary has not opened and for one the client never opened: both
// are refused and counted, and the primary's later stream of the same ID
// carries the primary's bytes only.
func TestSecondaryCannotOpenStream(t *testing.T) {
	c := newCluster(t, 1, nil)
	wrote := make(chan error, 1)
	serveCommands(t, c.secs[0], func(cmd *Command) {
		var err error
		for _, id := range []StreamID{1, 8} { // the primary's next stream; a client stream not opened
			var u interface {
				Write([]byte) (int, error)
				Close() error
			}
			if u, err = cmd.p.conn.OpenUniStreamSync(cmd.Context()); err != nil {
				break
			}
			b := wire.AppendStreamHeader(nil, uint64(id))
			b = wire.DataHeader{Offset: 0, Length: 1000}.Append(b)
			if _, err = u.Write(append(b, bytes.Repeat([]byte("X"), 1000)...)); err != nil {
				break
			}
			u.Close()
		}
		wrote <- err
	})
	id := c.addPaths(t)[0]
	_, srv := c.request(t) // stream 0, for the command's grant
	if _, err := srv.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Length: 2}, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// A frame is counted after its bytes: wait for both counts.
	waitFor(t, "the refused streams", func() bool {
		ps := pathStats(t, c.cli, id)
		return ps.RefusedStreams == 2 && ps.OutOfGrantBytes == 2000 && ps.OutOfGrantFrames == 2
	})
	if ps := pathStats(t, c.cli, id); ps.RefusedStreams != 2 || ps.OutOfGrantBytes != 2000 || ps.OutOfGrantFrames != 2 || ps.DeliveredBytes != 0 {
		t.Fatalf("refused %d streams, out of grant %d bytes in %d frames, delivered %d; want 2, 2000 in 2, 0",
			ps.RefusedStreams, ps.OutOfGrantBytes, ps.OutOfGrantFrames, ps.DeliveredBytes)
	}

	own, err := c.srv.OpenStreamSync(testCtx(t))
	if err != nil || own.StreamID() != 1 {
		t.Fatalf("stream %v, %v", own, err)
	}
	own.Write([]byte("primary"))
	own.Close()
	st, err := c.cli.AcceptStream(testCtx(t))
	if err != nil || st.StreamID() != 1 {
		t.Fatalf("accepted %v, %v", st, err)
	}
	if got, err := io.ReadAll(st); err != nil || string(got) != "primary" {
		t.Fatalf("stream 1: %q, %v", got, err)
	}
	waitFor(t, "the report", func() bool {
		r := pathStats(t, c.srv, id).Reported
		return r != nil && r.RefusedStreams == 2
	})
}

// TestSecondaryRefusesBadCommands relays forged, altered and misdirected
// commands to a secondary: each is refused and counted, and the genuine
// command that follows is the first one delivered.
func TestSecondaryRefusesBadCommands(t *testing.T) {
	c := newCluster(t, 2, nil)
	ids := c.addPaths(t)
	_, srv := c.request(t)
	if _, err := srv.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	g := Grant{StreamID: srv.StreamID(), Offset: 0, Length: 100}
	exp := time.Now().Add(time.Minute)
	otherKeys := testKeys(t, 0x55) // another primary's key
	altered := c.command(ids[0], 1, exp, g, "read", nil)
	altered[len(altered)-wire.SigLen-6] ^= 1 // a payload byte
	tests := []struct {
		name string
		b    []byte
	}{
		{"forged with another key", c.command(ids[0], 1, exp, g, "read", otherKeys)},
		{"altered payload", altered},
		{"for the other path", c.command(ids[1], 1, exp, g, "read", nil)},
		{"for another session", otherKeys.signCommand(&wire.Command{SessionID: c.srv.id + 1, PathID: uint64(ids[0]), Seq: 1, Expiry: unixMilli(exp), Grant: wire.Grant{Length: 1}})},
		{"truncated", c.command(ids[0], 1, exp, g, "read", nil)[:30]},
	}
	for _, tt := range tests {
		c.pushCommand(t, ids[0], tt.b)
	}
	if err := c.srv.SendRawData(ids[0], g, []byte("genuine")); err != nil {
		t.Fatal(err)
	}
	cmd, err := c.secs[0].AcceptCommand(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if string(cmd.Payload()) != "genuine" || cmd.Seq() != 1 || cmd.Grant() != g || cmd.PathID() != ids[0] || cmd.SessionID() != c.srv.id {
		t.Fatalf("first command delivered: %q seq %d grant %+v", cmd.Payload(), cmd.Seq(), cmd.Grant())
	}
	st := c.secs[0].Stats()
	if st.CommandsRefused != uint64(len(tests)) || st.CommandsAccepted != 1 || st.CommandsReplayed != 0 || st.CommandsExpired != 0 {
		t.Fatalf("stats %+v; want %d refused, 1 accepted", st, len(tests))
	}
	if c.cli.Context().Err() != nil || pathStats(t, c.cli, ids[0]).State != PathUp {
		t.Fatal("session or path ended")
	}
}

// TestSecondaryRefusesReplayedAndExpiredCommands relays a genuine command
// twice and an expired one: the copy and the expired one are refused and
// counted.
func TestSecondaryRefusesReplayedAndExpiredCommands(t *testing.T) {
	c := newCluster(t, 1, nil)
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	if _, err := srv.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	g := Grant{StreamID: srv.StreamID(), Offset: 0, Length: 100}
	now := time.Now()
	first := c.command(id, 1, now.Add(time.Minute), g, "first", nil)
	c.pushCommand(t, id, first)
	c.pushCommand(t, id, first)                                                  // replayed
	c.pushCommand(t, id, c.command(id, 2, now.Add(-time.Second), g, "old", nil)) // expired
	c.pushCommand(t, id, c.command(id, 3, now.Add(time.Minute), g, "third", nil))
	var got []string
	for range 2 {
		cmd, err := c.secs[0].AcceptCommand(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(cmd.Payload()))
	}
	if got[0] != "first" || got[1] != "third" {
		t.Fatalf("delivered %q", got)
	}
	if st := c.secs[0].Stats(); st.CommandsAccepted != 2 || st.CommandsReplayed != 1 || st.CommandsExpired != 1 || st.CommandsRefused != 0 {
		t.Fatalf("stats %+v; want 2 accepted, 1 replayed, 1 expired", st)
	}
}

// TestSecondaryRefusesBadTokens presents a missing, wrong, expired, reused
// and misdirected token: each path is refused with a clear error on the
// client and the primary, counted by the secondary, and the session lives.
func TestSecondaryRefusesBadTokens(t *testing.T) {
	c := newCluster(t, 2, func(_, sec, _ *Config) { sec.HandshakeTimeout = 500 * time.Millisecond })
	a, b := c.secs[0], c.secs[1]
	keys := c.srv.keys
	exp := time.Now().Add(time.Minute)
	otherKeys := testKeys(t, 0x55) // another primary's key
	tests := []struct {
		name  string
		sec   *Secondary
		token func(id PathID) []byte
		want  error
		count func(SecondaryStats) uint64
	}{
		{"wrong key", a, func(id PathID) []byte { return otherKeys.issueToken(c.srv.id, id, a.AdvertisedAddr(), exp) },
			ErrTokenInvalid, func(s SecondaryStats) uint64 { return s.TokensInvalid }},
		{"garbage", a, func(PathID) []byte { return []byte("not a token") },
			ErrTokenInvalid, func(s SecondaryStats) uint64 { return s.TokensInvalid }},
		{"expired", a, func(id PathID) []byte {
			return keys.issueToken(c.srv.id, id, a.AdvertisedAddr(), time.Now().Add(-time.Second))
		},
			ErrTokenExpired, func(s SecondaryStats) uint64 { return s.TokensExpired }},
		{"for another secondary", b, func(id PathID) []byte { return keys.issueToken(c.srv.id, id, a.AdvertisedAddr(), exp) },
			ErrTokenWrongSecondary, func(s SecondaryStats) uint64 { return s.TokensWrongSecondary }},
		{"for another path", a, func(id PathID) []byte { return keys.issueToken(c.srv.id, id+1, a.AdvertisedAddr(), exp) },
			ErrTokenInvalid, func(s SecondaryStats) uint64 { return s.TokensInvalid }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.count(tt.sec.Stats())
			err := c.presentToken(t, tt.sec.AdvertisedAddr(), tt.token)
			var pe *PathError
			if !errors.Is(err, tt.want) || !errors.As(err, &pe) || pe.Code != PathRefused || pe.Message != tt.want.Error() {
				t.Fatalf("path error %v, want PATH_REFUSED %v", err, tt.want)
			}
			if got := tt.count(tt.sec.Stats()); got != before+1 {
				t.Fatalf("counter %d, want %d", got, before+1)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		_, cliTLS := testTLS(t)
		_, err := Dial(testCtx(t), a.AdvertisedAddr(), &Config{TLSConfig: cliTLS, Logger: quietLogger()})
		var se *SessionError
		if !errors.Is(err, ErrTokenMissing) || !errors.As(err, &se) || se.Code != PathRefused || !se.Remote {
			t.Fatalf("Dial of a secondary: %v, want a remote PATH_REFUSED matching ErrTokenMissing", err)
		}
		if n := a.Stats().TokensMissing; n != 1 {
			t.Fatalf("TokensMissing = %d", n)
		}
	})

	t.Run("reused", func(t *testing.T) {
		const id = 100
		token := keys.issueToken(c.srv.id, id, b.AdvertisedAddr(), exp)
		conn, _, _, _, err := c.cli.dialSecondary(testCtx(t), id, b.AdvertisedAddr(), "", token)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		_, _, _, _, err = c.cli.dialSecondary(testCtx(t), id, b.AdvertisedAddr(), "", token)
		if pe := pathErrorFrom(id, b.AdvertisedAddr(), err); !errors.Is(pe, ErrTokenReused) || pe.Code != PathRefused {
			t.Fatalf("second use: %v", pe)
		}
		if st := b.Stats(); st.TokensReused != 1 || st.PathsAdmitted != 1 {
			t.Fatalf("stats %+v", st)
		}
	})

	if st := a.Stats(); st.TokensRefused != 5 || st.PathsAdmitted != 0 {
		t.Fatalf("secondary a: %+v", st)
	}
	c.request(t)
	if c.srv.Context().Err() != nil {
		t.Fatal("session closed")
	}
}

// TestAddPathReportsRefusal checks AddPath's error for a secondary that
// does not share the primary's key, and for an expired token.
func TestAddPathReportsRefusal(t *testing.T) {
	t.Run("other cluster", func(t *testing.T) {
		c := newCluster(t, 1, func(_, sec, _ *Config) { sec.VerifyKeys = verifyOnly(t, testKeys(t, 7)).verify })
		_, err := c.srv.AddPath(testCtx(t), c.secs[0].AdvertisedAddr())
		if !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("AddPath: %v, want ErrTokenInvalid", err)
		}
		ev, err := c.srv.NextPathEvent(testCtx(t))
		if err != nil || ev.State != PathFailed || !errors.Is(ev.Err, ErrTokenInvalid) {
			t.Fatalf("event %+v, %v", ev, err)
		}
		if ev, err := c.cli.NextPathEvent(testCtx(t)); err != nil || !errors.Is(ev.Err, ErrTokenInvalid) {
			t.Fatalf("client event %+v, %v", ev, err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		c := newCluster(t, 1, func(prim, _, _ *Config) {
			prim.now = func() time.Time { return time.Now().Add(-2 * DefaultTokenLifetime) }
		})
		_, err := c.srv.AddPath(testCtx(t), c.secs[0].AdvertisedAddr())
		if !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("AddPath: %v, want ErrTokenExpired", err)
		}
		if n := c.secs[0].Stats().TokensExpired; n != 1 {
			t.Fatalf("TokensExpired = %d", n)
		}
	})
}

// TestSecondaryFramingErrorEndsOnlyItsPath sends broken framing from a
// secondary: the client ends that path with the violation's code, tells the
// primary, and keeps the session and the other path.
func TestSecondaryFramingErrorEndsOnlyItsPath(t *testing.T) {
	tests := []struct {
		name string
		send func(cmd *Command) error
		code ErrorCode
		msg  string
	}{
		{"oversized data frame", func(cmd *Command) error {
			b := wire.AppendStreamHeader(nil, uint64(cmd.Grant().StreamID))
			b = wire.DataHeader{Length: DefaultMaxDataFramePayload + 1}.Append(b)
			return rawUni(cmd, b)
		}, FrameSizeError, "exceeds the limit"},
		{"malformed data frame", func(cmd *Command) error {
			return rawUni(cmd, append(wire.AppendStreamHeader(nil, uint64(cmd.Grant().StreamID)), 0, 1, 0x80, 'x'))
		}, ProtocolViolation, "unknown bits"},
		{"control frame", func(cmd *Command) error {
			_, err := cmd.p.ctrl.Write(wire.AppendFrame(nil, &wire.MaxData{Max: 1}))
			return err
		}, ProtocolViolation, "unexpected control frame MAX_DATA on a secondary path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 2, nil)
			serveCommands(t, c.secs[0], func(cmd *Command) {
				if err := tt.send(cmd); err != nil {
					t.Errorf("send: %v", err)
				}
			})
			serveCommands(t, c.secs[1], writePattern(t))
			ids := c.addPaths(t)
			cli, srv := c.request(t)
			off := reserve(t, srv, 200)
			if err := c.srv.SendRawData(ids[0], Grant{StreamID: srv.StreamID(), Offset: off, Length: 100}, nil); err != nil {
				t.Fatal(err)
			}
			ev, err := c.srv.NextPathEvent(testCtx(t))
			var pe *PathError
			if err != nil || ev.Path != ids[0] || ev.State != PathFailed || !errors.As(ev.Err, &pe) ||
				pe.Code != tt.code || !strings.Contains(pe.Message, tt.msg) {
				t.Fatalf("event %+v (%v), %v; want path %d failed with %v %q", ev, ev.Err, err, ids[0], tt.code, tt.msg)
			}
			// The other secondary and the primary finish the stream.
			if err := c.srv.SendRawData(ids[1], Grant{StreamID: srv.StreamID(), Offset: off + 100, Length: 100}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.WriteAt(pattern(off, 100), int64(off)); err != nil {
				t.Fatal(err)
			}
			srv.Close()
			if n, sum := readDigest(t, cli); n != 200 || sum != sha256.Sum256(pattern(0, 200)) {
				t.Fatalf("read %d bytes, digest mismatch", n)
			}
			if c.cli.Context().Err() != nil || pathStats(t, c.cli, ids[1]).State != PathUp {
				t.Fatal("session or other path ended")
			}
		})
	}
}

// rawUni writes b on a new data stream of cmd's path.
func rawUni(cmd *Command, b []byte) error {
	u, err := cmd.p.conn.OpenUniStreamSync(cmd.Context())
	if err != nil {
		return err
	}
	if _, err := u.Write(b); err != nil {
		return err
	}
	return u.Close()
}
