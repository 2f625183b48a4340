package transfer

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCorruptReportRoundTrip(t *testing.T) {
	tests := []CorruptReport{
		{Path: "a", Chunk: 0},
		{Path: "dir/big.bin", Version: SumAlg(SHA256, []byte("v")), Chunk: 12345},
		{Path: strings.Repeat("x", 200), Chunk: MaxChunks - 1},
	}
	for _, want := range tests {
		b, err := want.MarshalBinary()
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", want, err)
		}
		if !IsCorruptReport(b) {
			t.Errorf("IsCorruptReport(%x) = false", b)
		}
		got, err := DecodeCorruptReport(b)
		if err != nil {
			t.Fatalf("Decode(%x): %v", b, err)
		}
		if *got != want {
			t.Errorf("round trip: got %+v, want %+v", *got, want)
		}
	}
}

func TestCorruptReportRefused(t *testing.T) {
	good, err := (&CorruptReport{Path: "f", Chunk: 3}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrBadRequest},
		{"other op", append([]byte{byte(OpRead)}, good[1:]...), ErrBadRequest},
		{"truncated", good[:len(good)-1], ErrBadRequest},
		{"trailing", append(bytes.Clone(good), 0), ErrBadRequest},
		{"root", []byte{7, 0}, ErrBadRequest},
		{"dotdot", mustReport(t, "../x"), ErrOutsideRoot},
		{"too large", make([]byte, MaxCorruptReportLen+1), ErrTooLarge},
		{"chunk too big", append(append([]byte{7, 1, 'f'}, make([]byte, 32)...), 0x80, 0x80, 0x40), ErrBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeCorruptReport(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := (&CorruptReport{Path: "f", Chunk: -1}).MarshalBinary(); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Marshal of chunk -1: %v", err)
	}
}

// mustReport encodes a report by hand, bypassing MarshalBinary's checks.
func mustReport(t *testing.T, path string) []byte {
	t.Helper()
	b := []byte{byte(OpReportCorrupt)}
	b = appendString(b, path)
	b = append(b, make([]byte, 32)...)
	return append(b, 0)
}

func FuzzDecodeCorruptReport(f *testing.F) {
	for _, r := range []CorruptReport{{Path: "a", Chunk: 1}, {Path: "d/e", Version: SumAlg(SHA256, nil), Chunk: 1 << 19}} {
		b, _ := r.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{7})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeCorruptReport(b)
		if err != nil {
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %x gives %x", b, again)
		}
	})
}
