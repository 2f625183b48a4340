package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testManifest builds the SHA-256 manifest of data with the given chunk
// size.
func testManifest(data []byte, chunkSize uint32) *Manifest {
	return testManifestAlg(SHA256, data, chunkSize)
}

// testManifestAlg builds the manifest of data with the given hash algorithm
// and chunk size.
func testManifestAlg(alg HashAlg, data []byte, chunkSize uint32) *Manifest {
	m := &Manifest{Size: int64(len(data)), MtimeNs: 1700000000123456789, Mode: ModeRegular | 0o640, ChunkSize: chunkSize, Alg: alg}
	for off := 0; off < len(data); off += int(chunkSize) {
		end := min(off+int(chunkSize), len(data))
		m.Hashes = append(m.Hashes, SumAlg(alg, data[off:end]))
	}
	m.Version = ComputeVersion(alg, m.Size, m.ChunkSize, m.Hashes)
	return m
}

func TestAttrsRoundTrip(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen)
	tests := []struct {
		name  string
		attrs []Attr
	}{
		{"empty", []Attr{}},
		{"file", []Attr{{Name: "a.txt", Mode: ModeRegular | 0o644, Size: 12345, MtimeNs: 1700000000000000001}}},
		{"dir and symlink", []Attr{
			{Name: "d", Mode: ModeDir | 0o755, Size: 4096, MtimeNs: -5},
			{Name: "l", Mode: ModeSymlink | 0o777, Size: 6, Target: "../x/y"},
		}},
		{"stat attr without name", []Attr{{Mode: ModeDir | 0o1777}}},
		{"longest name and target", []Attr{{Name: long, Mode: ModeSymlink | 0o777, Target: strings.Repeat("t", MaxTargetLen)}}},
		{"utf8 and setuid", []Attr{{Name: "ünïcødé ✓", Mode: ModeRegular | 0o4755, Size: 1 << 40, MtimeNs: 1 << 62}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := EncodeAttrs(tt.attrs)
			got, err := DecodeAttrs(b)
			if err != nil {
				t.Fatalf("DecodeAttrs: %v", err)
			}
			if !reflect.DeepEqual(got, tt.attrs) {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.attrs)
			}
			for _, a := range tt.attrs {
				one, err := DecodeAttr(EncodeAttr(a))
				if err != nil || one != a {
					t.Fatalf("DecodeAttr(EncodeAttr(%+v)) = %+v, %v", a, one, err)
				}
			}
		})
	}
}

func TestDecodeAttrsRejects(t *testing.T) {
	good := Attr{Name: "f", Mode: ModeRegular | 0o644, Size: 1}
	enc := func(as ...Attr) []byte { return EncodeAttrs(as) }
	tooMany := binary.AppendUvarint(nil, MaxEntries+1)
	lying := binary.AppendUvarint(nil, 1000)
	lying = append(lying, enc(good)[1:]...)
	longName := append(binary.AppendUvarint([]byte{1}, MaxNameLen+1), make([]byte, 16)...)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty input", nil, ErrBadRequest},
		{"too many entries", tooMany, ErrTooLarge},
		{"count larger than input", lying, ErrBadRequest},
		{"name too long", longName, ErrTooLarge},
		{"truncated", enc(good)[:4], ErrBadRequest},
		{"trailing byte", append(enc(good), 0), ErrBadRequest},
		{"slash in name", enc(Attr{Name: "a/b", Mode: ModeRegular}), ErrBadRequest},
		{"dot-dot name", enc(Attr{Name: "..", Mode: ModeDir}), ErrBadRequest},
		{"NUL in name", enc(Attr{Name: "a\x00", Mode: ModeRegular}), ErrBadRequest},
		{"fifo", enc(Attr{Name: "p", Mode: 0o010644}), ErrBadRequest},
		{"unknown mode bits", enc(Attr{Name: "p", Mode: ModeRegular | 1<<20}), ErrBadRequest},
		{"negative size", enc(Attr{Name: "p", Mode: ModeRegular, Size: -1}), ErrBadRequest},
		{"target on file", enc(Attr{Name: "p", Mode: ModeRegular, Target: "x"}), ErrBadRequest},
		{"NUL in target", enc(Attr{Name: "p", Mode: ModeSymlink, Target: "x\x00"}), ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeAttrs(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeAttrs = %v, %v; want error %v", got, err, tt.want)
			}
		})
	}
}

func TestManifestRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	tests := []struct {
		name      string
		data      []byte
		chunkSize uint32
	}{
		{"empty file", nil, DefaultChunkSize},
		{"one byte", data[:1], MinChunkSize},
		{"chunk minus one", data[:MinChunkSize-1], MinChunkSize},
		{"exact chunk", data[:MinChunkSize], MinChunkSize},
		{"chunk plus one", data[:MinChunkSize+1], MinChunkSize},
		{"sixteen chunks", data, MinChunkSize},
		{"max chunk size", data, MaxChunkSize},
	}
	algs := []struct {
		alg    HashAlg
		prefix []byte // the encoding's first bytes: format, then alg if any
	}{
		{SHA256, []byte{1}},
		{BLAKE3, []byte{2, 1}},
	}
	for _, a := range algs {
		for _, tt := range tests {
			t.Run(a.alg.String()+"/"+tt.name, func(t *testing.T) {
				m := testManifestAlg(a.alg, tt.data, tt.chunkSize)
				b, err := m.MarshalBinary()
				if err != nil {
					t.Fatalf("MarshalBinary: %v", err)
				}
				if !bytes.HasPrefix(b, a.prefix) {
					t.Fatalf("encoding starts % x, want % x", b[:3], a.prefix)
				}
				var got Manifest
				if err := got.UnmarshalBinary(b); err != nil {
					t.Fatalf("UnmarshalBinary: %v", err)
				}
				if got.Hashes == nil {
					got.Hashes = m.Hashes[:0:0]
				}
				if m.Hashes == nil {
					m.Hashes = got.Hashes
				}
				if !reflect.DeepEqual(&got, m) {
					t.Fatalf("round trip: got %+v, want %+v", got, *m)
				}
				if got.Alg != a.alg {
					t.Fatalf("Alg = %v, want %v", got.Alg, a.alg)
				}
				for i := 0; i < got.NumChunks(); i++ {
					off := got.ChunkOffset(i)
					if err := got.Verify(i, tt.data[off:off+int64(got.ChunkLen(i))]); err != nil {
						t.Fatalf("Verify chunk %d: %v", i, err)
					}
				}
			})
		}
	}
}

// TestManifestSHA256EncodingUnchanged pins the encoding of a SHA-256
// manifest, version included, to the bytes of the first format, which
// clients persisted before manifests named their algorithm.
func TestManifestSHA256EncodingUnchanged(t *testing.T) {
	m := testManifest([]byte("hello"), MinChunkSize)
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Format 1, size 5, mtime, mode, chunk size, then the version.
	const wantHex = "0105aab4aed8c7bfce972fa083028020" +
		"7219c70ba6b78add4baecdd30ce5ee946a8c7ba7ff7f6f8839ec4c46ccaf74ab" + // version
		"01" + // one hash: SHA-256("hello")
		"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if got := hex.EncodeToString(b); got != wantHex {
		t.Fatalf("encoding\n%s\nwant\n%s", got, wantHex)
	}
}

// TestComputeVersionNamesNonSHA256Alg: the version hashes the size and
// chunk size big endian, then the algorithm byte for any algorithm but
// SHA-256, then the chunk hashes.
func TestComputeVersionNamesNonSHA256Alg(t *testing.T) {
	hashes := []Hash{{1, 2, 3}, {4, 5, 6}}
	hdr := []byte{0, 0, 0, 0, 0, 1, 0x23, 0x45, 0, 0, 0x10, 0}
	for _, tt := range []struct {
		alg   HashAlg
		extra []byte
	}{{SHA256, nil}, {BLAKE3, []byte{1}}} {
		in := slices.Concat(hdr, tt.extra, hashes[0][:], hashes[1][:])
		if got, want := ComputeVersion(tt.alg, 0x12345, 0x1000, hashes), Hash(sha256.Sum256(in)); got != want {
			t.Errorf("%v: version %v, want %v", tt.alg, got, want)
		}
	}
}

