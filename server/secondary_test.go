package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// secChunk is the chunk size the tests' primary uses for the offset
// contract of READ replies: byte k of chunk j sits at stream offset
// 1 + j*secChunk + k.
const secChunk = 16 << 10

var secBundle = sync.OnceValues(func() (*certgen.Bundle, error) { return certgen.Generate(nil) })

// secLog collects log output from several goroutines.
type secLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *secLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *secLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secTest is a Secondary serving a temporary root over a real kwik
// secondary, a kwik primary session whose side the test plays, and the
// client session, with a secondary path up.
type secTest struct {
	t        *testing.T
	ctx      context.Context // ends with the test, at most 30 s
	root     string
	s        *Secondary
	ksec     *kwik.Secondary
	srv, cli *kwik.Session
	path     kwik.PathID
	outcomes chan outcome // every command's outcome, from the commandDone hook
	log      *secLog

	cancelServe context.CancelFunc
	served      chan error // Serve's result
}

// newSecTest starts the cluster. setup, if not nil, fills the root first;
// hooks, if not nil, sets test hooks on the Secondary before Serve.
func newSecTest(t *testing.T, opts SecondaryOptions, setup func(root string), hooks func(*Secondary)) *secTest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	b, err := secBundle()
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)

	root := t.TempDir()
	if setup != nil {
		setup(root)
	}
	lb := &secLog{}
	opts.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := NewSecondary(root, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tt := &secTest{t: t, ctx: ctx, root: root, s: s, log: lb, outcomes: make(chan outcome, 100)}
	s.commandDone = func(o outcome) { tt.outcomes <- o }
	if hooks != nil {
		hooks(s)
	}

	ksec, err := kwik.ListenSecondary("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, VerifyKeys: b.VerifyKeys(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ksec.Close() })
	tt.ksec = ksec
	serveCtx, cancelServe := context.WithCancel(context.Background())
	tt.cancelServe, tt.served = cancelServe, make(chan error, 1)
	go func() { tt.served <- s.Serve(serveCtx, ksec) }()
	t.Cleanup(func() {
		cancelServe()
		if err := <-tt.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	ln, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, SigningKey: b.SigningKey, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tt.cli, err = kwik.Dial(ctx, ln.Addr().String(), &kwik.Config{TLSConfig: cliTLS, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.cli.Close() })
	tt.srv, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tt.srv.Close() })
	tt.path, err = tt.srv.AddPath(ctx, ksec.AdvertisedAddr())
	if err != nil {
		t.Fatalf("AddPath: %v", err)
	}
	return tt
}

// writeFile writes a file of n random bytes below root and returns them.
func writeSecFile(t *testing.T, root, name string, n int, seed byte) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// sendChunkPayload encodes a SEND_CHUNK by hand, so that paths
// MarshalBinary refuses can be sent too.
func sendChunkPayload(path string, fileOff uint64) []byte {
	b := []byte{byte(transfer.OpSendChunk)}
	b = binary.AppendUvarint(b, uint64(len(path)))
	b = append(b, path...)
	b = append(b, make([]byte, len(transfer.Hash{}))...)
	return binary.AppendUvarint(b, fileOff)
}

// openReply opens a stream on the primary's side and writes the status
// byte of a READ reply.
func (tt *secTest) openReply() *kwik.Stream {
	tt.t.Helper()
	st, err := tt.srv.OpenStreamSync(tt.ctx)
	if err != nil {
		tt.t.Fatal(err)
	}
	if _, err := st.Write([]byte{byte(transfer.StatusOK)}); err != nil {
		tt.t.Fatal(err)
	}
	return st
}

// delegate reserves the next n bytes of st and grants them to the
// secondary with the given payload, one command per reservation (Reserve
// may return less than asked). It returns the reserved range and the
// number of commands sent.
func (tt *secTest) delegate(st *kwik.Stream, n uint64, payload func(done uint64) []byte) (off uint64, cmds int) {
	tt.t.Helper()
	off = st.SendOffset()
	for done := uint64(0); done < n; {
		o, got, err := st.Reserve(tt.ctx, n-done)
		if err != nil {
			tt.t.Fatalf("Reserve: %v", err)
		}
		if o != off+done {
			tt.t.Fatalf("Reserve at %d, want %d", o, off+done)
		}
		g := kwik.Grant{StreamID: st.StreamID(), Offset: o, Length: got}
		if err := tt.srv.SendRawData(tt.path, g, payload(done)); err != nil {
			tt.t.Fatalf("SendRawData(%+v): %v", g, err)
		}
		done += got
		cmds++
	}
	return off, cmds
}

// readAll accepts the client's side of the next stream and reads it whole.
func (tt *secTest) readAll() []byte {
	tt.t.Helper()
	in, err := tt.cli.AcceptStream(tt.ctx)
	if err != nil {
		tt.t.Fatal(err)
	}
	dl, _ := tt.ctx.Deadline()
	in.SetReadDeadline(dl)
	b, err := io.ReadAll(in)
	if err != nil {
		tt.t.Fatalf("client read: %v", err)
	}
	return b
}

// waitOutcomes waits for n handled commands and counts them by outcome.
func (tt *secTest) waitOutcomes(n int) map[outcome]int {
	tt.t.Helper()
	got := map[outcome]int{}
	for range n {
		select {
		case o := <-tt.outcomes:
			got[o]++
		case <-tt.ctx.Done():
			tt.t.Fatalf("waiting for %d outcomes, got %v", n, got)
		}
	}
	return got
}

// clientPath returns the client's statistics of path id.
func (tt *secTest) clientPath(id kwik.PathID) kwik.PathStats {
	tt.t.Helper()
	for _, p := range tt.cli.Stats().Paths {
		if p.ID == int(id) {
			return p
		}
	}
	tt.t.Fatalf("client has no path %d", id)
	return kwik.PathStats{}
}

func TestSecondaryServesDelegatedRanges(t *testing.T) {
	var data []byte
	tt := newSecTest(t, SecondaryOptions{PieceSize: 4 << 10}, func(root string) {
		data = writeSecFile(t, root, "dir/f.bin", 10*secChunk+1234, 1)
	}, nil)

	// The primary answers READ(f.bin, 0, 11) itself except for the ranges
	// it delegates: whole chunks, a run of chunks, parts of chunks and the
	// end of the tail chunk.
	segs := []struct {
		from, to  int
		secondary bool
	}{
		{0, secChunk, false},
		{secChunk, 4 * secChunk, true},
		{4 * secChunk, 6 * secChunk, false},
		{6 * secChunk, 7 * secChunk, true},
		{7 * secChunk, 8*secChunk + 500, false},
		{8*secChunk + 500, 8*secChunk + 1500, true},
		{8*secChunk + 1500, 10*secChunk + 100, false},
		{10*secChunk + 100, len(data), true},
	}
	st := tt.openReply()
	var cmds, delegated int
	for _, sg := range segs {
		if !sg.secondary {
			if _, err := st.Write(data[sg.from:sg.to]); err != nil {
				t.Fatal(err)
			}
			continue
		}
		off, n := tt.delegate(st, uint64(sg.to-sg.from), func(done uint64) []byte {
			b, err := (&transfer.SendChunk{Path: "dir/f.bin", Version: transfer.SumAlg(transfer.SHA256, data), FileOffset: uint64(sg.from) + done}).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
		if off != 1+uint64(sg.from) {
			t.Fatalf("range of file offset %d at stream offset %d", sg.from, off)
		}
		cmds += n
		delegated += sg.to - sg.from
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	got := tt.readAll()
	want := append([]byte{0}, data...)
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("client read %d bytes differing from the %d of the reply", len(got), len(want))
	}
	if o := tt.waitOutcomes(cmds); o[outCompleted] != cmds {
		t.Fatalf("outcomes %v, want %d completed", o, cmds)
	}
	if st := tt.s.Stats(); st != (SecondaryStats{Commands: int64(cmds), Completed: int64(cmds), BytesSent: int64(delegated)}) {
		t.Fatalf("Stats = %+v, want %d commands completed, %d bytes", st, cmds, delegated)
	}
	if ks := tt.ksec.Stats(); ks.CommandsAccepted != uint64(cmds) || ks.DataBytesSent != uint64(delegated) {
		t.Fatalf("kwik secondary: %d commands, %d bytes sent; want %d, %d", ks.CommandsAccepted, ks.DataBytesSent, cmds, delegated)
	}
	p0, p1 := tt.clientPath(0), tt.clientPath(tt.path)
	if p1.DeliveredBytes != uint64(delegated) || p1.DataBytesReceived != uint64(delegated) ||
		p1.DuplicateBytes != 0 || p1.OutOfGrantBytes != 0 || p1.RejectedBytes != 0 {
		t.Fatalf("client path %d: %+v; want %d bytes delivered, none dropped", tt.path, p1, delegated)
	}
	if p0.DeliveredBytes != uint64(len(want)-delegated) || p0.DuplicateBytes != 0 {
		t.Fatalf("client path 0: %d bytes delivered, %d duplicate; want %d, 0", p0.DeliveredBytes, p0.DuplicateBytes, len(want)-delegated)
	}
	d, err := st.WaitDelivered(tt.ctx, uint64(len(want)))
	if err != nil || !d.Complete || d.ByPath[tt.path] != uint64(delegated) || d.ByPath[0] != uint64(len(want)-delegated) {
		t.Fatalf("WaitDelivered = %+v, %v; want %d bytes from path %d", d, err, delegated, tt.path)
	}
}

// TestSecondaryMissingFile checks that commands for files the secondary
// does not have send nothing, are counted, and do not disturb the others;
// the primary then sends the missing ranges itself.
func TestSecondaryMissingFile(t *testing.T) {
	var data []byte
	tt := newSecTest(t, SecondaryOptions{}, func(root string) {
		data = writeSecFile(t, root, "f.bin", 3*secChunk, 2)
		if err := os.Mkdir(filepath.Join(root, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
	}, nil)
	// Stream: status byte, chunk 0 for "gone.bin" (missing), chunk 1 for
	// "dir" (a directory), chunk 2 for a payload that is not a SEND_CHUNK,
	// then all of f.bin from the secondary.
	st := tt.openReply()
	bad := []struct {
		payload []byte
		want    outcome
	}{
		{sendChunkPayload("gone.bin", 0), outNotFound},
		{sendChunkPayload("dir", secChunk), outNotFound},
		{[]byte("not a command"), outBadCommand},
	}
	var badOffs []uint64
	cmds := 0
	for _, b := range bad {
		off, n := tt.delegate(st, secChunk, func(uint64) []byte { return b.payload })
		badOffs = append(badOffs, off)
		cmds += n
	}
	goodOff, n := tt.delegate(st, uint64(len(data)), func(done uint64) []byte { return sendChunkPayload("f.bin", done) })
	cmds += n
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	o := tt.waitOutcomes(cmds)
	if o[outNotFound] != 2 || o[outBadCommand] != 1 || o[outCompleted] != cmds-3 {
		t.Fatalf("outcomes %v", o)
	}
	if ks := tt.ksec.Stats(); ks.DataBytesSent != uint64(len(data)) {
		t.Fatalf("kwik secondary sent %d bytes, want %d", ks.DataBytesSent, len(data))
	}
	// The primary notices the late ranges and sends them itself.
	filler := bytes.Repeat([]byte{0xAB}, secChunk)
	for _, off := range badOffs {
		if _, err := st.WriteAt(filler, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	got := tt.readAll()
	want := append([]byte{0}, bytes.Repeat(filler, 3)...)
	want = append(want, data...)
	if !bytes.Equal(got, want) {
		t.Fatalf("client read %d bytes differing from the %d expected", len(got), len(want))
	}
	if goodOff != 1+3*secChunk {
		t.Fatalf("f.bin delegated at %d", goodOff)
	}
	wantStats := SecondaryStats{Commands: int64(cmds), Completed: int64(cmds - 3), NotFound: 2, BadCommands: 1, BytesSent: int64(len(data))}
	if st := tt.s.Stats(); st != wantStats {
		t.Fatalf("Stats = %+v, want %+v", st, wantStats)
	}
	if p1 := tt.clientPath(tt.path); p1.DeliveredBytes != uint64(len(data)) || p1.DataBytesReceived != uint64(len(data)) {
		t.Fatalf("client path %d: %d bytes delivered, %d received; want %d", tt.path, p1.DeliveredBytes, p1.DataBytesReceived, len(data))
	}
	if l := tt.log.String(); strings.Count(l, "SEND_CHUNK not served in full") != 3 || !strings.Contains(l, "gone.bin") {
		t.Fatalf("log:\n%s", l)
	}
}

// TestSecondaryRefusesTraversal checks that no path leading out of the
// root yields a byte: lexical traversal and symlinks leading out alike.
func TestSecondaryRefusesTraversal(t *testing.T) {
	secret := bytes.Repeat([]byte("SECRET!"), 100)
	tt := newSecTest(t, SecondaryOptions{}, func(root string) {
		// root is a fresh directory in its own temporary parent.
		if err := os.WriteFile(filepath.Join(filepath.Dir(root), "secret"), secret, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(root, "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		for link, target := range map[string]string{"up": "../secret", "etc": "/etc", "c1": "c2", "c2": "dir/../../secret", "abs": filepath.Join(filepath.Dir(root), "secret")} {
			if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
				t.Fatal(err)
			}
		}
	}, nil)
	paths := []string{"../secret", "/etc/passwd", "dir/../../secret", "a\x00b", "up", "c1", "abs", "etc/passwd"}
	st := tt.openReply()
	for _, p := range paths {
		tt.delegate(st, uint64(len(secret)), func(uint64) []byte { return sendChunkPayload(p, 0) })
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	o := tt.waitOutcomes(len(paths))
	if o[outOutsideRoot] != len(paths) {
		t.Fatalf("outcomes %v, want %d outside root", o, len(paths))
	}
	if ks := tt.ksec.Stats(); ks.DataBytesSent != 0 || ks.DataFramesSent != 0 {
		t.Fatalf("kwik secondary sent %d bytes in %d frames", ks.DataBytesSent, ks.DataFramesSent)
	}
	if st := tt.s.Stats(); st != (SecondaryStats{Commands: int64(len(paths)), OutsideRoot: int64(len(paths))}) {
		t.Fatalf("Stats = %+v", st)
	}
	// The primary sends the ranges itself; the client never sees the secret.
	zeros := make([]byte, len(paths)*len(secret))
	if _, err := st.WriteAt(zeros, 1); err != nil {
		t.Fatal(err)
	}
	got := tt.readAll()
	if !bytes.Equal(got, append([]byte{0}, zeros...)) {
		t.Fatalf("client read %d bytes, not the primary's zeros", len(got))
	}
	if p1 := tt.clientPath(tt.path); p1.DataBytesReceived != 0 {
		t.Fatalf("client received %d bytes from the secondary", p1.DataBytesReceived)
	}
	l := tt.log.String()
	if n := strings.Count(l, "SEND_CHUNK refused"); n != len(paths) || !strings.Contains(l, "outside the exported root") {
		t.Fatalf("%d refusals logged, want %d:\n%s", n, len(paths), l)
	}
}

// TestSecondaryShortFile checks that a file shorter than the range yields
// exactly its existing bytes at their stream offsets.
func TestSecondaryShortFile(t *testing.T) {
	// The primary's file has 6000 bytes; the secondary's copy only the
	// first 3000.
	full := make([]byte, 6000)
	rand.NewChaCha8([32]byte{3}).Read(full)
	tt := newSecTest(t, SecondaryOptions{PieceSize: 4 << 10}, func(root string) {
		if err := os.WriteFile(filepath.Join(root, "short.bin"), full[:3000], 0o644); err != nil {
			t.Fatal(err)
		}
	}, nil)
	st := tt.openReply()
	if _, err := st.Write(full[:1000]); err != nil {
		t.Fatal(err)
	}
	// [1000, 5500): 2000 bytes exist; [5500, 6000): none.
	off1, n1 := tt.delegate(st, 4500, func(done uint64) []byte { return sendChunkPayload("short.bin", 1000+done) })
	off2, n2 := tt.delegate(st, 500, func(done uint64) []byte { return sendChunkPayload("short.bin", 5500+done) })
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if o := tt.waitOutcomes(n1 + n2); o[outShortFile] != 2 || n1+n2 != 2 {
		t.Fatalf("outcomes %v of %d commands, want 2 short files", o, n1+n2)
	}
	if ks := tt.ksec.Stats(); ks.DataBytesSent != 2000 {
		t.Fatalf("kwik secondary sent %d bytes, want 2000", ks.DataBytesSent)
	}
	if st := tt.s.Stats(); st != (SecondaryStats{Commands: 2, ShortFile: 2, BytesSent: 2000}) {
		t.Fatalf("Stats = %+v", st)
	}
	// The primary sends exactly the missing part; the stream is complete
	// only if the secondary wrote its 2000 bytes at the right offsets.
	if off1 != 1001 || off2 != 5501 {
		t.Fatalf("delegated at %d and %d", off1, off2)
	}
	if _, err := st.WriteAt(full[3000:], 3001); err != nil {
		t.Fatal(err)
	}
	got := tt.readAll()
	if !bytes.Equal(got, append([]byte{0}, full...)) {
		t.Fatalf("client read %d bytes differing from the file", len(got))
	}
	if p1 := tt.clientPath(tt.path); p1.DeliveredBytes != 2000 || p1.DuplicateBytes != 0 {
		t.Fatalf("client path %d: %d delivered, %d duplicate; want 2000, 0", tt.path, p1.DeliveredBytes, p1.DuplicateBytes)
	}
	if l := tt.log.String(); strings.Count(l, "outcome=\"short file\"") != 2 {
		t.Fatalf("log:\n%s", l)
	}
}

// blockThirdPiece returns a beforePiece hook that holds the third piece
// until its command's context ends, and a channel closed when it does.
func blockThirdPiece() (func(context.Context), chan struct{}) {
	started := make(chan struct{})
	var pieces atomic.Int32
	return func(ctx context.Context) {
		if pieces.Add(1) == 3 {
			close(started)
			<-ctx.Done()
		}
	}, started
}

// startBlocked delegates all of f.bin (64 KiB) in one command, whose third
// piece of 4 KiB blocks, and waits until it does.
func startBlocked(t *testing.T) *secTest {
	t.Helper()
	var data []byte
	var started chan struct{}
	tt := newSecTest(t, SecondaryOptions{PieceSize: 4 << 10}, func(root string) {
		data = writeSecFile(t, root, "f.bin", 64<<10, 4)
	}, func(s *Secondary) { s.beforePiece, started = blockThirdPiece() })
	st := tt.openReply()
	if _, n := tt.delegate(st, uint64(len(data)), func(done uint64) []byte { return sendChunkPayload("f.bin", done) }); n != 1 {
		t.Fatalf("%d commands, want 1", n)
	}
	select {
	case <-started:
	case <-tt.ctx.Done():
		t.Fatal("command did not start")
	}
	return tt
}

// TestSecondaryServeStopsOnCancel checks that Serve returns when its
// context ends, after stopping the commands in progress.
func TestSecondaryServeStopsOnCancel(t *testing.T) {
	tt := startBlocked(t)
	tt.cancelServe()
	select {
	case err := <-tt.served:
		tt.served <- err // for Cleanup
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-tt.ctx.Done():
		t.Fatal("Serve did not return")
	}
	// Serve has waited for its goroutine: the command is counted.
	if st := tt.s.Stats(); st != (SecondaryStats{Commands: 1, Failed: 1, BytesSent: 8 << 10}) {
		t.Fatalf("Stats = %+v, want 1 failed command with 2 pieces sent", st)
	}
	if o := tt.waitOutcomes(1); o[outFailed] != 1 {
		t.Fatalf("outcome %v", o)
	}
}

// TestSecondaryStopsWhenPathEnds checks that a command stops when the
// path it came on ends, while Serve carries on.
func TestSecondaryStopsWhenPathEnds(t *testing.T) {
	tt := startBlocked(t)
	tt.cli.Close()
	if o := tt.waitOutcomes(1); o[outFailed] != 1 {
		t.Fatalf("outcome %v", o)
	}
	if st := tt.s.Stats(); st != (SecondaryStats{Commands: 1, Failed: 1, BytesSent: 8 << 10}) {
		t.Fatalf("Stats = %+v, want 1 failed command with 2 pieces sent", st)
	}
	select {
	case err := <-tt.served:
		t.Fatalf("Serve returned %v when a path ended", err)
	default:
	}
}

// TestSecondaryServeEndsWhenClosed checks Serve's error when the kwik
// secondary closes under it.
func TestSecondaryServeEndsWhenClosed(t *testing.T) {
	tt := newSecTest(t, SecondaryOptions{}, nil, nil)
	tt.ksec.Close()
	select {
	case err := <-tt.served:
		if !errors.Is(err, kwik.ErrClosed) {
			t.Fatalf("Serve = %v, want kwik.ErrClosed", err)
		}
		tt.served <- nil // for Cleanup
	case <-tt.ctx.Done():
		t.Fatal("Serve did not return")
	}
}

// TestSecondaryConcurrencyLimit checks that at most MaxConcurrentCommands
// commands are handled at once and that the others wait, then run.
func TestSecondaryConcurrencyLimit(t *testing.T) {
	const limit, total = 2, 5
	var data []byte
	entered := make(chan struct{}, total)
	release := make(chan struct{})
	var mu sync.Mutex
	var in, maxIn int
	tt := newSecTest(t, SecondaryOptions{MaxConcurrentCommands: limit}, func(root string) {
		data = writeSecFile(t, root, "f.bin", total*secChunk, 5)
	}, func(s *Secondary) {
		s.beforePiece = func(ctx context.Context) {
			mu.Lock()
			in++
			maxIn = max(maxIn, in)
			mu.Unlock()
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			in--
			mu.Unlock()
		}
	})
	st := tt.openReply()
	for i := range total {
		tt.delegate(st, secChunk, func(done uint64) []byte { return sendChunkPayload("f.bin", uint64(i)*secChunk+done) })
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for range limit {
		<-entered
	}
	// Once the kwik secondary has read the next command, it waits for a
	// slot: Serve has accepted no more than the limit.
	for tt.ksec.Stats().CommandsAccepted < limit+1 {
		select {
		case <-tt.ctx.Done():
			t.Fatal("third command not relayed")
		case <-time.After(time.Millisecond):
		}
	}
	if s := tt.s.Stats(); s.Commands != limit || s.Active != limit {
		t.Fatalf("Stats = %+v with %d commands blocked, want %d accepted", s, limit, limit)
	}
	close(release)
	if o := tt.waitOutcomes(total); o[outCompleted] != total {
		t.Fatalf("outcomes %v", o)
	}
	if !bytes.Equal(tt.readAll(), append([]byte{0}, data...)) {
		t.Fatal("client read differs from the file")
	}
	mu.Lock()
	defer mu.Unlock()
	if maxIn != limit {
		t.Fatalf("%d commands handled at once, limit %d", maxIn, limit)
	}
}

func TestNewSecondaryOptions(t *testing.T) {
	root := t.TempDir()
	for _, n := range []int{1, 4<<10 - 1, 16<<20 + 1} {
		if _, err := NewSecondary(root, &SecondaryOptions{PieceSize: n}); err == nil {
			t.Errorf("NewSecondary with PieceSize %d succeeded", n)
		}
	}
	if _, err := NewSecondary(filepath.Join(root, "missing"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NewSecondary of a missing root = %v", err)
	}
	s, err := NewSecondary(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.limit != 64 || s.piece != 256<<10 {
		t.Fatalf("defaults: limit %d, piece %d", s.limit, s.piece)
	}
}
