package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/transfer"
)

// Hostile clients against a real Primary on a real kwik listener: each test
// checks that the server's memory stays bounded, that the hostile client
// gets a clear error, and that a normal client downloading a file at the
// same time gets every byte right.

const (
	hostileChunk = 64 << 10
	hostileSize  = 8 << 20 // big.bin
)

// hostileServer is a Primary serving a root that holds big.bin.
type hostileServer struct {
	root   string
	addr   string
	p      *server.Primary
	ln     *kwik.Listener
	bundle *certgen.Bundle
	sum    [32]byte // SHA-256 of big.bin
	ctx    context.Context
}

// startHostileServer serves big.bin with opts (chunk size hostileChunk);
// kmod, if not nil, adjusts the listener's kwik configuration.
func startHostileServer(t *testing.T, opts server.PrimaryOptions, kmod func(*kwik.Config)) *hostileServer {
	t.Helper()
	root := t.TempDir()
	data := make([]byte, hostileSize)
	rand.NewChaCha8([32]byte{4}).Read(data)
	if err := os.WriteFile(filepath.Join(root, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.DiscardHandler)
	opts.Catalog.ChunkSize = hostileChunk
	p, err := server.NewPrimary(root, &opts)
	if err != nil {
		t.Fatal(err)
	}
	kc := &kwik.Config{TLSConfig: srvTLS, Logger: slog.New(slog.DiscardHandler)}
	if kmod != nil {
		kmod(kc)
	}
	ln, err := kwik.Listen("127.0.0.1:0", kc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
		p.Close()
	})
	return &hostileServer{root: root, addr: ln.Addr().String(), p: p, ln: ln, bundle: b, sum: sha256.Sum256(data), ctx: ctx}
}

// clientConfig returns a kwik configuration trusting the server; mod, if
// not nil, adjusts it.
func (hs *hostileServer) clientConfig(t *testing.T, mod func(*kwik.Config)) *kwik.Config {
	t.Helper()
	tlsConf, err := hs.bundle.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := &kwik.Config{TLSConfig: tlsConf, HandshakeTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(c)
	}
	return c
}

