package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenCacheLimits: size 0 lets the store choose its limit, a negative
// size means none, a positive one is the limit.
func TestOpenCacheLimits(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		size int64
		want func(int64) bool
	}{
		{"auto", 0, func(l int64) bool { return l > 0 }},
		{"none", -1, func(l int64) bool { return l == 0 }},
		{"8M", 8 << 20, func(l int64) bool { return l == 8<<20 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			s, err := OpenCache(dir, tc.size, log)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if l := s.Limit(); !tc.want(l) {
				t.Fatalf("OpenCache(size %d): Limit() = %d", tc.size, l)
			}
			st, err := os.Stat(dir)
			if err != nil || st.Mode().Perm() != 0o700 {
				t.Fatalf("cache directory: %v, %v; want mode 0700", st.Mode(), err)
			}
			if _, err := os.Stat(filepath.Join(dir, StoreDir)); err != nil {
				t.Fatalf("store directory: %v", err)
			}
		})
	}
}

// TestOpenCacheHeld: a cache a mount holds fails to open, and says why.
func TestOpenCacheHeld(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	s, err := OpenCache(dir, -1, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenCache(dir, -1, log); err == nil || !strings.Contains(err.Error(), "a mount using it holds it") {
		t.Fatalf("second OpenCache = %v, want the held-cache error", err)
	}
}
