package kwik

import (
	"crypto/sha256"
	"testing"
	"time"
)

func TestLatencyHistQuantiles(t *testing.T) {
	var h latencyHist
	if q := h.quantile(0.99); q != 0 {
		t.Fatalf("empty quantile = %v, want 0", q)
	}
	for range 98 {
		h.observe(100 * time.Microsecond)
	}
	h.observe(10 * time.Millisecond)
	h.observe(time.Second)
	// Buckets are 5% wide: a quantile is the upper bound of its bucket,
	// at most 5% above the value and never below it.
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 100 * time.Microsecond}, {0.98, 100 * time.Microsecond}, {0.99, 10 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(tc.q)
		if got < tc.want || float64(got) > 1.05*float64(tc.want) {
			t.Errorf("quantile(%v) = %v, want within [%v, 1.05x]", tc.q, got, tc.want)
		}
	}
}

// TestReadLatencyCountsReassemblyWaits sends a stream's second half from a
// secondary first and its first half from the primary 100 ms later: the
// second half's frames wait in reassembly about that long, and are not
// ready on arrival; frames of the first half that the client reads
// through reassembly (it is in push mode, with two sources) are ready and
// wait far less.
func TestReadLatencyCountsReassemblyWaits(t *testing.T) {
	const half = 512 << 10
	const delay = 100 * time.Millisecond
	c := newCluster(t, 1, nil)
	serveCommands(t, c.secs[0], writePattern(t))
	ids := c.addPaths(t)
	cli, srv := c.request(t)

	off := reserve(t, srv, 2*half)
	if err := c.srv.SendRawData(ids[0], Grant{StreamID: srv.StreamID(), Offset: off + half, Length: half}, []byte("second half")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second half at the client", func() bool {
		return pathStats(t, c.cli, ids[0]).DeliveredBytes == half
	})
	time.Sleep(delay) // the wait being measured
	if _, err := srv.WriteAt(pattern(off, half), int64(off)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	n, sum := readDigest(t, cli)
	if n != 2*half || sum != sha256.Sum256(pattern(0, 2*half)) {
		t.Fatalf("read %d bytes, digest mismatch %v", n, sum != sha256.Sum256(pattern(0, 2*half)))
	}

	ls := c.cli.Stats().ReadLatency
	t.Logf("%+v", ls)
	if ls.Frames == 0 || ls.Frames <= ls.ReadyFrames {
		t.Fatalf("frames %d, ready %d: want some frames, not all ready", ls.Frames, ls.ReadyFrames)
	}
	if ls.Max < delay || ls.P99 < delay {
		t.Errorf("max wait %v, p99 %v: want at least the %v the second half waited", ls.Max, ls.P99, delay)
	}
	if ls.ReadyFrames > 0 && ls.ReadyP99 >= delay {
		t.Errorf("ready frames' p99 %v, want well under %v", ls.ReadyP99, delay)
	}
	if s := c.srv.Stats().ReadLatency; s.Frames != 0 {
		t.Errorf("the primary counted %d frames; it reads requests only", s.Frames)
	}
}
