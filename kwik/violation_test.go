package kwik

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// rawControl writes b on s's control stream of path 0, bypassing the codec.
func rawControl(t *testing.T, s *Session, b []byte) {
	t.Helper()
	if _, err := s.p0.ctrl.Write(b); err != nil && !isConnError(err) {
		t.Fatal(err)
	}
}

// rawData writes b on a new QUIC data stream of s's path 0. Errors because
// the peer has closed the connection (as it should after a violation) are
// ignored.
func rawData(t *testing.T, s *Session, b []byte) {
	t.Helper()
	u, err := s.p0.conn.OpenUniStreamSync(testCtx(t))
	if err == nil {
		_, err = u.Write(b)
		u.Close()
	}
	if err != nil && !isConnError(err) {
		t.Fatal(err)
	}
}

// dataFrames encodes a data stream for logical stream id.
func dataFrames(id uint64, frames ...frame) []byte {
	b := wire.AppendStreamHeader(nil, id)
	for _, f := range frames {
		b = wire.DataHeader{Offset: f.off, Length: uint64(len(f.data)), Fin: f.fin}.Append(b)
		b = append(b, f.data...)
	}
	return b
}

type frame struct {
	off  uint64
	data []byte
	fin  bool
}

// discardAll reads every stream the session accepts to its end.
func discardAll(s *Session) {
	for {
		st, err := s.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go io.Copy(io.Discard, st)
	}
}

// eventually polls cond for up to five seconds: statistics of data drained
// by background goroutines settle shortly after the reader sees EOF.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

// closeCause waits until s closes and returns why.
func closeCause(t *testing.T, s *Session) *SessionError {
	t.Helper()
	select {
	case <-s.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session still open")
	}
	var se *SessionError
	if !errors.As(context.Cause(s.Context()), &se) {
		t.Fatalf("cause %v is not a *SessionError", context.Cause(s.Context()))
	}
	return se
}

