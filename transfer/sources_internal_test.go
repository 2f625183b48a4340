package transfer

import (
	"maps"
	"testing"

	"github.com/kwikfs/kwikfs/kwik"
)

func TestApportion(t *testing.T) {
	tests := []struct {
		name   string
		byPath map[kwik.PathID]uint64
		total  uint64
		want   map[kwik.PathID]uint64
	}{
		{"exact", map[kwik.PathID]uint64{0: 10, 1: 20}, 30, map[kwik.PathID]uint64{0: 10, 1: 20}},
		{"less than total kept", map[kwik.PathID]uint64{0: 10}, 30, map[kwik.PathID]uint64{0: 10}},
		{"halved", map[kwik.PathID]uint64{0: 10, 1: 20}, 15, map[kwik.PathID]uint64{0: 5, 1: 10}},
		{"rounding to largest, ties to lower ID", map[kwik.PathID]uint64{0: 1, 1: 1, 2: 2}, 3, map[kwik.PathID]uint64{0: 1, 1: 0, 2: 2}},
		{"huge", map[kwik.PathID]uint64{0: 1 << 62, 1: 1 << 62}, 1 << 62, map[kwik.PathID]uint64{0: 1 << 61, 1: 1 << 61}},
		{"zero", map[kwik.PathID]uint64{0: 7, 1: 3}, 0, map[kwik.PathID]uint64{0: 0, 1: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := apportion(maps.Clone(tt.byPath), tt.total); !maps.Equal(got, tt.want) {
				t.Errorf("apportion(%v, %d) = %v, want %v", tt.byPath, tt.total, got, tt.want)
			}
		})
	}
}

func TestSourcesAdd(t *testing.T) {
	var s Sources
	s.Add(nil)
	s.Add(Sources{})
	if s != nil {
		t.Fatalf("Add of nothing made %v, want nil", s)
	}
	a := Sources{"p:1": 10, "s:2": 5}
	s.Add(a)
	s.Add(Sources{"p:1": 1, "s:3": 7})
	if want := (Sources{"p:1": 11, "s:2": 5, "s:3": 7}); !maps.Equal(s, want) {
		t.Fatalf("sum %v, want %v", s, want)
	}
	if a["p:1"] != 10 {
		t.Fatalf("Add changed its argument: %v", a)
	}
}