// dial opens a raw kwik session to the server.
func (hs *hostileServer) dial(t *testing.T, mod func(*kwik.Config)) *kwik.Session {
	t.Helper()
	s, err := kwik.Dial(hs.ctx, hs.addr, hs.clientConfig(t, mod))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// normalClient returns a transfer client of the server on a session of its
// own.
func (hs *hostileServer) normalClient(t *testing.T) *transfer.Client {
	c := transfer.NewClient(hs.addr, &transfer.ClientOptions{Config: hs.clientConfig(t, nil), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { c.Close() })
	return c
}

// normalCopy starts a normal client's download of big.bin; the returned
// function waits for it and fails the test unless the copy is exact.
func (hs *hostileServer) normalCopy(t *testing.T, c *transfer.Client) func() {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "big.bin")
	done := make(chan error, 1)
	go func() { done <- c.DownloadFile(hs.ctx, "big.bin", dst, nil) }()
	return func() {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("normal client's download: %v", err)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != hs.sum {
			t.Fatalf("normal client's copy of %d bytes differs from big.bin", len(got))
		}
	}
}

// manifest returns big.bin's manifest.
func (hs *hostileServer) manifest(t *testing.T) *transfer.Manifest {
	t.Helper()
	m, err := hs.normalClient(t).Manifest(hs.ctx, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

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

// openRequest opens a stream on s and writes msg, closing the write side
// if end.
func openRequest(ctx context.Context, s *kwik.Session, msg []byte, end bool) (*kwik.Stream, error) {
	st, err := s.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(msg); err != nil {
		return nil, err
	}
	if end {
		return st, st.Close()
	}
	return st, nil
}

// checkReset reads st and checks that the server reset it with code.
func checkReset(st *kwik.Stream, code kwik.ErrorCode) error {
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, st)
	if !errors.Is(err, &kwik.StreamError{Code: code, Remote: true}) {
		return fmt.Errorf("stream %d: %v, want a reset by the server with code %v", st.StreamID(), err, code)
	}
	return nil
}

// TestPrimaryHostileClientNeverReads sends READs of a whole 8 MiB file and
// never reads the replies: the server's writes block on the client's small
// windows, its memory stays within one chunk buffer per request served, and
// after WriteTimeout every reply is reset.
func TestPrimaryHostileClientNeverReads(t *testing.T) {
	const limit, requests = 16, 32
	hs := startHostileServer(t, server.PrimaryOptions{MaxConcurrentRequests: limit, WriteTimeout: time.Second}, nil)
	m := hs.manifest(t)
	hostile := hs.dial(t, func(c *kwik.Config) {
		c.StreamReceiveWindow = 64 << 10
		c.SessionReceiveWindow = 256 << 10
	})
	msg, err := (&transfer.Request{Op: transfer.OpRead, Path: "big.bin", Version: m.Version, First: 0, Count: m.NumChunks()}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	base := heapInuse()
	check := hs.normalCopy(t, hs.normalClient(t))
	var sts []*kwik.Stream
	for range requests {
		st, err := openRequest(hs.ctx, hostile, msg, true)
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	check()
	// Served requests hold a chunk buffer each; the replies in flight are
	// bounded by the client's 256 KiB session window. Buffering the replies
	// would take requests x 8 MiB.
	checkHeapGrowth(t, fmt.Sprintf("%d unread READs of 8 MiB", requests), base, limit*hostileChunk+8<<20)
	// Every reply times out (reading one before would let it go on).
	for hs.p.Stats().Aborted < requests {
		if hs.ctx.Err() != nil {
			t.Fatalf("replies not reset: %+v", hs.p.Stats())
		}
		runtime.Gosched()
	}
	// The write timeout reports as an internal failure of the reply.
	for _, st := range sts {
		if err := checkReset(st, transfer.StreamCode(transfer.ErrInternal)); err != nil {
			t.Fatal(err)
		}
	}
	if s := hs.p.Stats(); s.Aborted != requests {
		t.Fatalf("stats %+v, want %d aborted replies", s, requests)
	}
}

// TestPrimaryHostileClientFloodsStreams opens thousands of request streams,
// twice the listener's stream limit, each with half a request that never
// ends: the streams beyond the limit wait in the client, those open hold
// little memory on the server, and each is reset after RequestTimeout.
func TestPrimaryHostileClientFloodsStreams(t *testing.T) {
	const streams = 2 * kwik.DefaultMaxIncomingStreams
	hs := startHostileServer(t, server.PrimaryOptions{RequestTimeout: 100 * time.Millisecond}, nil)
	hostile := hs.dial(t, nil)
	half := request(transfer.OpStat, "big.bin")[:2]
	base := heapInuse()
	check := hs.normalCopy(t, hs.normalClient(t))
	opened := make(chan *kwik.Stream, streams)
	flood := make(chan error, 1)
	go func() {
		defer close(opened)
		for range streams {
			st, err := openRequest(hs.ctx, hostile, half, false)
			if err != nil {
				flood <- err
				return
			}
			opened <- st
		}
		flood <- nil
	}()
	check()
	checkHeapGrowth(t, fmt.Sprintf("up to %d unfinished requests", kwik.DefaultMaxIncomingStreams), base, kwik.DefaultMaxIncomingStreams*20<<10)
	n := 0
	for st := range opened {
		if err := checkReset(st, transfer.StreamCode(transfer.ErrBadRequest)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := <-flood; err != nil || n != streams {
		t.Fatalf("opened %d streams: %v", n, err)
	}
	if s := hs.p.Stats(); s.Aborted != streams || s.Requests[0] != streams {
		t.Fatalf("stats %+v, want %d requests not received and aborted", s, streams)
	}
	if hostile.Context().Err() != nil {
		t.Fatal("the session ended")
	}
}

// TestPrimaryHostileClientSendsEndlessRequests sends requests that never
// end: bytes without end (the server reads MaxRequestLen+1 of each and
// stops the client's writes), an oversized request, and a request that
// stops half way (reset after RequestTimeout).
func TestPrimaryHostileClientSendsEndlessRequests(t *testing.T) {
	const endless = 64
	hs := startHostileServer(t, server.PrimaryOptions{RequestTimeout: 300 * time.Millisecond}, nil)
	hostile := hs.dial(t, nil)
	base := heapInuse()
	check := hs.normalCopy(t, hs.normalClient(t))

	var wg sync.WaitGroup
	errs := make(chan error, endless+2)
	junk := bytes.Repeat([]byte{0xee}, 16<<10)
	for range endless {
		wg.Go(func() {
			st, err := openRequest(hs.ctx, hostile, nil, false)
			if err != nil {
				errs <- err
				return
			}
			st.SetWriteDeadline(time.Now().Add(20 * time.Second))
			for sent := 0; ; sent += len(junk) {
				if sent > 64<<20 {
					errs <- fmt.Errorf("stream %d: the server took %d bytes of one request", st.StreamID(), sent)
					return
				}
				if _, err = st.Write(junk); err != nil {
					break
				}
			}
			tooLarge := transfer.StreamCode(transfer.ErrTooLarge)
			if !errors.Is(err, &kwik.StreamError{Code: tooLarge, Remote: true}) {
				errs <- fmt.Errorf("endless request: write %v, want the server's STOP_SENDING %v", err, tooLarge)
				return
			}
			st.SetReadDeadline(time.Now().Add(20 * time.Second))
			reply, err := io.ReadAll(st)
			if err != nil || !errors.Is(transfer.DecodeError(reply), transfer.ErrTooLarge) {
				errs <- fmt.Errorf("endless request: reply %q, %v; want ErrTooLarge", reply, err)
			}
		})
	}
	wg.Go(func() {
		st, err := openRequest(hs.ctx, hostile, bytes.Repeat([]byte{1}, transfer.RequestLimit(1)+100), true)
		if err == nil {
			st.SetReadDeadline(time.Now().Add(20 * time.Second))
			var reply []byte
			reply, err = io.ReadAll(st)
			if err == nil && !errors.Is(transfer.DecodeError(reply), transfer.ErrTooLarge) {
				err = fmt.Errorf("reply %q", reply)
			}
		}
		if err != nil {
			errs <- fmt.Errorf("oversized request: %v, want ErrTooLarge", err)
		}
	})
	wg.Go(func() {
		st, err := openRequest(hs.ctx, hostile, request(transfer.OpStat, "big.bin")[:2], false)
		if err == nil {
			err = checkReset(st, transfer.StreamCode(transfer.ErrBadRequest))
		}
		if err != nil {
			errs <- fmt.Errorf("unfinished request: %v", err)
		}
	})
	check()
	// The server holds at most RequestLimit+1 bytes of each request; what
	// it discards is bounded by the session's receive windows.
	checkHeapGrowth(t, fmt.Sprintf("%d endless requests", endless), base, 16<<20)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := hs.p.Stats(); s.Errors != endless+1 || s.Aborted != 1 {
		t.Fatalf("stats %+v, want %d error replies and 1 aborted request", s, endless+1)
	}
}

// TestPrimarySessionLimit fills the listener's MaxSessions: further
// sessions are refused at once with SESSION_LIMIT_ERROR and hold nothing,
// the sessions in place work, and a closed session frees its slot.
func TestPrimarySessionLimit(t *testing.T) {
	const refused = 20
	hs := startHostileServer(t, server.PrimaryOptions{}, func(c *kwik.Config) { c.MaxSessions = 2 })
	hostile := hs.dial(t, nil)
	normal := hs.normalClient(t)
	if _, err := normal.Stat(hs.ctx, "big.bin"); err != nil {
		t.Fatal(err)
	}
	if n := hs.ln.Sessions(); n != 2 {
		t.Fatalf("listener holds %d sessions, want 2", n)
	}
	base := heapInuse()
	check := hs.normalCopy(t, normal)
	for range refused {
		start := time.Now()
		s, err := kwik.Dial(hs.ctx, hs.addr, hs.clientConfig(t, nil))
		if err == nil {
			s.Close()
			t.Fatal("a session beyond the limit was set up")
		}
		var se *kwik.SessionError
		if !errors.As(err, &se) || se.Code != kwik.SessionLimitError || !se.Remote || se.Message != "session limit of 2 reached" {
			t.Fatalf("Dial beyond the limit: %v, want a remote SESSION_LIMIT_ERROR", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("refusal took %v", d)
		}
	}
	check()
	checkHeapGrowth(t, fmt.Sprintf("%d refused sessions", refused), base, 4<<20)
	if s := hs.p.Stats(); s.Sessions != 2 {
		t.Fatalf("stats %+v, want 2 sessions served", s)
	}

	hostile.Close()
	for hs.ln.Sessions() != 1 {
		if hs.ctx.Err() != nil {
			t.Fatal("the closed session's slot was never freed")
		}
		runtime.Gosched()
	}
	again := transfer.NewClient(hs.addr, &transfer.ClientOptions{Config: hs.clientConfig(t, nil), Logger: slog.New(slog.DiscardHandler)})
	defer again.Close()
	if a, err := again.Stat(hs.ctx, "big.bin"); err != nil || a.Size != hostileSize {
		t.Fatalf("session after a slot freed: %+v, %v", a, err)
	}
}

// bigListing creates the directory "big" of n entries with random names
// of 40 hex digits (hard links to one empty file): a LIST reply of about
// 1 MiB for 40,000 entries, as the hex digits compress to half.
func (hs *hostileServer) bigListing(t *testing.T, n int) {
	t.Helper()
	dir := filepath.Join(hs.root, "big")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(hs.root, "empty")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewChaCha8([32]byte{5}))
	for range n {
		if err := os.Link(src, filepath.Join(dir, fmt.Sprintf("%016x%016x%08x", r.Uint64(), r.Uint64(), r.Uint32()))); err != nil {
			t.Fatal(err)
		}
	}
}

// waitStats waits until ok holds of the server's stats.
func (hs *hostileServer) waitStats(t *testing.T, what string, ok func(server.PrimaryStats) bool) {
	t.Helper()
	for !ok(hs.p.Stats()) {
		if hs.ctx.Err() != nil {
			t.Fatalf("%s: never; stats %+v", what, hs.p.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPrimaryReplyTimeout has a client read a LIST reply of about 1 MiB
// 16 KiB at a time, twenty times a second: the reply progresses well
// within WriteTimeout (which alone would let it go on for as long as the
// client reads), but is not whole within ReplyTimeout, so the server
// resets it with ErrUnavailable and counts it. A client that reads at
// once gets the listing.
func TestPrimaryReplyTimeout(t *testing.T) {
	const entries = 40000
	hs := startHostileServer(t, server.PrimaryOptions{ReplyTimeout: 500 * time.Millisecond, WriteTimeout: 10 * time.Second}, nil)
	hs.bigListing(t, entries)
	slow := hs.dial(t, func(c *kwik.Config) {
		c.StreamReceiveWindow = 64 << 10
		c.SessionReceiveWindow = 256 << 10
	})
	st, err := openRequest(hs.ctx, slow, request(transfer.OpList, "big"), true)
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	read := 0
	buf := make([]byte, 16<<10)
	for {
		n, err := st.Read(buf)
		read += n
		if err != nil {
			want := &kwik.StreamError{Code: transfer.StreamCode(transfer.ErrUnavailable), Remote: true}
			if !errors.Is(err, want) {
				t.Fatalf("slow reader: %v after %d bytes, want a reset with %v", err, read, want.Code)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("slow reader: reset after %d bytes and %v", read, time.Since(start).Round(time.Millisecond))
	hs.waitStats(t, "the reply budget given back", func(s server.PrimaryStats) bool { return s.ReplyBudgetInUse == 0 })
	if s := hs.p.Stats(); s.ReplyTimeouts != 1 || s.Aborted != 1 {
		t.Fatalf("stats %+v, want 1 reply timed out and aborted", s)
	}
	got, err := hs.normalClient(t).List(hs.ctx, "big")
	if err != nil || len(got) != entries {
		t.Fatalf("normal client: %d entries, %v; want %d", len(got), err, entries)
	}
	if s := hs.p.Stats(); s.ReplyTimeouts != 1 || s.Aborted != 1 {
		t.Fatalf("stats %+v, want still 1 reply timed out", s)
	}
}

// TestPrimaryReplyBudget serves a 1 MiB reply budget: a LIST whose reply
// a client does not read holds its share of the budget; a second LIST,
// which needs all of it, waits (counted) until the first is reset, and
// then completes. MANIFEST replies come from the cache after the first.
func TestPrimaryReplyBudget(t *testing.T) {
	const entries = 40000
	hs := startHostileServer(t, server.PrimaryOptions{ReplyBudget: 1 << 20}, nil)
	hs.bigListing(t, entries)
	normal := hs.normalClient(t)
	for range 5 {
		if _, err := normal.Manifest(hs.ctx, "big.bin"); err != nil {
			t.Fatal(err)
		}
	}
	if s := hs.p.Catalog().Stats(); s.ManifestRepliesEncoded != 1 || s.ManifestReplyHits != 4 {
		t.Fatalf("catalog stats %+v, want 1 MANIFEST reply encoded and 4 taken from the cache", s)
	}
	// The handlers give their share back just after the replies end.
	hs.waitStats(t, "the reply budget given back", func(s server.PrimaryStats) bool { return s.ReplyBudgetInUse == 0 })
	if s := hs.p.Stats(); s.BudgetWaits != 0 {
		t.Fatalf("stats %+v, want no wait", s)
	}

	// Its encoded reply, of about 1 MiB, holds less than the budget.
	st := hs.unreadList(t)
	listed := make(chan error, 1)
	go func() {
		got, err := normal.List(hs.ctx, "big")
		if err == nil && len(got) != entries {
			err = fmt.Errorf("%d entries, want %d", len(got), entries)
		}
		listed <- err
	}()
	hs.waitStats(t, "the second LIST waiting", func(s server.PrimaryStats) bool { return s.BudgetWaits == 1 })
	select {
	case err := <-listed:
		t.Fatalf("the second LIST ended while the budget was held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	st.CancelRead(transfer.CodeCanceled)
	if err := <-listed; err != nil {
		t.Fatalf("second LIST: %v", err)
	}
	hs.waitStats(t, "the reply budget given back", func(s server.PrimaryStats) bool { return s.ReplyBudgetInUse == 0 })
	if s := hs.p.Stats(); s.BudgetWaits != 1 || s.Aborted != 1 || s.ReplyTimeouts != 0 {
		t.Fatalf("stats %+v, want 1 wait and 1 reply aborted", s)
	}
}

// unreadList sends LIST "big" from a client with small windows that never
// reads the reply, and returns the request's stream once the reply holds
// part (less than 1 MiB) of the reply budget.
func (hs *hostileServer) unreadList(t *testing.T) *kwik.Stream {
	t.Helper()
	hostile := hs.dial(t, func(c *kwik.Config) {
		c.StreamReceiveWindow = 64 << 10
		c.SessionReceiveWindow = 256 << 10
	})
	st, err := openRequest(hs.ctx, hostile, request(transfer.OpList, "big"), true)
	if err != nil {
		t.Fatal(err)
	}
	hs.waitStats(t, "the unread reply holding the budget", func(s server.PrimaryStats) bool {
		return s.ReplyBudgetInUse > 0 && s.ReplyBudgetInUse < 1<<20
	})
	return st
}

// TestPrimaryBudgetWaitEndsWithSession: a LIST waiting for the reply
// budget gives up when its session closes, rather than when the budget
// comes free.
func TestPrimaryBudgetWaitEndsWithSession(t *testing.T) {
	hs := startHostileServer(t, server.PrimaryOptions{ReplyBudget: 1 << 20}, nil)
	hs.bigListing(t, 40000)
	st := hs.unreadList(t)
	held := hs.p.Stats().ReplyBudgetInUse
	waiter := hs.dial(t, nil)
	if _, err := openRequest(hs.ctx, waiter, request(transfer.OpList, "big"), true); err != nil {
		t.Fatal(err)
	}
	hs.waitStats(t, "the second LIST waiting", func(s server.PrimaryStats) bool { return s.BudgetWaits == 1 })
	waiter.Close()
	// The waiting request fails (with an error reply no one reads) while
	// the unread reply still holds the budget.
	hs.waitStats(t, "the wait ended", func(s server.PrimaryStats) bool { return s.Errors == 1 })
	if s := hs.p.Stats(); s.ReplyBudgetInUse != held || s.BudgetWaits != 1 {
		t.Fatalf("stats %+v, want 1 wait and the unread reply's %d bytes still held", s, held)
	}
	st.CancelRead(transfer.CodeCanceled)
	hs.waitStats(t, "the reply budget given back", func(s server.PrimaryStats) bool { return s.ReplyBudgetInUse == 0 })
}

// TestPrimaryFilesReplyBudget: a FILES request is charged the MaxBytes it
// asks for before its reply is built. With a 1 MiB budget partly held by
// an unread LIST reply, a FILES request for 1 MiB waits (counted) until
// that reply is reset, and then brings every file whole.
func TestPrimaryFilesReplyBudget(t *testing.T) {
	const files, size = 100, 8 << 10
	hs := startHostileServer(t, server.PrimaryOptions{ReplyBudget: 1 << 20}, nil)
	hs.bigListing(t, 40000)
	dir := filepath.Join(hs.root, "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := make(map[string][]byte, files)
	names := make([]string, files)
	for i := range files {
		names[i] = fmt.Sprintf("f%03d", i)
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{6, byte(i)}).Read(data)
		if err := os.WriteFile(filepath.Join(dir, names[i]), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want[names[i]] = data
	}
	st := hs.unreadList(t)
	type result struct {
		fds []transfer.FileData
		err error
	}
	done := make(chan result, 1)
	go func() {
		fds, err := hs.normalClient(t).Files(hs.ctx, "small", names, nil, 1<<20)
		done <- result{fds, err}
	}()
	hs.waitStats(t, "the FILES request waiting", func(s server.PrimaryStats) bool { return s.BudgetWaits == 1 })
	select {
	case r := <-done:
		t.Fatalf("FILES ended while the budget was held: %d files, %v", len(r.fds), r.err)
	case <-time.After(100 * time.Millisecond):
	}
	st.CancelRead(transfer.CodeCanceled)
	r := <-done
	if r.err != nil {
		t.Fatalf("FILES: %v", r.err)
	}
	if len(r.fds) != files {
		t.Fatalf("FILES: %d answers, want %d", len(r.fds), files)
	}
	for i, fd := range r.fds {
		if fd.Manifest == nil || !bytes.Equal(fd.First, want[names[i]]) {
			t.Fatalf("FILES %s: manifest %v, %d bytes of content; want the file's %d", names[i], fd.Manifest != nil, len(fd.First), size)
		}
	}
	hs.waitStats(t, "the reply budget given back", func(s server.PrimaryStats) bool { return s.ReplyBudgetInUse == 0 })
	if s := hs.p.Stats(); s.BudgetWaits != 1 || s.Aborted != 1 {
		t.Fatalf("stats %+v, want 1 wait and 1 reply aborted", s)
	}
}
