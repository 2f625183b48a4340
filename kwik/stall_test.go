package kwik

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStallWatchRule checks the bookkeeping behind stall detection: a
// command is answered by any data that arrives after it, and only a new
// oldest command wakes the watcher.
func TestStallWatchRule(t *testing.T) {
	w := &stallWatch{wake: make(chan struct{}, 1)}
	woken := func() bool {
		select {
		case <-w.wake:
			return true
		default:
			return false
		}
	}
	if _, ok := w.waiting(monoNow()); ok || woken() {
		t.Fatal("a fresh watch owes data")
	}
	w.noteData() // data with no work outstanding: nothing changes
	if _, ok := w.waiting(monoNow()); ok {
		t.Fatal("data alone made the path owe data")
	}
	w.noteWork()
	first := monoNow()
	if !woken() {
		t.Fatal("the first unanswered command did not wake the watcher")
	}
	w.noteWork()
	if woken() {
		t.Fatal("a second unanswered command woke the watcher: the oldest did not change")
	}
	if d, ok := w.waiting(first + int64(time.Second)); !ok || d < time.Second {
		t.Fatalf("waiting = %v, %v; want at least 1s for the oldest command", d, ok)
	}
	w.noteData()
	if _, ok := w.waiting(monoNow()); ok {
		t.Fatal("data after both commands did not answer them")
	}
	// A command after the data is unanswered again, and wakes the watcher.
	w.noteWork()
	if _, ok := w.waiting(monoNow()); !ok || !woken() {
		t.Fatal("a command after the last data is not unanswered")
	}
	// The bound: the oldest entry stays, the newest is overwritten.
	w.noteData()
	for range maxUnanswered + 10 {
		w.noteWork()
	}
	w.mu.Lock()
	n, oldest := len(w.unanswered), w.unanswered[0]
	w.mu.Unlock()
	if n != maxUnanswered {
		t.Fatalf("%d unanswered entries kept, want %d", n, maxUnanswered)
	}
	if d, ok := w.waiting(oldest + int64(time.Second)); !ok || d != time.Second {
		t.Fatalf("waiting = %v, %v; want exactly 1s from the oldest entry", d, ok)
	}
}

// stallCluster is a cluster with one secondary and a client whose
// PathStallTimeout is limit.
func stallCluster(t *testing.T, limit time.Duration) *cluster {
	return newCluster(t, 1, func(_, _, cli *Config) { cli.PathStallTimeout = limit })
}

// readBounded is readDigest with a deadline, so that a stream a wrongly
// closed path left incomplete fails the test instead of hanging it.
func readBounded(t *testing.T, st *Stream) (int64, [32]byte) {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(15 * time.Second))
	return readDigest(t, st)
}

// noPathEvent fails the test if the primary's session reports a path event
// within d: the negative half of the stall tests, bounded by time by nature.
func noPathEvent(t *testing.T, s *Session, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if ev, err := s.NextPathEvent(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("path event %+v (%v), %v; want none within %v", ev, ev.Err, err, d)
	}
}

