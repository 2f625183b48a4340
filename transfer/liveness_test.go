package transfer

import "testing"

func TestHeardSince(t *testing.T) {
	for _, tc := range []struct {
		name      string
		base, now map[int]uint64
		want      bool
	}{
		{"nothing new", map[int]uint64{0: 10, 1: 5}, map[int]uint64{0: 10, 1: 5}, false},
		{"path 0 grew", map[int]uint64{0: 10, 1: 5}, map[int]uint64{0: 11, 1: 5}, true},
		{"secondary grew", map[int]uint64{0: 10, 1: 5}, map[int]uint64{0: 10, 1: 6}, true},
		{"new path heard", map[int]uint64{0: 10}, map[int]uint64{0: 10, 2: 1}, true},
		{"new path silent", map[int]uint64{0: 10}, map[int]uint64{0: 10, 2: 0}, false},
		// A path that ended and dropped out of the stats is no sign of
		// life, and hides none either: a total over paths would.
		{"ended path dropped out, path 0 grew", map[int]uint64{0: 10, 1: 5000}, map[int]uint64{0: 11}, true},
		{"ended path dropped out", map[int]uint64{0: 10, 1: 5000}, map[int]uint64{0: 10}, false},
		{"no paths", map[int]uint64{0: 10}, map[int]uint64{}, false},
	} {
		if got := heardSince(tc.base, tc.now); got != tc.want {
			t.Errorf("%s: heardSince(%v, %v) = %v, want %v", tc.name, tc.base, tc.now, got, tc.want)
		}
	}
}
