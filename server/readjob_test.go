package server

import (
	"slices"
	"testing"

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
		{"slow path gets one chunk", 1e6, 1, 1 + 100*cs, 2, cs},
		{"rate x 50 ms", 100 * cs, 1, 1 + 100*cs, 1, 5 * cs},
		{"at most MaxUnitChunks", 1000 * cs, 1, 1 + 100*cs, 1, 16 * cs},
		{"cut at end", 100 * cs, 1, 1 + 3*cs, 1, 3 * cs},
		{"mid-chunk start ends on a boundary", 1e6, 1 + cs/2, 1 + 100*cs, 1, cs / 2},
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
