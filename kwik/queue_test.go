package kwik

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// TestControlQueueConfig checks MaxControlQueueBytes's default and minimum,
// and that a path's queue takes the bound.
func TestControlQueueConfig(t *testing.T) {
	_, tc := testTLS(t)
	c, err := (&Config{TLSConfig: tc}).resolve()
	if err != nil || c.MaxControlQueueBytes != 4<<20 || DefaultMaxControlQueueBytes != 4<<20 {
		t.Fatalf("default MaxControlQueueBytes %d, %v; want 4 MiB", c.MaxControlQueueBytes, err)
	}
	_, err = (&Config{TLSConfig: tc, MaxControlQueueBytes: 64<<10 - 1}).resolve()
	if err == nil || err.Error() != "kwik: MaxControlQueueBytes 65535 below 65536" {
		t.Fatalf("MaxControlQueueBytes below the minimum: %v", err)
	}
	p := newPair(t, func(srv, _ *Config) { srv.MaxControlQueueBytes = 100 << 10 })
	if p.srv.p0.out.max != 100<<10 || p.cli.p0.out.max != 4<<20 {
		t.Fatalf("queue bounds %d, %d", p.srv.p0.out.max, p.cli.p0.out.max)
	}
}

// rawFrame returns a RAW_DATA frame whose encoding is exactly size bytes
// (size between 4 and 66).
func rawFrame(t *testing.T, size int) *wire.RawData {
	t.Helper()
	f := &wire.RawData{PathID: 1, Command: make([]byte, size-3)}
	if n := len(wire.AppendFrame(nil, f)); n != size {
		t.Fatalf("frame of %d bytes, want %d", n, size)
	}
	return f
}

// TestControlQueueBound checks the control queue's byte bound: queued
// frames and the batch being written count, window updates do not, the
// frame that would exceed the bound is dropped and fails the queue, and a
// frame is always accepted by an empty queue.
func TestControlQueueBound(t *testing.T) {
	newQueue := func(max int) *ctrlQueue {
		return &ctrlQueue{max: max, wake: make(chan struct{}, 1), full: make(chan struct{})}
	}
	failed := func(q *ctrlQueue) bool {
		select {
		case <-q.full:
			return true
		default:
			return false
		}
	}

	q := newQueue(100)
	if !q.push(rawFrame(t, 40)) || !q.push(rawFrame(t, 40)) {
		t.Fatal("frames within the bound dropped")
	}
	for id := range StreamID(50) { // window updates are not counted
		q.setMaxStreamData(id*4, 1<<20)
	}
	q.setMaxData(1 << 30)
	b, n := q.drain(nil)
	if n != 2+50+1 || len(b) < 80 {
		t.Fatalf("drained %d frames (%d bytes), want 53", n, len(b))
	}
	// The batch is being written: its 80 bytes still count.
	if !q.push(rawFrame(t, 20)) {
		t.Fatal("a frame that fits beside the batch being written was dropped")
	}
	if q.push(rawFrame(t, 1+3)) || !failed(q) {
		t.Fatal("a frame beyond the bound was queued, or the queue did not fail")
	}
	q.wrote()
	if q.push(rawFrame(t, 4)) {
		t.Fatal("a failed queue took a frame")
	}
	if peak, dropped := q.stats(); peak != 100 || dropped != 2 {
		t.Fatalf("peak %d, dropped %d; want 100, 2", peak, dropped)
	}
	if b, n := q.drain(nil); n != 1 || len(b) != 20 {
		t.Fatalf("after the failure: drained %d frames (%d bytes), want the one queued before (20 bytes)", n, len(b))
	}

	// wrote releases the batch.
	q = newQueue(100)
	q.push(rawFrame(t, 60))
	q.drain(nil)
	q.wrote()
	if !q.push(rawFrame(t, 60)) || failed(q) {
		t.Fatal("a written batch still counts")
	}

	// An empty queue takes any frame; the next one fails it.
	q = newQueue(100)
	big := &wire.RawData{PathID: 1, Command: make([]byte, 200)}
	if !q.push(big) || failed(q) {
		t.Fatal("an empty queue refused a frame larger than the bound")
	}
	if q.push(rawFrame(t, 4)) || !failed(q) {
		t.Fatal("a frame beside one larger than the bound was queued")
	}
	if peak, dropped := q.stats(); peak != len(wire.AppendFrame(nil, big)) || dropped != 1 {
		t.Fatalf("peak %d, dropped %d", peak, dropped)
	}
}

// pausableControl returns a beforeControlRead hook that blocks, once pause
// is set, until the session closes: the session then no longer reads its
// control stream (one frame already awaited may still be read).
func pausableControl(pause *atomic.Bool) func(context.Context) {
	return func(ctx context.Context) {
		if pause.Load() {
			<-ctx.Done()
		}
	}
}

// maxCommandFrame exceeds the size of the RAW_DATA frames the flood tests
// send: a command with a payload of 1 KiB.
const maxCommandFrame = 2048

// overflowMessage is the reason a path or session closed for
// ControlQueueOverflow carries.
func overflowMessage(bound int) string {
	return fmt.Sprintf("more than %d bytes of control frames wait for the peer (MaxControlQueueBytes): it does not read its control stream", bound)
}

