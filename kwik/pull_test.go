package kwik

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// pullingRead starts a Read of st and waits until it is blocked pulling
// from the stream's QUIC data stream; the result arrives on the channel.
func pullingRead(t *testing.T, st *Stream, p []byte) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		n, err := st.Read(p)
		if err == nil && n == 0 {
			err = errors.New("Read returned 0, nil")
		}
		done <- err
	}()
	if !eventually(func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.pulling
	}) {
		t.Fatal("Read never started pulling")
	}
	return done
}

// openWithData opens a client stream, writes data and returns both ends
// after the server has read data, so that the server's Read of the stream
// pulls from its data stream.
func openWithData(t *testing.T, p *pair, data string) (cli, srv *Stream) {
	t.Helper()
	ctx := testCtx(t)
	cli, err := p.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	srv, err = p.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(data))
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != data {
		t.Fatalf("read %q, %v", buf, err)
	}
	return cli, srv
}

// TestSecondSourceInterruptsPull checks the hand-over from pull to push
// mode: a Read blocked on the stream's only data stream is woken when a
// second data stream for the same logical stream arrives, and sees its data.
func TestSecondSourceInterruptsPull(t *testing.T) {
	p := newPair(t, nil)
	cli, srv := openWithData(t, p, "abc")
	buf := make([]byte, 10)
	done := pullingRead(t, srv, buf)
	rawData(t, p.cli, dataFrames(0, frame{off: 3, data: []byte("def")}))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(buf[:3]) != "def" {
		t.Fatalf("read %q after the second source arrived", buf[:3])
	}
	// The original writer goes on from offset 3: its copy of "def" is a
	// duplicate, the rest is new.
	if _, err := cli.Write([]byte("defghi")); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	rest, err := io.ReadAll(srv)
	if err != nil || string(rest) != "ghi" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if !eventually(func() bool { return p.srv.Stats().Paths[0].DuplicateBytes == 3 }) {
		t.Fatalf("duplicates %d, want 3", p.srv.Stats().Paths[0].DuplicateBytes)
	}
}

// TestReadDeadlineWhilePulling checks that a deadline interrupts a Read
// blocked on the data stream and that the stream stays intact.
func TestReadDeadlineWhilePulling(t *testing.T) {
	p := newPair(t, nil)
	cli, srv := openWithData(t, p, "x")
	srv.SetReadDeadline(time.Now().Add(time.Hour))
	done := pullingRead(t, srv, make([]byte, 10))
	srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	srv.SetReadDeadline(time.Time{})
	payload := make([]byte, 300<<10)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		cli.Write(payload)
		cli.Close()
	}()
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}

// TestCancelReadWhilePulling checks CancelRead from another goroutine while
// Read is blocked on the data stream.
func TestCancelReadWhilePulling(t *testing.T) {
	p := newPair(t, nil)
	cli, srv := openWithData(t, p, "x")
	done := pullingRead(t, srv, make([]byte, 10))
	srv.CancelRead(9)
	if err := <-done; !errors.Is(err, &StreamError{Code: 9}) {
		t.Fatalf("Read: err = %v, want local stream error 9", err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := cli.Write(buf); err != nil {
			if !errors.Is(err, &StreamError{Code: 9, Remote: true}) {
				t.Fatalf("Write: err = %v, want remote stream error 9", err)
			}
			break
		}
	}
}
