package kwik

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// echo serves every stream the session accepts by copying what it reads
// back to the writer, until the session closes.
func echo(s *Session) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			st, err := s.AcceptStream(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				if _, err := io.Copy(st, st); err != nil {
					st.CancelWrite(InternalError)
					return
				}
				st.Close()
			})
		}
	})
	return &wg
}

// roundTrip sends payload on a new stream and returns the echo.
func roundTrip(ctx context.Context, s *Session, payload []byte) ([]byte, error) {
	st, err := s.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(payload)
		if err == nil {
			err = st.Close()
		}
		werr <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		return nil, err
	}
	return got, <-werr
}

func TestEchoManyConcurrentStreams(t *testing.T) {
	tests := []struct {
		name string
		mod  func(srv, cli *Config)
	}{
		{"default windows", nil},
		{"small windows", func(srv, cli *Config) {
			for _, c := range []*Config{srv, cli} {
				c.StreamReceiveWindow = 100 << 10
				c.SessionReceiveWindow = 300 << 10
				c.MaxDataFramePayload = 16 << 10
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPair(t, tt.mod)
			echo(p.srv)
			ctx := testCtx(t)
			const streams, size = 12, 3 << 20
			var wg sync.WaitGroup
			errs := make(chan error, streams)
			for i := range streams {
				wg.Go(func() {
					payload := make([]byte, size+i*1001)
					rand.Read(payload)
					got, err := roundTrip(ctx, p.cli, payload)
					if err != nil {
						errs <- fmt.Errorf("stream %d: %w", i, err)
						return
					}
					if sha256.Sum256(got) != sha256.Sum256(payload) {
						errs <- fmt.Errorf("stream %d: echo of %d bytes differs (got %d bytes)", i, len(payload), len(got))
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := p.cli.Stats().Paths[0]
			var want uint64
			for i := range streams {
				want += uint64(size + i*1001)
			}
			if st.DataBytesSent != want || st.DataBytesReceived != want || st.DuplicateBytes != 0 {
				t.Errorf("stats: sent %d received %d dup %d, want %d %d 0", st.DataBytesSent, st.DataBytesReceived, st.DuplicateBytes, want, want)
			}
		})
	}
}

func TestOpenStreamSyncBlocksAtPeerLimit(t *testing.T) {
	p := newPair(t, func(srv, cli *Config) { srv.MaxIncomingStreams = 2 })
	ctx := testCtx(t)
	var open [2]*Stream
	for i := range open {
		st, err := p.cli.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		open[i] = st
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.cli.OpenStreamSync(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third OpenStreamSync: err = %v, want context.DeadlineExceeded", err)
	}
	third := make(chan *Stream, 1)
	go func() {
		st, err := p.cli.OpenStreamSync(ctx)
		if err != nil {
			t.Error(err)
		}
		third <- st
	}()
	// Finish stream 0 on both sides; its slot returns to the client.
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-third:
		t.Fatal("OpenStreamSync returned before a stream finished")
	default:
	}
	open[0].Close()
	if b, err := io.ReadAll(ss); err != nil || !bytes.Equal(b, []byte{0}) {
		t.Fatalf("server read %x, %v", b, err)
	}
	ss.Close()
	if b, err := io.ReadAll(open[0]); err != nil || len(b) != 0 {
		t.Fatalf("client read %x, %v", b, err)
	}
	st := <-third
	if st == nil || st.StreamID() != 4 {
		t.Fatalf("third stream %v", st)
	}
}

func TestStreamSlotsAreReused(t *testing.T) {
	p := newPair(t, func(srv, cli *Config) { srv.MaxIncomingStreams = 3 })
	echo(p.srv)
	ctx := testCtx(t)
	for i := range 40 {
		msg := []byte(fmt.Sprintf("request %d", i))
		got, err := roundTrip(ctx, p.cli, msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d: %q, %v", i, got, err)
		}
	}
}

func TestCancelReadFailsPeerWrite(t *testing.T) {
	p := newPair(t, func(srv, cli *Config) { srv.StreamReceiveWindow = 64 << 10 })
	ctx := testCtx(t)
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := st.Write(buf); err != nil {
				werr <- err
				return
			}
		}
	}()
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ss, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	ss.CancelRead(42)
	err = <-werr
	if want := (&StreamError{Code: 42, Remote: true}); !errors.Is(err, want) {
		t.Fatalf("writer: err = %v, want %v", err, want)
	}
	if _, err := ss.Read(make([]byte, 10)); !errors.Is(err, &StreamError{Code: 42}) {
		t.Fatalf("reader after CancelRead: err = %v", err)
	}
	// The session stays usable.
	echo(p.srv)
	if got, err := roundTrip(ctx, p.cli, []byte("still there")); err != nil || string(got) != "still there" {
		t.Fatalf("after cancel: %q, %v", got, err)
	}
}

func TestCancelWriteFailsPeerRead(t *testing.T) {
	p := newPair(t, nil)
	ctx := testCtx(t)
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ss, make([]byte, 7)); err != nil {
		t.Fatal(err)
	}
	st.CancelWrite(7)
	_, err = io.ReadAll(ss)
	var se *StreamError
	if !errors.As(err, &se) || se.Code != 7 || !se.Remote || se.StreamID != 0 {
		t.Fatalf("reader: err = %v, want remote stream error 7 on stream 0", err)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, &StreamError{Code: 7}) {
		t.Fatalf("Write after CancelWrite: err = %v", err)
	}
}

func TestReadDeadline(t *testing.T) {
	p := newPair(t, nil)
	ctx := testCtx(t)
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	n, err := st.Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want deadline exceeded", n, err)
	}
	// A deadline in the past fails at once; clearing it lets data through.
	st.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := st.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %v", err)
	}
	st.SetReadDeadline(time.Time{})
	st.Write([]byte("ping"))
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(ss, make([]byte, 4))
	ss.Write([]byte("pong"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func TestWriteDeadlineWhileBlockedOnCredit(t *testing.T) {
	const window = 64 << 10
	p := newPair(t, func(srv, cli *Config) { srv.StreamReceiveWindow = window })
	ctx := testCtx(t)
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := st.Write(make([]byte, 1<<20))
	if n != window || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %d, %v; want %d, deadline exceeded", n, err, window)
	}
	// The peer reads; with the deadline cleared the rest goes through.
	st.SetWriteDeadline(time.Time{})
	ss, err := p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, ss)
	if n, err := st.Write(make([]byte, 1<<20)); n != 1<<20 || err != nil {
		t.Fatalf("Write after clearing deadline = %d, %v", n, err)
	}
}

func TestDialUntrustedServerFails(t *testing.T) {
	p := newPair(t, nil)
	other, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := other.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	start := time.Now()
	s, err := Dial(ctx, p.l.Addr().String(), &Config{TLSConfig: wrongCA, Logger: quietLogger()})
	if err == nil {
		s.Close()
		t.Fatal("Dial succeeded against a server signed by another CA")
	}
	var certErr *tls.CertificateVerificationError
	if !errors.As(err, &certErr) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("err = %v, want a certificate verification error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	// The listener still serves trusted clients.
	_, cliTLS := testTLS(t)
	cli, srv := dialAccept(t, p.l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	echo(srv)
	if got, err := roundTrip(ctx, cli, []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("trusted client: %q, %v", got, err)
	}
}

func TestCloseWithErrorReachesPeer(t *testing.T) {
	p := newPair(t, nil)
	ctx := testCtx(t)
	accepted := make(chan error, 1)
	go func() {
		_, err := p.srv.AcceptStream(ctx)
		accepted <- err
	}()
	st, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cli.CloseWithError(0x1234, "going away"); err != nil {
		t.Fatal(err)
	}
	err = <-accepted
	var se *SessionError
	if !errors.As(err, &se) || se.Code != 0x1234 || se.Message != "going away" || !se.Remote || !errors.Is(err, ErrClosed) {
		t.Fatalf("server AcceptStream: err = %#v", err)
	}
	if !errors.Is(context.Cause(p.srv.Context()), ErrClosed) {
		t.Fatalf("server context cause = %v", context.Cause(p.srv.Context()))
	}
	if _, err := st.Write([]byte("x")); !errors.As(err, &se) || se.Remote || se.Code != 0x1234 {
		t.Fatalf("client Write after close: %v", err)
	}
	if _, err := p.cli.OpenStreamSync(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("OpenStreamSync after close: %v", err)
	}
}

func TestListenerCloseKeepsSessions(t *testing.T) {
	p := newPair(t, nil)
	echo(p.srv)
	if err := p.l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := p.l.Accept(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if got, err := roundTrip(ctx, p.cli, []byte("alive")); err != nil || string(got) != "alive" {
		t.Fatalf("round trip after listener close: %q, %v", got, err)
	}
}
