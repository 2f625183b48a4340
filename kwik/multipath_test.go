package kwik

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// TestStreamFromPrimaryAndTwoSecondaries splits one logical stream into
// units served in turn by the primary and two secondaries (granted
// ranges), and checks that the client reads it byte for byte, that every
// path's delivered bytes are exact on the client and, through REPORTs, on
// the primary.
func TestStreamFromPrimaryAndTwoSecondaries(t *testing.T) {
	const unit, units = 200 << 10, 12
	const size = unit * units
	c := newCluster(t, 2, nil)
	for _, sec := range c.secs {
		serveCommands(t, sec, writePattern(t))
	}
	ids := append([]PathID{0}, c.addPaths(t)...)
	cli, srv := c.request(t)

	want := map[PathID]uint64{}
	for i := range units {
		off := reserve(t, srv, unit)
		id := ids[i%3]
		want[id] += unit
		if id == 0 {
			if _, err := srv.WriteAt(pattern(off, unit), int64(off)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: unit}, []byte("unit")); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	n, sum := readDigest(t, cli)
	if n != size || sum != sha256.Sum256(pattern(0, size)) {
		t.Fatalf("read %d bytes, digest mismatch %v", n, sum != sha256.Sum256(pattern(0, size)))
	}
	for _, id := range ids {
		ps := pathStats(t, c.cli, id)
		if ps.DeliveredBytes != want[id] || ps.DuplicateBytes != 0 || ps.OutOfGrantBytes != 0 || ps.DataBytesReceived != want[id] {
			t.Errorf("client path %d: delivered %d, received %d, duplicates %d, out of grant %d; want %d delivered",
				id, ps.DeliveredBytes, ps.DataBytesReceived, ps.DuplicateBytes, ps.OutOfGrantBytes, want[id])
		}
	}
	for _, id := range ids[1:] {
		if ps := pathStats(t, c.cli, id); ps.State != PathUp || ps.CommandsSent != units/3 {
			t.Errorf("client path %d: state %v, %d commands relayed", id, ps.State, ps.CommandsSent)
		}
	}

	// The primary learns the same from the client's reports.
	d, err := srv.WaitDelivered(testCtx(t), size)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Complete || d.Received != size || len(d.Ranges) != 0 || !reflect.DeepEqual(d.ByPath, want) {
		t.Fatalf("delivery %+v, want complete %d bytes by path %v", d, size, want)
	}
	waitFor(t, "path reports", func() bool {
		for _, id := range ids {
			r := pathStats(t, c.srv, id).Reported
			if r == nil || r.DeliveredBytes != want[id] {
				return false
			}
		}
		return true
	})
	for _, id := range ids[1:] {
		ps := pathStats(t, c.srv, id)
		if ps.State != PathUp || ps.Addr != c.secs[id-1].AdvertisedAddr() || ps.CommandsSent != units/3 ||
			ps.Reported.SmoothedRTT <= 0 || ps.Reported.DuplicateBytes != 0 || ps.Reported.ReceivedFrames == 0 {
			t.Errorf("primary's path %d: %+v, reported %+v", id, ps, ps.Reported)
		}
	}
	for i, sec := range c.secs {
		st := sec.Stats()
		if st.CommandsAccepted != units/3 || st.DataBytesSent != units/3*unit || st.PathsOpen != 1 || st.TokensRefused != 0 {
			t.Errorf("secondary %d: %+v", i, st)
		}
	}
}

// TestSameRangeFromTwoPaths sends one range from the primary and from a
// secondary, as hedging does: the client reads it once and counts exactly
// one copy as duplicate bytes.
func TestSameRangeFromTwoPaths(t *testing.T) {
	const size = 1 << 20
	c := newCluster(t, 1, nil)
	serveCommands(t, c.secs[0], writePattern(t))
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	if _, err := srv.Write(pattern(0, size)); err != nil {
		t.Fatal(err)
	}
	if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: 0, Length: size}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// The client holds back the last byte until both copies are in: a
	// client that has finished a stream drops commands for it (the copy
	// would only be duplicates).
	got := make([]byte, size-1)
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both copies", func() bool {
		for _, ps := range []PathStats{pathStats(t, c.cli, 0), pathStats(t, c.cli, id)} {
			if ps.DeliveredBytes+ps.DuplicateBytes+ps.OutOfGrantBytes != size {
				return false
			}
		}
		return true
	})
	rest, err := io.ReadAll(cli)
	if err != nil || !bytes.Equal(append(got, rest...), pattern(0, size)) {
		t.Fatalf("read %d bytes, %v; content mismatch", len(got)+len(rest), err)
	}
	p0, p1 := pathStats(t, c.cli, 0), pathStats(t, c.cli, id)
	if p0.DeliveredBytes+p1.DeliveredBytes != size || p0.DuplicateBytes+p1.DuplicateBytes != size ||
		p0.DeliveredBytes+p0.DuplicateBytes != size || p1.OutOfGrantBytes != 0 {
		t.Fatalf("path 0 delivered %d dup %d, path %d delivered %d dup %d; want one copy each",
			p0.DeliveredBytes, p0.DuplicateBytes, id, p1.DeliveredBytes, p1.DuplicateBytes)
	}
	d, err := srv.WaitDelivered(testCtx(t), size)
	if err != nil || d.ByPath[0]+d.ByPath[id] != size {
		t.Fatalf("delivery %+v, %v", d, err)
	}
}