func TestManifestVerifiesWithItsAlg(t *testing.T) {
	data := bytes.Repeat([]byte("kwikfs"), 2*MinChunkSize)
	sha := testManifestAlg(SHA256, data, MinChunkSize)
	b3 := testManifestAlg(BLAKE3, data, MinChunkSize)
	if sha.Hashes[0] == b3.Hashes[0] {
		t.Fatal("SHA-256 and BLAKE3 hashes of a chunk are equal")
	}
	if sha.Version == b3.Version {
		t.Fatal("SHA-256 and BLAKE3 manifests of the same bytes have the same version")
	}
	chunk := data[:MinChunkSize]
	if got := b3.Sum(chunk); got != b3.Hashes[0] {
		t.Fatalf("Manifest.Sum = %v, want %v", got, b3.Hashes[0])
	}
	// The SHA-256 hashes under a BLAKE3 manifest: every chunk fails.
	mixed := *b3
	mixed.Hashes = sha.Hashes
	if err := mixed.Verify(0, chunk); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a chunk listed by its SHA-256 in a BLAKE3 manifest = %v, want ErrCorrupt", err)
	}
	flipped := bytes.Clone(chunk)
	flipped[100] ^= 1
	if err := b3.Verify(0, flipped); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify of a damaged chunk = %v, want ErrCorrupt", err)
	}
	if err := b3.Verify(0, chunk); err != nil {
		t.Fatalf("Verify of an intact chunk = %v", err)
	}
	unknown := *b3
	unknown.Alg = 2
	if err := unknown.Verify(0, chunk); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("Verify with alg 2 = %v, want ErrBadRequest", err)
	}
	if _, err := unknown.MarshalBinary(); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("MarshalBinary with alg 2 = %v, want ErrBadRequest", err)
	}
}

func TestManifestRejects(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 3*MinChunkSize+5)
	good := testManifest(data, MinChunkSize)
	enc, err := good.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(m *Manifest)) []byte {
		m := *good
		m.Hashes = append([]Hash(nil), good.Hashes...)
		f(&m)
		// Encode by hand so that inconsistent manifests can be produced.
		b := []byte{manifestFormat}
		b = binary.AppendUvarint(b, uint64(m.Size))
		b = binary.AppendVarint(b, m.MtimeNs)
		b = binary.AppendUvarint(b, uint64(m.Mode))
		b = binary.AppendUvarint(b, uint64(m.ChunkSize))
		b = append(b, m.Version[:]...)
		b = binary.AppendUvarint(b, uint64(len(m.Hashes)))
		for _, h := range m.Hashes {
			b = append(b, h[:]...)
		}
		return b
	}
	hugeCount := []byte{manifestFormat}
	hugeCount = binary.AppendUvarint(hugeCount, 1<<40)
	hugeCount = binary.AppendVarint(hugeCount, 0)
	hugeCount = binary.AppendUvarint(hugeCount, uint64(ModeRegular))
	hugeCount = binary.AppendUvarint(hugeCount, MinChunkSize)
	hugeCount = append(hugeCount, make([]byte, 32)...)
	hugeCount = binary.AppendUvarint(hugeCount, 1<<40/MinChunkSize)

	b3 := testManifestAlg(BLAKE3, data, MinChunkSize)
	b3enc, err := b3.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	withAlg := func(alg byte, rest []byte) []byte { return append([]byte{manifestFormatAlg, alg}, rest...) }

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrBadRequest},
		{"bad format", append([]byte{3}, enc[1:]...), ErrBadRequest},
		{"format 0", append([]byte{0}, enc[1:]...), ErrBadRequest},
		{"unknown alg", withAlg(2, b3enc[2:]), ErrBadRequest},
		{"alg 255", withAlg(255, b3enc[2:]), ErrBadRequest},
		{"sha256 named in format 2", withAlg(byte(SHA256), enc[1:]), ErrBadRequest},
		{"format 2 without alg", []byte{manifestFormatAlg}, ErrBadRequest},
		{"blake3 manifest as format 1", append([]byte{manifestFormat}, b3enc[2:]...), ErrCorrupt},
		{"sha256 manifest as blake3", withAlg(byte(BLAKE3), enc[1:]), ErrCorrupt},
		{"blake3 truncated hashes", b3enc[:len(b3enc)-1], ErrBadRequest},
		{"truncated header", enc[:10], ErrBadRequest},
		{"truncated hashes", enc[:len(enc)-1], ErrBadRequest},
		{"trailing byte", append(append([]byte(nil), enc...), 0), ErrBadRequest},
		{"count != chunks", mutate(func(m *Manifest) { m.Hashes = m.Hashes[:3] }), ErrBadRequest},
		{"chunk size too small", mutate(func(m *Manifest) { m.ChunkSize = MinChunkSize - 1 }), ErrBadRequest},
		{"chunk size too big", mutate(func(m *Manifest) { m.ChunkSize = MaxChunkSize + 1 }), ErrBadRequest},
		{"too many chunks", hugeCount, ErrTooLarge},
		{"directory mode", mutate(func(m *Manifest) { m.Mode = ModeDir | 0o755 }), ErrBadRequest},
		{"wrong version", mutate(func(m *Manifest) { m.Version[0] ^= 1 }), ErrCorrupt},
		{"wrong hash", mutate(func(m *Manifest) { m.Hashes[2][5] ^= 1 }), ErrCorrupt},
		{"oversized input", make([]byte, MaxManifestLen+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Manifest{Size: 42}
			err := m.UnmarshalBinary(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("UnmarshalBinary = %v, want %v", err, tt.want)
			}
			if m.Size != 42 {
				t.Fatalf("manifest modified on error: %+v", m)
			}
		})
	}
}