// TestStalledPathClosed gives work to a secondary that accepts the command
// and never sends: the client closes the path within PathStallTimeout, the
// primary sees it failed as stalled, both sides count it, the work can be
// moved to the primary and the path added again, which then delivers.
func TestStalledPathClosed(t *testing.T) {
	const limit = 300 * time.Millisecond
	const size = 256 << 10
	c := stallCluster(t, limit)
	var serve atomic.Bool // false: stall (accept and send nothing)
	accepted := make(chan struct{}, 1)
	serveCommands(t, c.secs[0], func(cmd *Command) {
		if serve.Load() {
			writePattern(t)(cmd)
			return
		}
		accepted <- struct{}{}
		<-cmd.Context().Done() // the client closed the path
	})
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	off := reserve(t, srv, size)
	given := time.Now()
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: size}, []byte("unit")); err != nil {
		t.Fatal(err)
	}
	<-accepted

	ev, err := c.srv.NextPathEvent(testCtx(t))
	elapsed := time.Since(given)
	var pe *PathError
	if err != nil || ev.Path != id || ev.State != PathFailed || !errors.As(ev.Err, &pe) {
		t.Fatalf("primary's event %+v (%v), %v; want path %d failed", ev, ev.Err, err, id)
	}
	if pe.Code != PathStalled || !pe.Remote || !errors.Is(ev.Err, ErrPathStalled) || !strings.Contains(pe.Message, "stalled") {
		t.Fatalf("primary's path error %#v; want a remote PATH_STALLED matching ErrPathStalled", pe)
	}
	if elapsed < limit || elapsed > limit+2*time.Second {
		t.Errorf("path ended %v after the work was given, want within about PathStallTimeout (%v)", elapsed, limit)
	}
	cp := pathStats(t, c.cli, id)
	if cp.State != PathFailed || !cp.Stalled || !errors.Is(cp.Err, ErrPathStalled) || cp.AwaitingData != 0 || cp.DataBytesReceived != 0 {
		t.Fatalf("client's path %d: state %v, stalled %v, err %v, awaiting %v, received %d", id, cp.State, cp.Stalled, cp.Err, cp.AwaitingData, cp.DataBytesReceived)
	}
	if n := c.cli.Stats().StalledPaths; n != 1 {
		t.Errorf("client counts %d stalled paths, want 1", n)
	}
	if pp := pathStats(t, c.srv, id); !pp.Stalled || c.srv.Stats().StalledPaths != 1 {
		t.Errorf("primary: path stalled %v, %d stalled paths; want true, 1", pp.Stalled, c.srv.Stats().StalledPaths)
	}
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: size}, nil); !errors.Is(err, ErrPathNotUp) {
		t.Fatalf("SendRawData to the stalled path: %v, want ErrPathNotUp", err)
	}

	// The primary moves the work to itself; the session is unharmed.
	if _, err := srv.WriteAt(pattern(off, size), int64(off)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readBounded(t, cli); n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("read %d bytes, digest mismatch %v", n, sum != sha256.Sum256(pattern(0, size)))
	}

	// Added again, the path to the same secondary, serving now, delivers.
	serve.Store(true)
	id2 := c.addPaths(t)[0]
	if id2 == id {
		t.Fatalf("the path came back with the same ID %d", id)
	}
	cli2, srv2 := c.request(t)
	off2 := reserve(t, srv2, size)
	if err := c.srv.SendRawData(id2, Grant{StreamID: srv2.StreamID(), Offset: off2, Length: size}, []byte("unit")); err != nil {
		t.Fatal(err)
	}
	if err := srv2.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readBounded(t, cli2); n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("second stream: read %d bytes, digest mismatch", n)
	}
	if ps := pathStats(t, c.cli, id2); ps.State != PathUp || ps.DeliveredBytes != size || ps.Stalled {
		t.Fatalf("re-added path %d: state %v, delivered %d, stalled %v", id2, ps.State, ps.DeliveredBytes, ps.Stalled)
	}
	if n := c.cli.Stats().StalledPaths; n != 1 {
		t.Errorf("client counts %d stalled paths after the re-add, want still 1", n)
	}
}

// TestSlowPathNotClosed has a secondary trickle small pieces, slower than
// PathStallTimeout overall but never silent for that long, through several
// commands served one at a time: commands queued behind others are
// answered by the others' bytes, and the path is never closed.
func TestSlowPathNotClosed(t *testing.T) {
	const limit = 400 * time.Millisecond
	const piece, pieces, cmds = 1 << 10, 4, 5
	const every = limit / 5
	c := stallCluster(t, limit)
	var one sync.Mutex // the secondary serves one command at a time
	serveCommands(t, c.secs[0], func(cmd *Command) {
		one.Lock()
		defer one.Unlock()
		g := cmd.Grant()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range uint64(pieces) {
			select {
			case <-tick.C:
			case <-cmd.Context().Done():
				return
			}
			if _, err := cmd.Write(pattern(g.Offset+i*piece, piece)); err != nil {
				t.Errorf("trickle: %v", err)
				return
			}
		}
	})
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	start := time.Now()
	for range cmds {
		off := reserve(t, srv, piece*pieces)
		if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: piece * pieces}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	const size = piece * pieces * cmds
	if n, sum := readBounded(t, cli); n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("read %d bytes, digest mismatch", n)
	}
	if took := time.Since(start); took < 3*limit {
		t.Fatalf("the trickle took %v, not several PathStallTimeouts (%v): the test proves nothing", took, limit)
	}
	if ps := pathStats(t, c.cli, id); ps.State != PathUp || ps.Stalled || ps.DeliveredBytes != size {
		t.Fatalf("slow path: state %v (%v), stalled %v, delivered %d", ps.State, ps.Err, ps.Stalled, ps.DeliveredBytes)
	}
	if n := c.cli.Stats().StalledPaths; n != 0 {
		t.Fatalf("%d stalled paths", n)
	}
	if ps := pathStats(t, c.srv, id); ps.State != PathUp {
		t.Fatalf("primary's record of the slow path: %v (%v)", ps.State, ps.Err)
	}
}