// TestSecondaryKilledMidTransfer kills one of two secondaries after it has
// delivered half of its grant: the primary learns that the path failed,
// the other secondary keeps working, and the stream completes when the
// primary sends the missing range itself.
func TestSecondaryKilledMidTransfer(t *testing.T) {
	const q = 512 << 10 // [0,q) primary; [q,3q) secondary 1, which dies after [q,2q); [3q,4q) secondary 2
	c := newCluster(t, 2, func(_, _, cli *Config) {
		cli.IdleTimeout = time.Second
		cli.KeepAlivePeriod = 100 * time.Millisecond
	})
	release := make(chan struct{})
	serveCommands(t, c.secs[0], func(cmd *Command) {
		g := cmd.Grant()
		if _, err := cmd.Write(pattern(g.Offset, q)); err != nil {
			t.Errorf("first half: %v", err)
		}
		select {
		case <-release:
		case <-cmd.Context().Done():
		}
	})
	serveCommands(t, c.secs[1], writePattern(t))
	ids := c.addPaths(t)
	cli, srv := c.request(t)
	if _, err := srv.Write(pattern(0, q)); err != nil {
		t.Fatal(err)
	}
	off := reserve(t, srv, 3*q)
	if err := c.srv.SendRawData(ids[0], Grant{StreamID: srv.StreamID(), Offset: off, Length: 2 * q}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.WaitDelivered(testCtx(t), 2*q); err != nil {
		t.Fatal(err)
	}

	// Kill secondary 1: its socket vanishes without a CONNECTION_CLOSE.
	c.secs[0].tr.conn.Close()
	close(release)
	ev, err := c.srv.NextPathEvent(testCtx(t))
	var pe *PathError
	if err != nil || ev.Path != ids[0] || ev.State != PathFailed || !errors.As(ev.Err, &pe) || pe.Code == NoError {
		t.Fatalf("event %+v, %v; want path %d failed", ev, err, ids[0])
	}
	if ps := pathStats(t, c.srv, ids[0]); ps.State != PathFailed || ps.Err == nil {
		t.Fatalf("primary's stats of the dead path: state %v, err %v", ps.State, ps.Err)
	}
	if err := c.srv.SendRawData(ids[0], Grant{StreamID: srv.StreamID(), Offset: 2 * q, Length: q}, nil); !errors.Is(err, ErrPathNotUp) {
		t.Fatalf("SendRawData to the dead path: %v, want ErrPathNotUp", err)
	}

	// The other secondary still serves, and the primary sends the rest.
	if err := c.srv.SendRawData(ids[1], Grant{StreamID: srv.StreamID(), Offset: 3 * q, Length: q}, nil); err != nil {
		t.Fatal(err)
	}
	d := srv.Delivered()
	if d.Received != 2*q || d.ByPath[ids[0]] != q {
		t.Fatalf("before the resend: %+v", d)
	}
	if _, err := srv.WriteAt(pattern(2*q, q), 2*q); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, sum := readDigest(t, cli); n != 4*q || sum != sha256.Sum256(pattern(0, 4*q)) {
		t.Fatalf("read %d bytes, digest mismatch", n)
	}
	for id, want := range map[PathID]uint64{0: 2 * q, ids[0]: q, ids[1]: q} {
		if ps := pathStats(t, c.cli, id); ps.DeliveredBytes != want || ps.DuplicateBytes != 0 {
			t.Errorf("path %d delivered %d (dup %d), want %d", id, ps.DeliveredBytes, ps.DuplicateBytes, want)
		}
	}
	if ps := pathStats(t, c.cli, ids[1]); ps.State != PathUp {
		t.Errorf("the other secondary's path is %v", ps.State)
	}
	c.request(t) // the session still carries new streams
	if c.cli.Context().Err() != nil || c.srv.Context().Err() != nil {
		t.Fatal("the session closed")
	}
}

// TestSecondaryClosedIsReportedClosed checks that an orderly shutdown of a
// secondary ends its path as closed, not failed.
func TestSecondaryClosedIsReportedClosed(t *testing.T) {
	c := newCluster(t, 1, nil)
	id := c.addPaths(t)[0]
	c.secs[0].Close()
	ev, err := c.srv.NextPathEvent(testCtx(t))
	var pe *PathError
	if err != nil || ev.Path != id || ev.State != PathClosed || !errors.As(ev.Err, &pe) || pe.Code != NoError || !pe.Remote {
		t.Fatalf("event %+v (%v), %v; want path %d closed", ev, ev.Err, err, id)
	}
	if ev, err := c.cli.NextPathEvent(testCtx(t)); err != nil || ev.State != PathUp {
		t.Fatalf("client's first event %+v, %v", ev, err)
	}
	if ev, err := c.cli.NextPathEvent(testCtx(t)); err != nil || ev.State != PathClosed {
		t.Fatalf("client's second event %+v, %v", ev, err)
	}
}

// TestMultipathAPIErrors checks the refusals of AddPath and SendRawData.
func TestMultipathAPIErrors(t *testing.T) {
	c := newCluster(t, 1, func(_, _, cli *Config) { cli.MaxPaths = 1 })
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	if _, err := srv.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	nokey := newPair(t, nil)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"unknown path", c.srv.SendRawData(9, Grant{StreamID: srv.StreamID(), Length: 10}, nil), ErrPathNotUp},
		{"beyond committed", c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: 50, Length: 51}, nil), ErrNotReserved},
		{"too large", c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Length: 10}, make([]byte, DefaultMaxControlFrameSize)), ErrCommandTooLarge},
		{"client SendRawData", c.cli.SendRawData(id, Grant{Length: 1}, nil), ErrNotPrimary},
		{"client AddPath", second(c.cli.AddPath(testCtx(t), "127.0.0.1:1")), ErrNotPrimary},
		{"no signing key", second(nokey.srv.AddPath(testCtx(t), "127.0.0.1:1")), ErrNoSigningKey},
		{"path limit", second(c.srv.AddPath(testCtx(t), c.secs[0].AdvertisedAddr())), ErrPathLimit},
		{"WriteAt beyond committed", second(srv.WriteAt([]byte("x"), 100)), ErrNotReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errIs(tt.err, tt.want) {
				t.Fatalf("err = %v, want %v", tt.err, tt.want)
			}
		})
	}
	if err := c.srv.SendRawData(id, Grant{StreamID: 999, Length: 1}, nil); err == nil {
		t.Fatal("grant on a stream that is not open accepted")
	}
	if ps := pathStats(t, c.srv, 2); ps.State != PathFailed {
		t.Fatalf("refused path is %v", ps.State)
	}
}

