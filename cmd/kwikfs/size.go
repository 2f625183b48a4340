package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSize is a flag.Value holding a size in bytes, written as a number
// with an optional binary unit: 1048576, 512K, 256M, 256MiB, 1G, 1GiB,
// 1T.
type byteSize int64

func (b *byteSize) String() string { return humanBytes(int64(*b)) }

func (b *byteSize) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

// parseSize parses a size written as byteSize describes; it must be
// positive.
func parseSize(s string) (int64, error) {
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
		return 0, fmt.Errorf("bad size %q: want a positive number of bytes, optionally with K, M, G or T (binary units)", s)
	}
	return n << shift, nil
}
