package transfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestSendChunkRoundTrip(t *testing.T) {
	v := SumAlg(SHA256, []byte("v"))
	tests := []SendChunk{
		{Path: "f", FileOffset: 0},
		{Path: "a/b/c.dat", Version: v, FileOffset: 1 << 20},
		{Path: "x", Version: v, FileOffset: math.MaxInt64},
		{Path: strings.Repeat("p", MaxPathLen), Version: v, FileOffset: math.MaxInt64},
	}
	for _, s := range tests {
		t.Run(fmt.Sprintf("%.20s@%d", s.Path, s.FileOffset), func(t *testing.T) {
			b, err := s.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if b[0] != byte(OpSendChunk) || OpSendChunk != 6 {
				t.Fatalf("first byte %d, want 6", b[0])
			}
			if len(b) > MaxSendChunkLen {
				t.Fatalf("encoded %d bytes > MaxSendChunkLen %d", len(b), MaxSendChunkLen)
			}
			got, err := DecodeSendChunk(b)
			if err != nil || *got != s {
				t.Fatalf("DecodeSendChunk = %+v, %v; want %+v", got, err, s)
			}
		})
	}
}

// TestSendChunkEncoding pins the wire format.
func TestSendChunkEncoding(t *testing.T) {
	var v Hash
	for i := range v {
		v[i] = byte(i)
	}
	b, err := (&SendChunk{Path: "ab", Version: v, FileOffset: 300}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{6, 2, 'a', 'b'}, v[:]...)
	want = append(want, 0xac, 0x02)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding %x, want %x", b, want)
	}
}

// rawSendChunk builds an encoding by hand, bypassing MarshalBinary's checks.
func rawSendChunk(op byte, path string, offset uint64, tail ...byte) []byte {
	b := appendString([]byte{op}, path)
	b = append(b, make([]byte, len(Hash{}))...)
	b = binary.AppendUvarint(b, offset)
	return append(b, tail...)
}

func TestDecodeSendChunkRejects(t *testing.T) {
	good := rawSendChunk(6, "f", 7)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrBadRequest},
		{"only type", []byte{6}, ErrBadRequest},
		{"READ type", rawSendChunk(byte(OpRead), "f", 0), ErrBadRequest},
		{"type zero", rawSendChunk(0, "f", 0), ErrBadRequest},
		{"unknown type", rawSendChunk(200, "f", 0), ErrBadRequest},
		{"root", rawSendChunk(6, "", 0), ErrBadRequest},
		{"dotdot", rawSendChunk(6, "../etc/passwd", 0), ErrOutsideRoot},
		{"inner dotdot", rawSendChunk(6, "a/../../x", 0), ErrOutsideRoot},
		{"absolute", rawSendChunk(6, "/etc/passwd", 0), ErrOutsideRoot},
		{"NUL", rawSendChunk(6, "a\x00b", 0), ErrOutsideRoot},
		{"double slash", rawSendChunk(6, "a//b", 0), ErrBadRequest},
		{"dot element", rawSendChunk(6, "./a", 0), ErrBadRequest},
		{"trailing slash", rawSendChunk(6, "a/", 0), ErrBadRequest},
		{"path too long", rawSendChunk(6, strings.Repeat("a", MaxPathLen+1), 0), ErrTooLarge},
		{"message too long", make([]byte, MaxSendChunkLen+1), ErrTooLarge},
		{"path length huge", []byte{6, 0xff, 0xff, 0xff, 0xff, 0x0f}, ErrTooLarge},
		{"truncated path", good[:3], ErrBadRequest},
		{"truncated version", good[:3+10], ErrBadRequest},
		{"missing offset", good[:len(good)-1], ErrBadRequest},
		{"bad varint", append(good[:len(good)-1], 0x80), ErrBadRequest},
		{"trailing byte", rawSendChunk(6, "f", 7, 0), ErrBadRequest},
		{"offset beyond int64", rawSendChunk(6, "f", math.MaxInt64+1), ErrBadRequest},
		{"offset max uint64", rawSendChunk(6, "f", math.MaxUint64), ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSendChunk(tt.in)
			if !errors.Is(err, tt.want) || got != nil {
				t.Fatalf("DecodeSendChunk = %+v, %v; want error %v", got, err, tt.want)
			}
		})
	}
}

func TestMarshalSendChunkRefusesInvalid(t *testing.T) {
	tests := []struct {
		s    SendChunk
		want error
	}{
		{SendChunk{Path: ""}, ErrBadRequest},
		{SendChunk{Path: "../a"}, ErrOutsideRoot},
		{SendChunk{Path: "/a"}, ErrOutsideRoot},
		{SendChunk{Path: "a//b"}, ErrBadRequest},
		{SendChunk{Path: strings.Repeat("a", MaxPathLen+1)}, ErrTooLarge},
		{SendChunk{Path: "a", FileOffset: math.MaxInt64 + 1}, ErrBadRequest},
	}
	for _, tt := range tests {
		if b, err := tt.s.MarshalBinary(); !errors.Is(err, tt.want) || b != nil {
			t.Errorf("MarshalBinary(%.30v) = %x, %v; want error %v", tt.s, b, err, tt.want)
		}
	}
}

// TestSendChunkNotARequest checks that a SEND_CHUNK never passes as a
// client request.
func TestSendChunkNotARequest(t *testing.T) {
	b, err := (&SendChunk{Path: "f"}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeRequest(b); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("DecodeRequest(SEND_CHUNK) = %v, want ErrBadRequest", err)
	}
	if OpSendChunk.Valid() {
		t.Fatal("OpSendChunk is a valid request type")
	}
}

func FuzzDecodeSendChunk(f *testing.F) {
	for _, s := range []SendChunk{
		{Path: "f"},
		{Path: "dir/file.bin", Version: SumAlg(SHA256, []byte("x")), FileOffset: 5 << 20},
		{Path: "z", FileOffset: math.MaxInt64},
	} {
		b, err := s.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(rawSendChunk(6, "../x", 0))
	f.Add(rawSendChunk(6, "f", math.MaxUint64))
	f.Add([]byte{6, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSendChunk(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrOutsideRoot) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if s.Path == "" || CheckPath(s.Path) != nil || s.FileOffset > math.MaxInt64 {
			t.Fatalf("accepted %+v", s)
		}
		enc, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a decoded SendChunk: %v", err)
		}
		if again, err := DecodeSendChunk(enc); err != nil || *again != *s {
			t.Fatalf("re-encoding changed %+v to %+v, %v", s, again, err)
		}
	})
}