func second[T any](_ T, err error) error { return err }

// TestReportsSplitToFitSmallControlFrames makes the client report many
// streams to a primary that accepts only 1 KiB control frames.
func TestReportsSplitToFitSmallControlFrames(t *testing.T) {
	const streams = 120
	c := newCluster(t, 1, func(prim, _, _ *Config) {
		prim.MaxControlFrameSize = 1 << 10
	})
	c.addPaths(t)
	ctx := testCtx(t)
	var srvs []*Stream
	for i := range streams {
		st, err := c.srv.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, st)
	}
	for range streams {
		st, err := c.cli.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Read(make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range srvs {
		if d, err := st.WaitDelivered(ctx, uint64(len(fmt.Sprint(i)))); err != nil || d.ByPath[0] != uint64(len(fmt.Sprint(i))) {
			t.Fatalf("stream %d: %+v, %v", st.StreamID(), d, err)
		}
	}
	if c.srv.Context().Err() != nil {
		t.Fatal("session closed")
	}
}

// TestWaitDeliveredEndsWithReset checks that a reset wakes WaitDelivered.
func TestWaitDeliveredEndsWithReset(t *testing.T) {
	c := newCluster(t, 0, nil)
	_, srv := c.request(t)
	errc := make(chan error, 1)
	go func() {
		_, err := srv.WaitDelivered(context.Background(), 10)
		errc <- err
	}()
	srv.CancelWrite(0x123)
	if err := <-errc; !errors.Is(err, &StreamError{Code: 0x123}) {
		t.Fatalf("WaitDelivered: %v", err)
	}
}

// TestGrantBeyondWindowClosesSession makes the primary grant more than the
// client's stream window: the primary broke flow control, so the client
// closes the session.
func TestGrantBeyondWindowClosesSession(t *testing.T) {
	c := newCluster(t, 1, func(_, _, cli *Config) { cli.StreamReceiveWindow = 1 << 20 })
	id := c.addPaths(t)[0]
	_, srv := c.request(t)
	b := c.command(id, 1, time.Now().Add(time.Minute), Grant{StreamID: srv.StreamID(), Offset: 1 << 19, Length: 1<<19 + 1}, "", nil)
	c.srv.p0.out.push(&wire.RawData{PathID: uint64(id), Command: b})
	se := closeCause(t, c.cli)
	if se.Code != FlowControlError || !strings.Contains(se.Message, "window ends at 1048576") {
		t.Fatalf("client closed with %v", se)
	}
	if n := c.secs[0].Stats().CommandsAccepted; n != 0 {
		t.Fatalf("%d commands reached the secondary", n)
	}
}

// TestPacketsReceivedNeverDecreases: a client's PacketsReceived grows with
// every path's traffic and keeps the packets of ended paths, also of those
// the session forgets once more than maxEndedPaths have ended.
func TestPacketsReceivedNeverDecreases(t *testing.T) {
	c := newCluster(t, maxEndedPaths+2, nil)
	last := c.cli.PacketsReceived()
	for _, sec := range c.secs {
		id, err := c.srv.AddPath(testCtx(t), sec.AdvertisedAddr())
		if err != nil {
			t.Fatal(err)
		}
		for up := false; !up; {
			ev, err := c.cli.NextPathEvent(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			up = ev.Path == id && ev.State == PathUp
		}
		if n := c.cli.PacketsReceived(); n <= last {
			t.Fatalf("PacketsReceived %d after path %d came up, %d before", n, id, last)
		} else {
			last = n
		}
		sec.Close()
		for ended := false; !ended; {
			ev, err := c.cli.NextPathEvent(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			ended = ev.Path == id && ev.State.ended()
		}
		if n := c.cli.PacketsReceived(); n < last {
			t.Fatalf("PacketsReceived fell from %d to %d when path %d ended", last, n, id)
		} else {
			last = n
		}
	}
	if n := len(c.cli.Stats().Paths); n != 1+maxEndedPaths {
		t.Errorf("%d paths in the stats, want the primary's and %d ended ones", n, maxEndedPaths)
	}
	cli, srv := c.request(t)
	if _, err := srv.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := io.ReadAll(cli); err != nil {
		t.Fatal(err)
	}
	if n := c.cli.PacketsReceived(); n <= last {
		t.Errorf("PacketsReceived %d after a reply, %d before", n, last)
	}
}
