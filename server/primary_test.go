package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

const cs = transfer.MinChunkSize

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fixture struct {
	root string
	data []byte // content of "f.bin"
	srv  *servertest.Server
	log  *logBuffer
	sess *kwik.Session
}

// newFixture serves a root holding f.bin (5 chunks + 3 bytes), dir/,
// symlinks leading out, and dials a raw kwik session to it.
func newFixture(t *testing.T, opts server.PrimaryOptions) *fixture {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(root, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5*cs+3)
	rand.NewChaCha8([32]byte{9}).Read(data)
	if err := os.WriteFile(filepath.Join(root, "f.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"etc": "/etc", "up": "../secret", "c1": "c2", "c2": "dir/../../secret"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	lb := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.Catalog.ChunkSize = cs
	srv := servertest.Start(t, root, &opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := kwik.Dial(ctx, srv.Addr, srv.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return &fixture{root: root, data: data, srv: srv, log: lb, sess: sess}
}

// raw sends msg on a new stream and returns the whole reply.
func (f *fixture) raw(t *testing.T, msg []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return b
}

// request encodes a request by hand, so that invalid ones can be sent.
func request(op transfer.Op, path string, read ...uint64) []byte {
	b := []byte{byte(op)}
	b = binary.AppendUvarint(b, uint64(len(path)))
	b = append(b, path...)
	if len(read) > 0 {
		b = append(b, make([]byte, 32)...)
		for _, v := range read {
			b = binary.AppendUvarint(b, v)
		}
	}
	return b
}

func TestPrimaryRefusesTraversal(t *testing.T) {
	f := newFixture(t, server.PrimaryOptions{})
	paths := []string{"../x", "/etc/passwd", "a/../../x", "a\x00b", "etc/passwd", "up", "c1", "etc"}
	n := 0
	for _, p := range paths {
		for _, op := range []transfer.Op{transfer.OpStat, transfer.OpList, transfer.OpManifest, transfer.OpRead} {
			if op == transfer.OpStat && (p == "up" || p == "c1" || p == "etc") {
				continue // lstat of the link itself is allowed
			}
			var msg []byte
			if op == transfer.OpRead {
				msg = request(op, p, 0, 1)
			} else {
				msg = request(op, p)
			}
			reply := f.raw(t, msg)
			n++
			err := transfer.DecodeError(reply)
			if !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("%v %q: reply %q (%v), want ErrOutsideRoot", op, p, reply, err)
			}
			if bytes.Contains(reply, []byte("secret")) && !strings.Contains(p, "secret") || bytes.Contains(reply, []byte("root:")) {
				t.Errorf("%v %q: reply leaks data: %q", op, p, reply)
			}
		}
	}
	s := f.srv.Primary.Stats()
	if s.OutsideRoot != int64(n) || s.Errors != int64(n) || s.DataBytes != 0 {
		t.Fatalf("stats %+v, want %d refusals and no data", s, n)
	}
	logs := f.log.String()
	_, port, _ := net.SplitHostPort(f.sess.LocalAddr().String())
	peer := net.JoinHostPort("127.0.0.1", port)
	if got := strings.Count(logs, "peer="+peer); got != n || strings.Count(logs, "outside the root") != n {
		t.Fatalf("%d refusals logged (want %d) with the peer address %s:\n%s", got, n, peer, logs)
	}
	// Nothing else was disturbed: the session still works.
	if _, err := transfer.DecodeReply(transfer.OpStat, f.raw(t, request(transfer.OpStat, "f.bin"))); err != nil {
		t.Fatal(err)
	}
}

func TestPrimaryMalformedRequestThenNormal(t *testing.T) {
	f := newFixture(t, server.PrimaryOptions{})
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, transfer.ErrBadRequest},
		{"garbage", []byte{0xde, 0xad, 0xbe, 0xef}, transfer.ErrBadRequest},
		{"reserved op", request(6, "f.bin"), transfer.ErrBadRequest},
		{"truncated", request(transfer.OpStat, "f.bin")[:3], transfer.ErrBadRequest},
		{"trailing", append(request(transfer.OpStat, "f.bin"), 0), transfer.ErrBadRequest},
		{"READ count 0", request(transfer.OpRead, "f.bin", 0, 0), transfer.ErrBadRequest},
		{"READ wrong version", request(transfer.OpRead, "f.bin", 0, 1), transfer.ErrStale},
		{"oversized", bytes.Repeat([]byte{1}, transfer.RequestLimit(1)+100), transfer.ErrTooLarge},
		{"missing file", request(transfer.OpManifest, "nope"), transfer.ErrNotFound},
		{"readlink of a file", request(transfer.OpReadlink, "f.bin"), transfer.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := f.raw(t, tt.msg)
			if err := transfer.DecodeError(reply); !errors.Is(err, tt.want) {
				t.Fatalf("reply %q: %v, want %v", reply, err, tt.want)
			}
			r, err := transfer.DecodeReply(transfer.OpStat, f.raw(t, request(transfer.OpStat, "f.bin")))
			if err != nil || r.Attr.Size != int64(len(f.data)) {
				t.Fatalf("normal request after a bad one: %+v, %v", r, err)
			}
		})
	}
	s := f.srv.Primary.Stats()
	if s.Sessions != 1 || s.Errors != int64(len(tests)) || s.Requests[transfer.OpStat] != int64(len(tests))+2 {
		t.Fatalf("stats %+v", s)
	}
	// By the request's type (0: not decoded) and the reply's status.
	var want [transfer.NumOps][transfer.NumStatus]int64
	want[0][transfer.StatusBadRequest] = 3 // empty, garbage, reserved op
	want[0][transfer.StatusTooLarge] = 1
	want[transfer.OpStat][transfer.StatusBadRequest] = 2 // truncated, trailing
	want[transfer.OpRead][transfer.StatusBadRequest] = 1
	want[transfer.OpRead][transfer.StatusStale] = 1
	want[transfer.OpManifest][transfer.StatusNotFound] = 1
	want[transfer.OpReadlink][transfer.StatusBadRequest] = 1
	if s.ErrorsBy != want {
		t.Errorf("ErrorsBy = %v, want %v", s.ErrorsBy, want)
	}
	if s.Requests[0] != 4 {
		t.Errorf("Requests[0] = %d, want 4 (empty, garbage, reserved op, oversized)", s.Requests[0])
	}
}

