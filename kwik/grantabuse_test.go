package kwik

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/reassembly"
	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// TestSecondaryGrantViolationClosesPath has a hostile secondary write
// outside its grant beyond each bound: too many bytes, too many frames
// (with bytes outside, without payload, with a FIN), data for too many
// streams that do not exist. The client closes the path with
// ProtocolViolation at the first byte, frame or stream beyond the bound,
// counts it, tells the primary, and keeps the session.
func TestSecondaryGrantViolationClosesPath(t *testing.T) {
	const frameMax = DefaultMaxDataFramePayload
	tests := []struct {
		name  string
		write func(cmd *Command) error
		want  string
		// the client's counters of the path once closed
		oogBytes, oogFrames, refused, delivered, frames uint64
	}{
		{"bytes", func(cmd *Command) error {
			// Five full frames just past the grant: the path is closed
			// in the fifth, at its first piece beyond 1 MiB.
			cmd.mu.Lock()
			defer cmd.mu.Unlock()
			_, err := cmd.writeLocked(cmd.Grant().End(), bytes.Repeat([]byte{0xee}, 5*frameMax), false)
			return err
		},
			fmt.Sprintf("secondary wrote %d bytes outside its grants, over the limit of %d", maxOutOfGrantBytes+reassembly.MaxChunk, maxOutOfGrantBytes),
			maxOutOfGrantBytes + reassembly.MaxChunk, 4, 0, 0, 5},
		{"frames", func(cmd *Command) error {
			g := cmd.Grant()
			fs := []frame{{off: g.Offset, data: pattern(g.Offset, 10)}} // inside: delivered
			for i := range uint64(7) {
				fs = append(fs, frame{off: g.End() + 10*i, data: bytes.Repeat([]byte{0xee}, 10)})
			}
			fs = append(fs, frame{off: g.Offset}, frame{off: g.Offset + 10, fin: true}) // empty; bare FIN
			return rawUni(cmd, dataFrames(uint64(g.StreamID), fs...))
		},
			fmt.Sprintf("secondary wrote %d data frames outside its grants, over the limit of %d", maxOutOfGrantFrames+1, maxOutOfGrantFrames),
			70, maxOutOfGrantFrames + 1, 0, 10, 10},
		{"streams", func(cmd *Command) error {
			for i := range uint64(maxRefusedStreams + 1) {
				// Client streams the client never opened; headers only.
				if err := rawUni(cmd, wire.AppendStreamHeader(nil, 1000+2*i)); err != nil {
					return err
				}
			}
			return nil
		},
			fmt.Sprintf("secondary wrote data for %d streams that do not exist, over the limit of %d", maxRefusedStreams+1, maxRefusedStreams),
			0, 0, maxRefusedStreams + 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 1, nil)
			wrote := make(chan error, 1)
			serveCommands(t, c.secs[0], func(cmd *Command) { wrote <- tt.write(cmd) })
			id := c.addPaths(t)[0]
			_, srv := c.request(t)
			off := reserve(t, srv, 1000)
			if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}, nil); err != nil {
				t.Fatal(err)
			}

			ev, err := c.srv.NextPathEvent(testCtx(t))
			var pe *PathError
			if err != nil || ev.Path != id || ev.State != PathFailed || !errors.As(ev.Err, &pe) ||
				pe.Code != ProtocolViolation || !pe.Remote || pe.Message != tt.want {
				t.Fatalf("primary's event %+v (%v), %v; want path %d failed with remote %v %q", ev, ev.Err, err, id, ProtocolViolation, tt.want)
			}
			<-wrote // whatever the hostile writes returned once the path closed
			ps := pathStats(t, c.cli, id)
			if ps.State != PathFailed || !ps.GrantViolation || ps.Stalled || !errors.Is(ps.Err, ErrGrantViolation) {
				t.Fatalf("client's path %d: state %v, grant violation %v, stalled %v, err %v", id, ps.State, ps.GrantViolation, ps.Stalled, ps.Err)
			}
			if !errors.As(ps.Err, &pe) || pe.Code != ProtocolViolation || pe.Remote || pe.Message != tt.want {
				t.Fatalf("client's path error %#v; want local %v %q", ps.Err, ProtocolViolation, tt.want)
			}
			if ps.OutOfGrantBytes != tt.oogBytes || ps.OutOfGrantFrames != tt.oogFrames || ps.RefusedStreams != tt.refused ||
				ps.DeliveredBytes != tt.delivered || ps.DataFramesReceived != tt.frames {
				t.Fatalf("out of grant %d bytes in %d frames, %d refused streams, delivered %d, %d frames; want %d, %d, %d, %d, %d",
					ps.OutOfGrantBytes, ps.OutOfGrantFrames, ps.RefusedStreams, ps.DeliveredBytes, ps.DataFramesReceived,
					tt.oogBytes, tt.oogFrames, tt.refused, tt.delivered, tt.frames)
			}
			if st := c.cli.Stats(); st.GrantViolationPaths != 1 || st.StalledPaths != 0 {
				t.Fatalf("client counts %d grant violations, %d stalls; want 1, 0", st.GrantViolationPaths, st.StalledPaths)
			}
			if pp := pathStats(t, c.srv, id); pp.State != PathFailed || pp.Stalled {
				t.Fatalf("primary's record of the path: %v, stalled %v", pp.State, pp.Stalled)
			}
			c.request(t)
			if c.cli.Context().Err() != nil || c.srv.Context().Err() != nil {
				t.Fatal("session closed")
			}
		})
	}
}