// TestControlFloodClosesSession has a primary send commands to a client
// that has stopped reading its control stream: once the frames waiting for
// the client exceed MaxControlQueueBytes the primary closes the session
// with ControlQueueOverflow, which the client learns, having held at most
// the bound; the frame that overflowed is the one dropped.
func TestControlFloodClosesSession(t *testing.T) {
	const bound = 64 << 10
	var pause atomic.Bool
	c := newCluster(t, 1, func(prim, _, cli *Config) {
		prim.MaxControlQueueBytes = bound
		cli.StreamReceiveWindow = 64 << 10 // and so QUIC's control stream window
		cli.PathStallTimeout = -1
		cli.beforeControlRead = pausableControl(&pause)
	})
	serveCommands(t, c.secs[0], func(cmd *Command) { cmd.Close() })
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	off := reserve(t, srv, 1000)
	g := Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}
	pause.Store(true)

	payload := make([]byte, 1024)
	sent := 0
	for {
		if _, dropped := c.srv.p0.out.stats(); dropped > 0 {
			break
		}
		if sent > 100000 {
			t.Fatalf("%d commands sent and the queue still holds them", sent)
		}
		if err := c.srv.SendRawData(id, g, payload); err != nil {
			t.Fatalf("SendRawData %d: %v", sent, err)
		}
		sent++
	}
	want := overflowMessage(bound)
	if e := closeCause(t, c.srv); e.Code != ControlQueueOverflow || e.Remote || e.Message != want {
		t.Fatalf("primary closed with %v, want local %v %q", e, ControlQueueOverflow, want)
	}
	if e := closeCause(t, c.cli); e.Code != ControlQueueOverflow || !e.Remote || e.Message != want {
		t.Fatalf("client sees %v, want remote %v %q", e, ControlQueueOverflow, want)
	}
	// The frame that overflowed (a RAW_DATA frame of less than
	// maxCommandFrame bytes) did not fit beside those held.
	ps := c.srv.Stats().Paths[0]
	if ps.ControlFramesDropped != 1 || ps.ControlQueuePeak > bound || ps.ControlQueuePeak <= bound-maxCommandFrame {
		t.Fatalf("primary: %d control frames dropped, queue peak %d; want 1, in (%d, %d]", ps.ControlFramesDropped, ps.ControlQueuePeak, bound-maxCommandFrame, bound)
	}
	if err := c.srv.SendRawData(id, g, payload); !errors.Is(err, ErrClosed) {
		t.Fatalf("SendRawData after the close: %v, want ErrClosed", err)
	}
	waitFor(t, "the overflow counted", func() bool { return c.l.Stats().ControlQueueOverflows >= 1 })
	if st := c.l.Stats(); st.ControlQueueOverflows != 1 || st.Sessions != 0 {
		t.Fatalf("listener stats %+v, want 1 control queue overflow and no session open", st)
	}
}

// TestControlFloodClosesSecondaryPath has a secondary stop reading its
// control stream (it holds its one command slot, MaxCommandsPerPath 1)
// while the primary keeps sending it commands: the client, which relays
// them, ends that path with ControlQueueOverflow once they exceed its
// MaxControlQueueBytes, having held at most the bound, and tells the
// primary; the session lives on.
func TestControlFloodClosesSecondaryPath(t *testing.T) {
	const bound = 64 << 10
	c := newCluster(t, 1, func(_, sec, cli *Config) {
		sec.MaxCommandsPerPath = 1
		sec.StreamReceiveWindow = 64 << 10 // and so QUIC's control stream window
		cli.MaxControlQueueBytes = bound
		cli.PathStallTimeout = -1
	})
	serveCommands(t, c.secs[0], func(cmd *Command) { <-cmd.Context().Done() })
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	off := reserve(t, srv, 1000)
	g := Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}

	payload := make([]byte, 1024)
	for sent := 0; pathStats(t, c.cli, id).ControlFramesDropped == 0; sent++ {
		if sent > 100000 {
			t.Fatalf("%d commands sent and the client's queue still holds them", sent)
		}
		if err := c.srv.SendRawData(id, g, payload); err != nil {
			t.Fatalf("SendRawData %d: %v", sent, err)
		}
	}
	want := overflowMessage(bound)
	ev, err := c.srv.NextPathEvent(testCtx(t))
	var pe *PathError
	if err != nil || ev.Path != id || ev.State != PathFailed || !errors.As(ev.Err, &pe) ||
		pe.Code != ControlQueueOverflow || !pe.Remote || pe.Message != want {
		t.Fatalf("primary's event %+v (%v), %v; want path %d failed with remote %v %q", ev, ev.Err, err, id, ControlQueueOverflow, want)
	}
	ps := pathStats(t, c.cli, id)
	if ps.State != PathFailed || ps.ControlFramesDropped == 0 || ps.ControlQueuePeak > bound || ps.ControlQueuePeak <= bound-maxCommandFrame {
		t.Fatalf("client's path %d: state %v, %d control frames dropped, queue peak %d; want failed, some dropped, peak in (%d, %d]",
			id, ps.State, ps.ControlFramesDropped, ps.ControlQueuePeak, bound-maxCommandFrame, bound)
	}
	if p0 := c.srv.Stats().Paths[0]; p0.ControlFramesDropped != 0 {
		t.Fatalf("primary dropped %d control frames for the client", p0.ControlFramesDropped)
	}
	c.request(t)
	if c.cli.Context().Err() != nil || c.srv.Context().Err() != nil {
		t.Fatal("session closed")
	}
}