func TestMarshalBinaryRefusesInconsistentManifest(t *testing.T) {
	m := testManifest(bytes.Repeat([]byte{1}, 2*MinChunkSize), MinChunkSize)
	m.Hashes = m.Hashes[:1]
	if _, err := m.MarshalBinary(); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("MarshalBinary = %v, want ErrBadRequest", err)
	}
}

func TestCheckPath(t *testing.T) {
	tests := []struct {
		path string
		want error
	}{
		{"", nil},
		{"a", nil},
		{"a/b/c.txt", nil},
		{"...", nil},
		{"../x", ErrOutsideRoot},
		{"a/../../x", ErrOutsideRoot},
		{"a/..", ErrOutsideRoot},
		{"/etc/passwd", ErrOutsideRoot},
		{"a\x00b", ErrOutsideRoot},
		{"a//b", ErrBadRequest},
		{"./a", ErrBadRequest},
		{"a/", ErrBadRequest},
		{strings.Repeat("a", MaxPathLen+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			err := CheckPath(tt.path)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckPath(%q) = %v, want %v", tt.path, err, tt.want)
			}
		})
	}
}

func FuzzDecodeAttrs(f *testing.F) {
	f.Add(EncodeAttrs(nil))
	f.Add(EncodeAttrs([]Attr{{Name: "a", Mode: ModeRegular | 0o644, Size: 3, MtimeNs: 9}}))
	f.Add(EncodeAttrs([]Attr{{Name: "d", Mode: ModeDir | 0o755}, {Name: "l", Mode: ModeSymlink | 0o777, Target: "d"}}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs, err := DecodeAttrs(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrBadRequest nor ErrTooLarge", err)
			}
			return
		}
		if again, err := DecodeAttrs(EncodeAttrs(attrs)); err != nil || !reflect.DeepEqual(again, attrs) {
			t.Fatalf("re-encoding changed %+v to %+v, %v", attrs, again, err)
		}
		if a, err := DecodeAttr(b); err == nil {
			if again, err := DecodeAttr(EncodeAttr(a)); err != nil || again != a {
				t.Fatalf("re-encoding changed %+v to %+v, %v", a, again, err)
			}
		}
	})
}

func FuzzManifestUnmarshal(f *testing.F) {
	for _, alg := range []HashAlg{SHA256, BLAKE3} {
		for _, n := range []int{0, 1, MinChunkSize, 3*MinChunkSize + 1} {
			b, err := testManifestAlg(alg, bytes.Repeat([]byte{3}, n), MinChunkSize).MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{manifestFormatAlg, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Manifest
		if err := m.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrBadRequest nor ErrTooLarge", err)
			}
			return
		}
		if len(m.Hashes) != m.NumChunks() {
			t.Fatalf("accepted %d hashes for %d chunks", len(m.Hashes), m.NumChunks())
		}
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a decoded manifest: %v", err)
		}
		var again Manifest
		if err := again.UnmarshalBinary(enc); err != nil || !reflect.DeepEqual(&again, &m) {
			t.Fatalf("re-encoding changed %+v to %+v, %v", m, again, err)
		}
	})
}