// TestIdlePathNotClosed leaves a path that has answered all its work
// quiet for several PathStallTimeouts: it stays up and still serves.
func TestIdlePathNotClosed(t *testing.T) {
	const limit = 200 * time.Millisecond
	const size = 64 << 10
	c := stallCluster(t, limit)
	serveCommands(t, c.secs[0], writePattern(t))
	id := c.addPaths(t)[0]
	for round := range 2 {
		cli, srv := c.request(t)
		off := reserve(t, srv, size)
		if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: size}, nil); err != nil {
			t.Fatal(err)
		}
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		if n, sum := readBounded(t, cli); n != size || sum != sha256.Sum256(pattern(0, size)) {
			t.Fatalf("round %d: read %d bytes, digest mismatch", round, n)
		}
		if round == 0 {
			noPathEvent(t, c.srv, 4*limit)
		}
	}
	if ps := pathStats(t, c.cli, id); ps.State != PathUp || ps.AwaitingData != 0 || ps.DeliveredBytes != 2*size {
		t.Fatalf("idle path: state %v (%v), awaiting %v, delivered %d", ps.State, ps.Err, ps.AwaitingData, ps.DeliveredBytes)
	}
	if c.cli.Stats().StalledPaths != 0 {
		t.Fatal("stall counted")
	}
}

// TestRefusedCommandAnswersStall has a secondary close a command without
// writing (it cannot serve it): the empty data stream it sends answers the
// command, so the path stays up past several PathStallTimeouts and the
// client counts no data and no refused stream.
func TestRefusedCommandAnswersStall(t *testing.T) {
	const limit = 200 * time.Millisecond
	c := stallCluster(t, limit)
	closed := make(chan struct{}, 1)
	serveCommands(t, c.secs[0], func(cmd *Command) {
		cmd.Close()
		cmd.Close() // idempotent: one answer
		closed <- struct{}{}
	})
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	off := reserve(t, srv, 1000)
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}, nil); err != nil {
		t.Fatal(err)
	}
	<-closed
	noPathEvent(t, c.srv, 4*limit)
	ps := pathStats(t, c.cli, id)
	if ps.State != PathUp || ps.AwaitingData != 0 || ps.DataBytesReceived != 0 || ps.RefusedStreams != 0 || ps.OutOfGrantFrames != 0 {
		t.Fatalf("path %d: state %v (%v), awaiting %v, received %d, refused streams %d, out-of-grant frames %d",
			id, ps.State, ps.Err, ps.AwaitingData, ps.DataBytesReceived, ps.RefusedStreams, ps.OutOfGrantFrames)
	}
	if st := c.secs[0].Stats(); st.EmptyAnswers != 1 || st.DataBytesSent != 0 {
		t.Fatalf("secondary: %d empty answers, %d bytes sent; want 1, 0", st.EmptyAnswers, st.DataBytesSent)
	}
}

// TestHedgedRangeAnswersStall grants a secondary a range the primary sends
// too (hedging): the client has the whole stream and finishes it before the
// secondary's copy arrives, and those duplicate bytes, for a finished
// stream, still answer the command. The path stays up.
func TestHedgedRangeAnswersStall(t *testing.T) {
	const limit = time.Second
	const size = 128 << 10
	c := stallCluster(t, limit)
	release := make(chan struct{})
	serveCommands(t, c.secs[0], func(cmd *Command) {
		select {
		case <-release:
		case <-cmd.Context().Done():
			return
		}
		writePattern(t)(cmd)
	})
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	if _, err := srv.Write(pattern(0, size)); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: 0, Length: size}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the command relayed", func() bool { return pathStats(t, c.cli, id).CommandsSent == 1 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readBounded(t, cli); n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("read %d bytes, digest mismatch", n)
	}
	close(release)
	waitFor(t, "the secondary's duplicate copy", func() bool { return pathStats(t, c.cli, id).DuplicateBytes == size })
	if ps := pathStats(t, c.cli, id); ps.State != PathUp || ps.AwaitingData != 0 || ps.DeliveredBytes != 0 {
		t.Fatalf("hedged path: state %v (%v), awaiting %v, delivered %d", ps.State, ps.Err, ps.AwaitingData, ps.DeliveredBytes)
	}
	noPathEvent(t, c.srv, 2*limit)
	if ps := pathStats(t, c.cli, id); ps.State != PathUp {
		t.Fatalf("hedged path ended: %v", ps.Err)
	}
}

// TestStallDetectionDisabled checks that a negative PathStallTimeout
// turns stall detection off: a silent secondary's path stays up.
func TestStallDetectionDisabled(t *testing.T) {
	c := stallCluster(t, -1)
	accepted := make(chan struct{}, 1)
	serveCommands(t, c.secs[0], func(cmd *Command) {
		accepted <- struct{}{}
		<-cmd.Context().Done()
	})
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	off := reserve(t, srv, 1000)
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}, nil); err != nil {
		t.Fatal(err)
	}
	<-accepted
	noPathEvent(t, c.srv, 500*time.Millisecond)
	if ps := pathStats(t, c.cli, id); ps.State != PathUp || ps.AwaitingData == 0 {
		t.Fatalf("path %d: state %v, awaiting %v; want up and owing data", id, ps.State, ps.AwaitingData)
	}
}