// TestPeerViolationsCloseOnlyThatSession sends each kind of invalid input on
// one session and checks that the server closes it with the right code, the
// client learns that code, and a second session on the same listener keeps
// working.
func TestPeerViolationsCloseOnlyThatSession(t *testing.T) {
	const (
		window   = 100 << 10
		session  = 128 << 10
		maxFrame = 32 << 10
	)
	// unread marks the cases caught even if the server application never
	// reads the stream: control frames and the first frame of every data
	// stream are checked on arrival, and so is all data of a logical stream
	// fed by several data streams; the rest is checked as it is read.
	tests := []struct {
		name    string
		send    func(t *testing.T, cli *Session)
		code    ErrorCode
		message string
		unread  bool
	}{
		{"oversized control frame", func(t *testing.T, cli *Session) {
			// Only the header: the limit is checked before the body is read.
			rawControl(t, cli, []byte{0x01, 0x80, 0x01, 0x00, 0x01})
		}, FrameSizeError, "control frame MAX_DATA of 65537 bytes exceeds the limit of 65536", true},
		{"oversized data frame", func(t *testing.T, cli *Session) {
			b := wire.AppendStreamHeader(nil, 0)
			rawData(t, cli, wire.DataHeader{Length: maxFrame + 1}.Append(b))
		}, FrameSizeError, "data frame of 32769 bytes on stream 0 exceeds the limit of 32768", true},
		{"beyond stream window", func(t *testing.T, cli *Session) {
			rawData(t, cli, dataFrames(0, frame{off: window - 10, data: make([]byte, 11)}))
		}, FlowControlError, "window ends at 102400", true},
		{"beyond session window", func(t *testing.T, cli *Session) {
			// Two data streams per logical stream, as two paths would send:
			// such streams are drained into the reassembly buffer at once,
			// so their data counts against the session window unread.
			rawData(t, cli, dataFrames(0, frame{data: make([]byte, 30<<10)}))
			rawData(t, cli, dataFrames(0, frame{off: 30 << 10, data: make([]byte, 30<<10)}, frame{off: 60 << 10, data: make([]byte, 30<<10)}))
			rawData(t, cli, dataFrames(2, frame{off: 20 << 10, data: make([]byte, 30<<10)}))
			rawData(t, cli, dataFrames(2, frame{off: 50 << 10, data: make([]byte, 30<<10)}))
		}, FlowControlError, "session receive window", true},
		{"data beyond final size", func(t *testing.T, cli *Session) {
			rawData(t, cli, dataFrames(0, frame{data: []byte("0123456789"), fin: true}, frame{off: 10, data: []byte("x")}))
		}, FinalSizeError, "beyond final size 10", false},
		{"conflicting reset", func(t *testing.T, cli *Session) {
			rawData(t, cli, dataFrames(0, frame{data: []byte("0123456789"), fin: true}))
			// Whichever arrives first, the other contradicts its final size.
			rawControl(t, cli, wire.AppendFrame(nil, &wire.ResetStream{StreamID: 0, Code: 1, FinalSize: 5}))
		}, FinalSizeError, "final size 5", true},
		{"too many streams", func(t *testing.T, cli *Session) {
			rawData(t, cli, dataFrames(8, frame{data: []byte("x")}))
		}, StreamLimitError, "stream 8 beyond the limit of 4 streams", true},
		{"stream the server never opened", func(t *testing.T, cli *Session) {
			rawData(t, cli, dataFrames(3, frame{data: []byte("x")}))
		}, ProtocolViolation, "stream 3, which we never opened", true},
		{"reserved frame type", func(t *testing.T, cli *Session) {
			rawControl(t, cli, []byte{0x10, 0x00})
		}, ProtocolViolation, "ADD_PATH", true},
		{"second SETTINGS", func(t *testing.T, cli *Session) {
			rawControl(t, cli, wire.AppendFrame(nil, &wire.Settings{MaxDataFramePayload: 1 << 20, MaxControlFrameSize: 1 << 20}))
		}, ProtocolViolation, "second SETTINGS", true},
		{"malformed control frame", func(t *testing.T, cli *Session) {
			rawControl(t, cli, []byte{0x02, 0x01, 0x05})
		}, ProtocolViolation, "MAX_STREAM_DATA frame: truncated varint", true},
		{"malformed data frame", func(t *testing.T, cli *Session) {
			rawData(t, cli, append(wire.AppendStreamHeader(nil, 0), 0x00, 0x01, 0x80, 'x'))
		}, ProtocolViolation, "unknown bits", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, func(srv, cli *Config) {
				srv.StreamReceiveWindow = window
				srv.SessionReceiveWindow = session
				srv.MaxDataFramePayload = maxFrame
				srv.MaxIncomingStreams = 4
			})
			_, cliTLS := testTLS(t)
			good, goodSrv := dialAccept(t, p.l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
			echo(goodSrv)
			if !tt.unread {
				go discardAll(p.srv)
			}
			// Streams 0 and 2 exist on the client, so that the server's
			// window updates for them are in order.
			for range 2 {
				if _, err := p.cli.OpenStreamSync(testCtx(t)); err != nil {
					t.Fatal(err)
				}
			}

			tt.send(t, p.cli)
			srvErr := closeCause(t, p.srv)
			if srvErr.Code != tt.code || srvErr.Remote || !strings.Contains(srvErr.Message, tt.message) {
				t.Fatalf("server closed with %v, want local %v containing %q", srvErr, tt.code, tt.message)
			}
			cliErr := closeCause(t, p.cli)
			if cliErr.Code != tt.code || !cliErr.Remote || cliErr.Message != srvErr.Message {
				t.Fatalf("client sees %v, want remote %v", cliErr, tt.code)
			}
			got, err := roundTrip(testCtx(t), good, []byte("unaffected"))
			if err != nil || string(got) != "unaffected" {
				t.Fatalf("second session: %q, %v", got, err)
			}
		})
	}
}

// TestDuplicateDataIsDropped feeds one logical stream from its own writer
// and from two extra data streams carrying overlapping copies, as a second
// path would, and checks that the reader sees each byte once and that the
// copies are counted.
func TestDuplicateDataIsDropped(t *testing.T) {
	p := newPair(t, nil)
	ctx := testCtx(t)
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	rawData(t, p.cli, dataFrames(0, frame{off: 3, data: []byte("lo wor")}))
	rawData(t, p.cli, dataFrames(0, frame{off: 6, data: []byte("world")}, frame{off: 0, data: []byte("hello world")}))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(ss)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
	// 11 + 6 + 5 + 11 bytes arrive for an 11-byte stream.
	var stats PathStats
	if !eventually(func() bool {
		stats = p.srv.Stats().Paths[0]
		return stats.DataBytesReceived == 33 && stats.DuplicateBytes == 22
	}) {
		t.Fatalf("received %d, duplicates %d; want 33, 22", stats.DataBytesReceived, stats.DuplicateBytes)
	}
}