func TestPrimaryReadReplyLayout(t *testing.T) {
	f := newFixture(t, server.PrimaryOptions{})
	r, err := transfer.DecodeReply(transfer.OpManifest, f.raw(t, request(transfer.OpManifest, "f.bin")))
	if err != nil {
		t.Fatal(err)
	}
	m := r.Manifest
	for _, run := range [][2]int{{0, 1}, {0, 6}, {2, 3}, {5, 1}} {
		req := transfer.Request{Op: transfer.OpRead, Path: "f.bin", Version: m.Version, First: run[0], Count: run[1]}
		msg, err := req.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		reply := f.raw(t, msg)
		// Byte k of chunk j sits at offset 1 + (j-first)*ChunkSize + k.
		end := min(int64(run[0]+run[1])*cs, int64(len(f.data)))
		want := append([]byte{0}, f.data[run[0]*cs:end]...)
		if !bytes.Equal(reply, want) {
			t.Fatalf("READ %v: %d bytes, want %d (equal %v)", run, len(reply), len(want), bytes.Equal(reply, want))
		}
	}
	if got := f.srv.Primary.Stats().DataBytes; got != int64(cs+len(f.data)+3*cs+3) {
		t.Fatalf("DataBytes = %d", got)
	}
	// Out of range.
	req := transfer.Request{Op: transfer.OpRead, Path: "f.bin", Version: m.Version, First: 5, Count: 2}
	msg, _ := req.MarshalBinary()
	if err := transfer.DecodeError(f.raw(t, msg)); !errors.Is(err, transfer.ErrBadRequest) {
		t.Fatalf("READ beyond the end: %v", err)
	}
}

func TestPrimaryRequestTimeout(t *testing.T) {
	f := newFixture(t, server.PrimaryOptions{RequestTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write(request(transfer.OpStat, "f.bin")[:2]) // and never finish
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(st)
	var se *kwik.StreamError
	if !errors.As(err, &se) || !se.Remote {
		t.Fatalf("read of an unfinished request's stream = %v, want a reset", err)
	}
	if s := f.srv.Primary.Stats(); s.Aborted != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPrimaryLimitsConcurrentRequests(t *testing.T) {
	f := newFixture(t, server.PrimaryOptions{MaxConcurrentRequests: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A holds the only slot: its request never ends.
	a, err := f.sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Write(request(transfer.OpStat, "f.bin")[:2])
	b, err := f.sess.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(request(transfer.OpStat, "f.bin"))
	b.Close()
	b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("B answered while A held the slot: %v", err)
	}
	// A finishes; B is served.
	a.Write(request(transfer.OpStat, "f.bin")[2:])
	a.Close()
	if _, err := io.ReadAll(a); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.DecodeReply(transfer.OpStat, reply); err != nil {
		t.Fatal(err)
	}
}

func TestPrimaryServeStops(t *testing.T) {
	root := t.TempDir()
	p, err := server.NewPrimary(root, &server.PrimaryOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := servertest.Start(t, root, nil) // for its certificates
	ln, err := kwik.Listen("127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	sess, err := kwik.Dial(dctx, ln.Addr().String(), srv.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// A request in progress (never finished) must not delay shutdown.
	st, err := sess.OpenStreamSync(dctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{byte(transfer.OpStat)})
	// Dial returns once the handshake is done, which can be before Serve has
	// taken the session from the listener; cancel only once it is served.
	for p.Stats().ActiveSessions != 1 {
		if dctx.Err() != nil {
			t.Fatal("server never accepted the session")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after cancel", err)
	}
	if s := p.Stats(); s.Sessions != 1 || s.ActiveSessions != 0 {
		t.Fatalf("stats after Serve returned: %+v", s)
	}
	select {
	case <-sess.Context().Done():
	case <-dctx.Done():
		t.Fatal("client session not closed by the server's shutdown")
	}

	// A closed listener ends Serve with an error.
	ln2, err := kwik.Listen("127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- p.Serve(context.Background(), ln2) }()
	ln2.Close()
	if err := <-done2; !errors.Is(err, kwik.ErrClosed) {
		t.Fatalf("Serve after listener close = %v, want ErrClosed", err)
	}
}