// trickle writes a data stream for stream id of cmd's path: one frame
// header for [off, off+n), then its payload, pattern bytes, piece bytes
// every tick, until done or the path ends. It counts the payload bytes
// written in sent.
func trickle(cmd *Command, id StreamID, off uint64, n, piece int, tick time.Duration, sent *atomic.Int64) error {
	u, err := cmd.p.conn.OpenUniStreamSync(cmd.Context())
	if err != nil {
		return err
	}
	defer u.Close()
	hdr := wire.DataHeader{Offset: off, Length: uint64(n)}.Append(wire.AppendStreamHeader(nil, uint64(id)))
	if _, err := u.Write(hdr); err != nil {
		return err
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for done := 0; done < n; done += piece {
		select {
		case <-t.C:
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		}
		if _, err := u.Write(pattern(off+uint64(done), min(piece, n-done))); err != nil {
			return err
		}
		sent.Add(int64(min(piece, n-done)))
	}
	return nil
}

// TestOutOfGrantTrickleStalls has a secondary answer its command with one
// frame outside its grant whose bytes keep arriving, slowly (well within
// the bounds on such bytes): they are not data, so the path is closed as
// stalled once PathStallTimeout has passed since the command was relayed.
func TestOutOfGrantTrickleStalls(t *testing.T) {
	const limit = 300 * time.Millisecond
	const every = 20 * time.Millisecond
	c := stallCluster(t, limit)
	var sent atomic.Int64
	serveCommands(t, c.secs[0], func(cmd *Command) {
		g := cmd.Grant()
		trickle(cmd, g.StreamID, g.End(), 60000, 100, every, &sent)
	})
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	off := reserve(t, srv, 1000)
	given := time.Now()
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: 1000}, nil); err != nil {
		t.Fatal(err)
	}
	ev, err := c.srv.NextPathEvent(testCtx(t))
	elapsed := time.Since(given)
	var pe *PathError
	if err != nil || ev.Path != id || ev.State != PathFailed || !errors.As(ev.Err, &pe) || pe.Code != PathStalled || !errors.Is(ev.Err, ErrPathStalled) {
		t.Fatalf("primary's event %+v (%v), %v; want path %d stalled", ev, ev.Err, err, id)
	}
	if elapsed < limit || elapsed > limit+2*time.Second {
		t.Errorf("path ended %v after the work was given, want within about PathStallTimeout (%v)", elapsed, limit)
	}
	if n := sent.Load(); n < 500 {
		t.Fatalf("the secondary sent %d bytes before the stall: the test proves nothing", n)
	}
	ps := pathStats(t, c.cli, id)
	if ps.State != PathFailed || !ps.Stalled || ps.GrantViolation || ps.DeliveredBytes != 0 || ps.DataFramesReceived != 1 {
		t.Fatalf("client's path %d: state %v (%v), stalled %v, grant violation %v, delivered %d, %d frames",
			id, ps.State, ps.Err, ps.Stalled, ps.GrantViolation, ps.DeliveredBytes, ps.DataFramesReceived)
	}
	if st := c.cli.Stats(); st.StalledPaths != 1 || st.GrantViolationPaths != 0 {
		t.Fatalf("client counts %d stalls, %d grant violations; want 1, 0", st.StalledPaths, st.GrantViolationPaths)
	}
}

// TestGrantedTrickleNotStalled has a secondary send its whole grant as one
// frame whose bytes arrive slowly, over several PathStallTimeouts but
// never silent for one: each read of granted bytes counts as data, also
// inside the frame, so the path stays up and delivers.
func TestGrantedTrickleNotStalled(t *testing.T) {
	const limit = 300 * time.Millisecond
	const every = 20 * time.Millisecond
	const size, piece = 6000, 100 // 60 pieces: 1.2 s
	c := stallCluster(t, limit)
	var sent atomic.Int64
	serveCommands(t, c.secs[0], func(cmd *Command) {
		g := cmd.Grant()
		if err := trickle(cmd, g.StreamID, g.Offset, int(g.Length), piece, every, &sent); err != nil {
			t.Errorf("trickle: %v", err)
		}
	})
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	start := time.Now()
	off := reserve(t, srv, size)
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: size}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readBounded(t, cli); n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("read %d bytes, digest mismatch", n)
	}
	if took := time.Since(start); took < 3*limit {
		t.Fatalf("the trickle took %v, not several PathStallTimeouts (%v): the test proves nothing", took, limit)
	}
	ps := pathStats(t, c.cli, id)
	if ps.State != PathUp || ps.Stalled || ps.DeliveredBytes != size || ps.DataFramesReceived != 1 || ps.OutOfGrantBytes != 0 {
		t.Fatalf("slow path: state %v (%v), stalled %v, delivered %d, %d frames, %d out of grant",
			ps.State, ps.Err, ps.Stalled, ps.DeliveredBytes, ps.DataFramesReceived, ps.OutOfGrantBytes)
	}
	if st := c.cli.Stats(); st.StalledPaths != 0 || st.GrantViolationPaths != 0 {
		t.Fatalf("client counts %d stalls, %d grant violations", st.StalledPaths, st.GrantViolationPaths)
	}
	if ps := pathStats(t, c.srv, id); ps.State != PathUp {
		t.Fatalf("primary's record of the slow path: %v (%v)", ps.State, ps.Err)
	}
}
