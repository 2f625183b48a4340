package cli

import "testing"

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20},
		{"1", 1},
		{"512K", 512 << 10},
		{"512k", 512 << 10},
		{"256M", 256 << 20},
		{"256MiB", 256 << 20},
		{"256MB", 256 << 20},
		{" 64M ", 64 << 20},
		{"1g", 1 << 30},
		{"2GiB", 2 << 30},
		{"1T", 1 << 40},
		{"100B", 100},
		{"8388607T", 8388607 << 40},
	} {
		if got, err := ParseSize(c.in); err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "M", "0", "0K", "-5M", "1.5G", "12X", "9999999999T", "8388608T", "1 M", "0x10"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestSizeStringRoundTrips: String writes a size in the syntax Set reads,
// with the largest exact unit, and Set reads it back to the same value.
func TestSizeStringRoundTrips(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1000"},
		{1 << 10, "1K"},
		{1536 << 10, "1536K"},
		{64 << 20, "64M"},
		{256 << 20, "256M"},
		{1 << 30, "1G"},
		{3 << 40, "3T"},
		{1<<40 + 1<<20, "1048577M"},
	} {
		s := Size(c.n)
		if got := s.String(); got != c.want {
			t.Errorf("Size(%d).String() = %q, want %q", c.n, got, c.want)
		}
		if c.n == 0 {
			continue
		}
		var back Size
		if err := back.Set(s.String()); err != nil || back != s {
			t.Errorf("Set(%q) = %d, %v; want %d", s.String(), back, err, c.n)
		}
	}
}
