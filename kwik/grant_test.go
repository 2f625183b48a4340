package kwik

import (
	"reflect"
	"testing"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

func rg(a, b uint64) wire.Range { return wire.Range{Start: a, End: b} }

func TestRangeSet(t *testing.T) {
	tests := []struct {
		name string
		add  [][2]uint64
		want []wire.Range
	}{
		{"disjoint, sorted", [][2]uint64{{20, 30}, {0, 10}, {40, 50}}, []wire.Range{rg(0, 10), rg(20, 30), rg(40, 50)}},
		{"adjacent merge", [][2]uint64{{0, 10}, {10, 20}}, []wire.Range{rg(0, 20)}},
		{"bridge", [][2]uint64{{0, 10}, {20, 30}, {40, 50}, {5, 45}}, []wire.Range{rg(0, 50)}},
		{"inside", [][2]uint64{{0, 100}, {10, 20}}, []wire.Range{rg(0, 100)}},
		{"overlap left", [][2]uint64{{10, 20}, {5, 12}}, []wire.Range{rg(5, 20)}},
		{"overlap right", [][2]uint64{{10, 20}, {18, 25}, {30, 31}}, []wire.Range{rg(10, 25), rg(30, 31)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs rangeSet
			for _, a := range tt.add {
				if !rs.add(a[0], a[1]) {
					t.Fatal("add refused")
				}
			}
			if !reflect.DeepEqual(rs.r, tt.want) {
				t.Fatalf("ranges %v, want %v", rs.r, tt.want)
			}
		})
	}
	var rs rangeSet
	for i := range uint64(maxGrantRanges) {
		if !rs.add(2*i, 2*i+1) {
			t.Fatalf("range %d refused", i)
		}
	}
	if rs.add(5000, 5001) {
		t.Fatal("range beyond maxGrantRanges accepted")
	}
	if !rs.add(1, 2) || len(rs.r) != maxGrantRanges-1 {
		t.Fatalf("a merging add: %d ranges", len(rs.r))
	}
}

func TestRangeSetClip(t *testing.T) {
	rs := &rangeSet{r: []wire.Range{rg(10, 20), rg(30, 40)}}
	type piece struct {
		a, b uint64
		in   bool
	}
	tests := []struct {
		name     string
		set      *rangeSet
		off, end uint64
		want     []piece
	}{
		{"before", rs, 0, 5, []piece{{0, 5, false}}},
		{"inside", rs, 12, 18, []piece{{12, 18, true}}},
		{"across two", rs, 5, 45, []piece{{5, 10, false}, {10, 20, true}, {20, 30, false}, {30, 40, true}, {40, 45, false}}},
		{"edge", rs, 20, 30, []piece{{20, 30, false}}},
		{"after", rs, 40, 50, []piece{{40, 50, false}}},
		{"nil set", nil, 0, 7, []piece{{0, 7, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []piece
			tt.set.clip(tt.off, tt.end, func(a, b uint64, in bool) { got = append(got, piece{a, b, in}) })
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("pieces %v, want %v", got, tt.want)
			}
		})
	}
}
