package main

import (
	"testing"

	"github.com/kwikfs/kwikfs/internal/control"
)

func TestParseCacheSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"auto", 0, false},
		{"AUTO", 0, false},
		{"unlimited", -1, false},
		{"none", -1, false},
		{"0", -1, false},
		{"8M", 8 << 20, false},
		{"512K", 512 << 10, false},
		{"10G", 10 << 30, false},
		{"10GiB", 10 << 30, false},
		{"2T", 2 << 40, false},
		{"1048576", 1 << 20, false},
		{"", 0, true},
		{"M", 0, true},
		{"-5M", 0, true},
		{"1.5G", 0, true},
		{"10X", 0, true},
		{"99999999999T", 0, true},
	} {
		got, err := parseCacheSize(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("parseCacheSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseCacheSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestStoreLimitLine(t *testing.T) {
	var st control.Status
	st.Store.DiskBytes = 3 << 20
	if got, want := storeLimit(&st), ", 3.0 MiB on disk, no limit"; got != want {
		t.Errorf("no limit: %q, want %q", got, want)
	}
	st.Store.Limit, st.Store.Evicted, st.Store.EvictedBytes, st.Store.PinnedBytes = 2<<20, 5, 5<<20, 3<<20
	want := ", 3.0 MiB of 2.0 MiB on disk, 5 evicted (5.0 MiB), 3.0 MiB pinned (open files, prefetch jobs) (over the limit: the rest is pinned)"
	if got := storeLimit(&st); got != want {
		t.Errorf("over the limit: %q, want %q", got, want)
	}
}
