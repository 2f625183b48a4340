package chunkstore

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

func TestDecodeInfo(t *testing.T) {
	mib := location{seg: 3, off: 5 << 20, n: 1 << 20}
	for _, tc := range []struct {
		name string
		in   []byte
		want location
		err  bool
	}{
		{"zero length", encodeInfo(location{seg: 1}), location{seg: 1}, false},
		{"1MiB", encodeInfo(mib), mib, false},
		{"largest", encodeInfo(location{seg: 1<<32 - 1, off: maxLocation, n: maxLocation}), location{seg: 1<<32 - 1, off: maxLocation, n: maxLocation}, false},
		{"literal", []byte{2, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, location{seg: 7, off: 0x100, n: 0x2010}, false},
		{"empty", nil, location{}, true},
		{"short", encodeInfo(mib)[:infoLen-1], location{}, true},
		{"format 1", []byte{1, 5, 0, 0, 0, 0, 0, 0, 0}, location{}, true},
		{"aligned", encodeInfo(location{seg: 3, off: 5 << 20, n: 1000, aligned: true}), location{seg: 3, off: 5 << 20, n: 1000, aligned: true}, false},
		{"aligned literal", []byte{3, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0}, location{seg: 7, off: 0x1000, n: 0x2010, aligned: true}, false},
		{"aligned record at unaligned offset", []byte{3, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}, location{}, true},
		{"unknown format", append([]byte{4}, encodeInfo(mib)[1:]...), location{}, true},
		{"blake3", encodeInfo(location{seg: 3, off: 5 << 20, n: 1000, aligned: true, alg: chunkhash.BLAKE3}), location{seg: 3, off: 5 << 20, n: 1000, aligned: true, alg: chunkhash.BLAKE3}, false},
		{"blake3 literal", []byte{3, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 1}, location{seg: 7, off: 0x1000, n: 0x2010, aligned: true, alg: chunkhash.BLAKE3}, false},
		{"blake3 back to back", encodeInfo(location{seg: 2, off: 17, n: 5, alg: chunkhash.BLAKE3}), location{seg: 2, off: 17, n: 5, alg: chunkhash.BLAKE3}, false},
		{"sha256 named in an alg byte", append(encodeInfo(mib), 0), location{}, true},
		{"unknown alg", append(encodeInfo(mib), 2), location{}, true},
		{"two alg bytes", append(encodeInfo(mib), 1, 1), location{}, true},
		{"segment 0", encodeInfo(location{seg: 0, n: 5}), location{}, true},
		{"length out of range", encodeInfo(location{seg: 1, n: maxLocation + 1}), location{}, true},
		{"offset out of range", encodeInfo(location{seg: 1, off: -1}), location{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeInfo(tc.in)
			if tc.err {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("decodeInfo(%x) = %+v, %v; want ErrCorrupt", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("decodeInfo(%x) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSegmentNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   uint32
		ok   bool
	}{
		{"000001.seg", 1, true},
		{"123456.seg", 123456, true},
		{"1234567.seg", 1234567, true},
		{"4294967295.seg", 1<<32 - 1, true},
		{"000000.seg", 0, false},
		{"1.seg", 0, false},
		{"0000001.seg", 0, false},
		{"000001.seg.tmp", 0, false},
		{"00000a.seg", 0, false},
		{"-00001.seg", 0, false},
		{"4294967296.seg", 0, false},
		{"000001.vlog", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := parseSegmentName(tc.name)
			if id != tc.id || ok != tc.ok {
				t.Fatalf("parseSegmentName(%q) = %d, %v; want %d, %v", tc.name, id, ok, tc.id, tc.ok)
			}
			if ok && segmentName(id) != tc.name {
				t.Fatalf("segmentName(%d) = %q, want %q", id, segmentName(id), tc.name)
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
	ik, ak, mk := infoKey(sum), stampKey(sum), metaKey(string(sum[:]))
	if ik[0] != nsInfo || ak[0] != nsStamp || mk[0] != nsMeta {
		t.Fatalf("namespaces %q %q %q", ik[0], ak[0], mk[0])
	}
	if bytes.Equal(ik, mk) || bytes.Equal(ik, ak) || bytes.Equal(ak, mk) {
		t.Fatal("keys of different namespaces are equal")
	}
}

func FuzzDecodeInfo(f *testing.F) {
	f.Add(encodeInfo(location{seg: 1, off: 0, n: 1 << 20}))
	f.Add(encodeInfo(location{seg: 9, off: 255 << 20, n: 17}))
	f.Add(encodeInfo(location{seg: 2, off: 8 << 10, n: 5000, aligned: true}))
	f.Add(encodeInfo(location{seg: 2, off: 8 << 10, n: 5000, aligned: true, alg: chunkhash.BLAKE3}))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		loc, err := decodeInfo(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if loc.n < 0 || loc.off < 0 || loc.end() < loc.off || loc.seg == 0 || !bytes.Equal(encodeInfo(loc), b) {
			t.Fatalf("decodeInfo(%x) = %+v: out of range or does not re-encode to its input", b, loc)
		}
	})
}

func TestDecodeStamp(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want uint64
		err  bool
	}{
		{"zero", encodeStamp(0), 0, false},
		{"largest", encodeStamp(1<<64 - 1), 1<<64 - 1, false},
		{"literal", []byte{1, 2, 0, 0, 0, 0, 0, 0}, 0x201, false},
		{"empty", nil, 0, true},
		{"short", []byte{1, 2, 3, 4, 5, 6, 7}, 0, true},
		{"long", append(encodeStamp(5), 0), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeStamp(tc.in)
			if tc.err {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("decodeStamp(%x) = %d, %v; want ErrCorrupt", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("decodeStamp(%x) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func FuzzDecodeStamp(f *testing.F) {
	f.Add(encodeStamp(0))
	f.Add(encodeStamp(123456789))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeStamp(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(encodeStamp(st), b) {
			t.Fatalf("decodeStamp(%x) = %d does not re-encode to its input", b, st)
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
