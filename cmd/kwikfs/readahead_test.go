package main

import (
	"errors"
	"testing"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/cli"
)

func TestReadAheadMax(t *testing.T) {
	for _, tc := range []struct {
		flag, want int
		err        error
	}{
		{flag: 0, want: -1},
		{flag: 1, want: 1},
		{flag: fusefs.DefaultReadAheadMax, want: fusefs.DefaultReadAheadMax},
		{flag: 64, want: 64},
		{flag: -1, err: cli.ErrUsage},
	} {
		got, err := readAheadMax(tc.flag)
		if !errors.Is(err, tc.err) || (tc.err == nil && got != tc.want) {
			t.Errorf("readAheadMax(%d) = %d, %v; want %d, %v", tc.flag, got, err, tc.want, tc.err)
		}
	}
}
