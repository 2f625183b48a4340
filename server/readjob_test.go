package server

import (
	"slices"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
)

func TestMissingAndCovered(t *testing.T) {
	d := &kwik.Delivery{Received: 100, Ranges: []kwik.Range{{Start: 150, End: 200}, {Start: 300, End: 310}}}
	tests := []struct {
		a, b    uint64
		missing []span
	}{
		{0, 100, nil},
		{50, 120, []span{{start: 100, end: 120}}},
		{150, 200, nil},
		{160, 180, nil},
		{90, 160, []span{{start: 100, end: 150}}},
		{100, 400, []span{{start: 100, end: 150}, {start: 200, end: 300}, {start: 310, end: 400}}},
		{200, 300, []span{{start: 200, end: 300}}},
		{305, 320, []span{{start: 310, end: 320}}},
	}
	for _, tc := range tests {
		got := missing(d, tc.a, tc.b)
		if !slices.Equal(got, tc.missing) {
			t.Errorf("missing(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.missing)
		}
		if c := covered(d, tc.a, tc.b); c != (len(tc.missing) == 0) {
			t.Errorf("covered(%d, %d) = %v, want %v", tc.a, tc.b, c, !c)
		}
	}
	if m := missing(&kwik.Delivery{Complete: true}, 0, 10); m != nil {
		t.Errorf("missing of a complete stream = %v", m)
	}
}

func TestSubtract(t *testing.T) {
	sp := span{start: 10, end: 20}
	tests := []struct {
		a, b uint64
		want span
	}{
		{0, 5, sp},
		{20, 30, sp},
		{15, 20, span{start: 10, end: 15}},
		{15, 25, span{start: 10, end: 15}},
		{5, 15, span{start: 15, end: 20}},
		{10, 20, span{start: 10, end: 10}},
		{0, 30, span{start: 10, end: 10}},
	}
	for _, tc := range tests {
		if got := subtract(sp, tc.a, tc.b); got != tc.want {
			t.Errorf("subtract(%v, %d, %d) = %v, want %v", sp, tc.a, tc.b, got, tc.want)
		}
	}
}

func TestUnitLen(t *testing.T) {
	o := CoordinatorOptions{}
	o.fill()
	const cs = 1 << 20
	j := &job{c: &sessionCoord{o: &o}, cs: cs, base: 1, total: 1 + 100*cs, next: 1}
	tests := []struct {
		name       string
		rate       float64
		start, end uint64
		npaths     int
		want       uint64
	}{
		{"slow path gets MinUnitBytes", 1e6, 1, 1 + 100*cs, 2, 64 << 10},
		{"slower than a chunk per UnitTime: whole granules", 4e6, 1, 1 + 100*cs, 2, 192 << 10},
		{"part of a chunk stops at the boundary", 4e6, 1 + cs - 100<<10, 1 + 100*cs, 2, 100 << 10},
		{"part of a chunk stops at end", 4e6, 1, 1 + 10<<10, 2, 10 << 10},
		{"rate x 50 ms", 100 * cs, 1, 1 + 100*cs, 1, 5 * cs},
		{"at most MaxUnitChunks", 1000 * cs, 1, 1 + 100*cs, 1, 16 * cs},
		{"cut at end", 100 * cs, 1, 1 + 3*cs, 1, 3 * cs},
		{"mid-chunk start ends on a boundary", 100 * cs, 1 + cs/2, 1 + 100*cs, 1, 4*cs + cs/2},
		{"one chunk per UnitTime from mid-chunk", 20 * cs, 1 + cs/2, 1 + 100*cs, 1, cs / 2},
	}
	for _, tc := range tests {
		p := &pathState{rate: tc.rate}
		if got := j.unitLen(p, tc.start, tc.end, tc.npaths); got != tc.want {
			t.Errorf("%s: unitLen = %d, want %d", tc.name, got, tc.want)
		}
	}
	// Near the end, units shrink so that the paths finish together.
	j.next = 1 + 96*cs
	if got := j.unitLen(&pathState{rate: 1000 * cs}, j.next, j.total, 2); got != cs {
		t.Errorf("tail unitLen = %d, want one chunk", got)
	}
}

func TestChooseWaitsForFasterPathUnlessBacklogIsLong(t *testing.T) {
	o := CoordinatorOptions{}
	o.fill()
	const cs = 1 << 20
	fast := &pathState{id: 0, rate: 12.5e6, avg: 12.5e6, rtt: 10 * time.Millisecond}
	slow := &pathState{id: 1, rate: 1e6, avg: 1e6, rtt: 40 * time.Millisecond}
	c := &sessionCoord{o: &o, paths: map[kwik.PathID]*pathState{0: fast, 1: slow}, jobs: map[*job]struct{}{}}
	j := &job{c: c, cs: cs, base: 1, next: 1}
	c.jobs[j] = struct{}{}
	paths := []*pathState{fast, slow}
	now := time.Now()
	slow.assignedAt = now // not idle long enough to be probed

	// Both have room: the one that delivers first, the fast path.
	j.total = 1 + 64*cs
	if p, _, _ := j.chooseLocked(now, paths, span{start: 1, end: j.total}); p != fast {
		t.Fatalf("both idle: chose path %v, want the fast one", p)
	}
	// The fast path is full and 64 MiB wait: it needs about 5 s for them,
	// the slow path delivers its 64 KiB unit in about 105 ms (one RTT for
	// the command and the data, plus 65 ms to send).
	fast.queued = 2 * cs
	p, n, _ := j.chooseLocked(now, paths, span{start: 1, end: j.total})
	if p != slow || n != 64<<10 {
		t.Fatalf("fast full, long backlog: chose %v with %d bytes, want the slow path with 64 KiB", p, n)
	}
	// Only 64 KiB wait and the fast path is full with 512 KiB it sends in
	// about 47 ms: it delivers the unit after that sooner than the slow
	// path would (about 105 ms), so no path takes it yet.
	j.total = 1 + 64<<10
	fast.queued = 512 << 10
	fast.rtt = 0
	o.FeedbackDelay = 1
	if p, _, _ := j.chooseLocked(now, paths, span{start: 1, end: j.total}); p != nil {
		t.Fatalf("fast full, tiny backlog: chose path %v, want none (wait for the fast path)", p.id)
	}
	// Unless the slow path has had no work for probeAfter: then it gets a
	// unit, which measures it again.
	slow.assignedAt = now.Add(-probeAfter)
	if p, _, _ := j.chooseLocked(now, paths, span{start: 1, end: j.total}); p != slow {
		t.Fatalf("slow path idle for %v: chose %v, want it probed", probeAfter, p)
	}
	slow.assignedAt = now
	// Ties (nobody faster with no room) never divide by zero.
	slow.rate, slow.avg, slow.rtt = fast.rate, fast.avg, fast.rtt
	fast.queued = 0
	if p, _, _ := j.chooseLocked(now, paths, span{start: 1, end: j.total}); p == nil {
		t.Fatal("equal idle paths: chose none")
	}
}

func TestMissesExcludeForCooldownStrikesForGood(t *testing.T) {
	o := CoordinatorOptions{}
	o.fill()
	c := &sessionCoord{o: &o, strikes: map[fileKey]*strikeRec{}}
	sec := &pathState{id: 1, addr: "sec"}
	now := time.Now()
	r := c.strikeRecLocked("sec", "f")
	for range o.MaxStrikes - 1 {
		r.miss(now)
	}
	if c.excludedLocked(sec, "f") {
		t.Fatalf("excluded after %d misses, want %d", r.misses, o.MaxStrikes)
	}
	r.miss(now)
	if !c.excludedLocked(sec, "f") {
		t.Fatal("not excluded right after MaxStrikes misses")
	}
	r.missedAt = now.Add(-o.MissCooldown)
	if c.excludedLocked(sec, "f") {
		t.Fatal("still excluded MissCooldown after the last miss")
	}
	if c.excludedLocked(&pathState{id: 0}, "f") || c.excludedLocked(sec, "other") {
		t.Fatal("path 0 or another file excluded")
	}
	r.strikes = o.MaxStrikes
	if !c.excludedLocked(sec, "f") {
		t.Fatal("not excluded after MaxStrikes strikes")
	}
}
