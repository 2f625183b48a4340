package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a flag.Value holding a size in bytes, the SIZE of every kwikfs
// command: a whole number with an optional binary unit, K, M, G or T
// (KiB, MiB, GiB, TiB), which may be followed by "iB" or "B" and is
// case-insensitive: 1048576, 100B, 512K, 64M, 256MiB, 2G, 1T. Fractions
// (1.5G) are refused; write 1536M. Set accepts positive sizes only. The
// zero Size is 0, which a flag's users read as "not set" when 0 is its
// default.
type Size int64

// String returns the size in the syntax Set reads, with the largest unit
// that divides it exactly: "64M", "1536K", "1000".
func (s *Size) String() string { return FormatSize(int64(*s)) }

// Set parses v as ParseSize does.
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// ParseSize parses a positive size written as Size describes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		case 't', 'T':
			shift = 40
		}
		if shift != 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("bad size %q: want a positive whole number of bytes, optionally with K, M, G or T (binary units), e.g. 512K, 64M or 2G", s)
	}
	return n << shift, nil
}

// FormatSize writes n bytes as Size.String does.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		shift uint
		name  byte
	}{{40, 'T'}, {30, 'G'}, {20, 'M'}, {10, 'K'}} {
		if n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + string(u.name)
		}
	}
	return strconv.FormatInt(n, 10)
}
