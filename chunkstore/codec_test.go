package chunkstore

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want int64
		err  bool
	}{
		{"zero", encodeInfo(0), 0, false},
		{"1MiB", encodeInfo(1 << 20), 1 << 20, false},
		{"literal", []byte{1, 0x10, 0x20, 0, 0, 0, 0, 0, 0}, 0x2010, false},
		{"empty", nil, 0, true},
		{"short", []byte{1, 0, 0, 0}, 0, true},
		{"long", append(encodeInfo(5), 0), 0, true},
		{"unknown format", []byte{2, 5, 0, 0, 0, 0, 0, 0, 0}, 0, true},
		{"length out of range", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0x80}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeInfo(tc.in)
			if tc.err {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("decodeInfo(%x) = %d, %v; want ErrCorrupt", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("decodeInfo(%x) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestDecodeMeta(t *testing.T) {
	flipped := encodeMeta([]byte("hello"))
	flipped[len(flipped)-1] ^= 1
	badCRC := encodeMeta([]byte("hello"))
	badCRC[2] ^= 1
	badFormat := encodeMeta([]byte("hello"))
	badFormat[0] = 9
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
		err  bool
	}{
		{"empty value", encodeMeta(nil), []byte{}, false},
		{"value", encodeMeta([]byte("hello")), []byte("hello"), false},
		// CRC-32C of "hello" is 0x9a71bb4c.
		{"literal", []byte{1, 0x4c, 0xbb, 0x71, 0x9a, 'h', 'e', 'l', 'l', 'o'}, []byte("hello"), false},
		{"nil", nil, nil, true},
		{"short", []byte{1, 0, 0, 0}, nil, true},
		{"flipped value bit", flipped, nil, true},
		{"flipped crc bit", badCRC, nil, true},
		{"unknown format", badFormat, nil, true},
		{"truncated", encodeMeta([]byte("hello"))[:7], nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeMeta(tc.in)
			if tc.err {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("decodeMeta(%x) = %q, %v; want ErrCorrupt", tc.in, got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("decodeMeta(%x) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestKeysHaveDistinctNamespaces(t *testing.T) {
	var sum [32]byte
	sum[0] = nsMeta
	ck, ik, mk := chunkKey(sum), infoKey(sum), metaKey(string(sum[:]))
	if ck[0] != nsChunk || ik[0] != nsInfo || mk[0] != nsMeta {
		t.Fatalf("namespaces %q %q %q", ck[0], ik[0], mk[0])
	}
	if bytes.Equal(ck, mk) || bytes.Equal(ik, mk) || bytes.Equal(ck, ik) {
		t.Fatal("keys of different namespaces are equal")
	}
}

func FuzzDecodeInfo(f *testing.F) {
	f.Add(encodeInfo(1 << 20))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeInfo(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if n < 0 || !bytes.Equal(encodeInfo(int(n)), b) {
			t.Fatalf("decodeInfo(%x) = %d does not re-encode to its input", b, n)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta([]byte("manifest")))
	f.Add(encodeMeta(nil))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(encodeMeta(v), b) {
			t.Fatalf("decodeMeta(%x) = %x does not re-encode to its input", b, v)
		}
	})
}
