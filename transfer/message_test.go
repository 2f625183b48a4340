package transfer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	v := SumAlg(SHA256, []byte("v"))
	tests := []Request{
		{Op: OpStat, Path: ""},
		{Op: OpStat, Path: "a/b/c"},
		{Op: OpList, Path: "dir"},
		{Op: OpReadlink, Path: "l"},
		{Op: OpManifest, Path: strings.Repeat("x", MaxPathLen)},
		{Op: OpRead, Path: "f", Version: v, First: 0, Count: 1},
		{Op: OpRead, Path: "f", Version: v, First: MaxChunks - 1, Count: 1},
		{Op: OpRead, Path: "f", Version: v, First: 0, Count: MaxChunks},
		{Op: OpRead, Path: "f", Version: v, First: 7, Count: 3, Background: true},
		{Op: OpRead, Path: strings.Repeat("x", MaxPathLen), Version: v, First: MaxChunks - 1, Count: 1, Background: true},
		{Op: OpFiles, Path: "", Names: []string{"a"}, MaxBytes: 1},
		{Op: OpFiles, Path: "d/e", Names: []string{"a b", "ünï", "c"}, MaxBytes: MaxFilesBytes},
		{Op: OpFiles, Path: "d", Names: []string{"a", "b"}, Known: []Hash{{}, v}, MaxBytes: 100},
		{Op: OpFiles, Path: strings.Repeat("x", MaxPathLen), Names: longNames(), MaxBytes: MaxFilesBytes},
	}
	for _, r := range tests {
		t.Run(fmt.Sprintf("%v %.20s %d+%d", r.Op, r.Path, r.First, r.Count), func(t *testing.T) {
			b, err := r.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if len(b) > MaxRequestLen {
				t.Fatalf("encoded %d bytes > MaxRequestLen %d", len(b), MaxRequestLen)
			}
			got, err := DecodeRequest(b)
			if err != nil || !reflect.DeepEqual(got, r) {
				t.Fatalf("DecodeRequest = %+v, %v; want %+v", got, err, r)
			}
		})
	}
}

// longNames returns MaxFilesNames names of maxFilesNamesLen bytes in all:
// the largest FILES request.
func longNames() []string {
	names := make([]string, MaxFilesNames)
	for i := range names {
		names[i] = fmt.Sprintf("%0*d", maxFilesNamesLen/MaxFilesNames, i)
	}
	return names
}

func TestDecodeRequestRejects(t *testing.T) {
	raw := func(op Op, path string, tail ...byte) []byte {
		return append(appendString([]byte{byte(op)}, path), tail...)
	}
	read := func(first, count uint64) []byte {
		b := raw(OpRead, "f", make([]byte, 32)...)
		b = binary.AppendUvarint(b, first)
		return binary.AppendUvarint(b, count)
	}
	files := func(budget uint64, names ...string) []byte {
		b := raw(OpFiles, "d")
		b = binary.AppendUvarint(b, budget)
		b = binary.AppendUvarint(b, uint64(len(names)))
		for _, n := range names {
			b = append(appendString(b, n), 0)
		}
		return b
	}
	tests := []struct {
		name   string
		in     []byte
		want   error
		wantOp Op
	}{
		{"empty", nil, ErrBadRequest, 0},
		{"FILES without names", files(10), ErrBadRequest, OpFiles},
		{"FILES of too many names", files(10, make([]string, MaxFilesNames+1)...), ErrBadRequest, OpFiles},
		{"FILES with an empty name", files(10, "a", ""), ErrBadRequest, OpFiles},
		{"FILES with a slash", files(10, "a/b"), ErrBadRequest, OpFiles},
		{"FILES with dotdot", files(10, ".."), ErrBadRequest, OpFiles},
		{"FILES budget zero", files(0, "a"), ErrBadRequest, OpFiles},
		{"FILES budget too large", files(MaxFilesBytes+1, "a"), ErrBadRequest, OpFiles},
		{"FILES names too long", files(10, longNames()[0]+strings.Repeat("x", maxFilesNamesLen)), ErrTooLarge, OpFiles},
		{"FILES trailing byte", append(files(10, "a"), 0), ErrBadRequest, OpFiles},
		{"FILES known flag 2", append(files(10, "a")[:len(files(10, "a"))-1], 2), ErrBadRequest, OpFiles},
		{"FILES known version zero", append(append(files(10, "a")[:len(files(10, "a"))-1], 1), make([]byte, 32)...), ErrBadRequest, OpFiles},
		{"FILES fields on LIST", append(raw(OpList, "d"), 1, 1, 1, 'a'), ErrBadRequest, OpList},
		{"op zero", raw(0, "a"), ErrBadRequest, 0},
		{"reserved SEND_CHUNK", raw(6, "a"), ErrBadRequest, 0},
		{"unknown op", raw(200, "a"), ErrBadRequest, 0},
		{"dotdot", raw(OpStat, "../x"), ErrOutsideRoot, OpStat},
		{"absolute", raw(OpManifest, "/etc/passwd"), ErrOutsideRoot, OpManifest},
		{"inner dotdot", raw(OpList, "a/../../x"), ErrOutsideRoot, OpList},
		{"NUL", raw(OpStat, "a\x00b"), ErrOutsideRoot, OpStat},
		{"double slash", raw(OpStat, "a//b"), ErrBadRequest, OpStat},
		{"path too long", raw(OpStat, strings.Repeat("a", MaxPathLen+1)), ErrTooLarge, OpStat},
		{"message too long", make([]byte, MaxRequestLen+1), ErrTooLarge, 0},
		{"truncated path", raw(OpStat, "abc")[:3], ErrBadRequest, OpStat},
		{"trailing byte", raw(OpStat, "a", 0), ErrBadRequest, OpStat},
		{"READ fields on STAT", raw(OpStat, "a", make([]byte, 34)...), ErrBadRequest, OpStat},
		{"READ truncated", raw(OpRead, "f", 1, 2, 3), ErrBadRequest, OpRead},
		{"READ count zero", read(0, 0), ErrBadRequest, OpRead},
		{"READ beyond MaxChunks", read(MaxChunks-1, 2), ErrBadRequest, OpRead},
		{"READ huge first", read(1<<62, 1), ErrBadRequest, OpRead},
		{"READ flags zero", append(read(0, 1), 0), ErrBadRequest, OpRead},
		{"READ unknown flag", append(read(0, 1), 2), ErrBadRequest, OpRead},
		{"READ two flag bytes", append(read(0, 1), 1, 1), ErrBadRequest, OpRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequest(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeRequest = %+v, %v; want error %v", got, err, tt.want)
			}
			if got.Op != tt.wantOp {
				t.Fatalf("Op on error = %v, want %v", got.Op, tt.wantOp)
			}
		})
	}
}

func TestMarshalRequestRefusesInvalid(t *testing.T) {
	for _, r := range []Request{
		{Op: 9, Path: "a"},
		{Op: OpStat, Path: "../a"},
		{Op: OpStat, Path: "a", Count: 1},
		{Op: OpRead, Path: "a", Count: 0},
		{Op: OpRead, Path: "a", First: -1, Count: 1},
		{Op: OpStat, Path: "a", Background: true},
	} {
		if _, err := r.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%+v) succeeded", r)
		}
	}
}

func TestErrorReplyRoundTrip(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("stat %q: %w", "x", ErrNotFound), ErrNotFound},
		{ErrNotDir, ErrNotDir},
		{ErrIsDir, ErrIsDir},
		{fmt.Errorf("a: %w", ErrOutsideRoot), ErrOutsideRoot},
		{ErrPermission, ErrPermission},
		{ErrStale, ErrStale},
		{ErrBadRequest, ErrBadRequest},
		{ErrTooLarge, ErrTooLarge},
		{ErrCorrupt, ErrCorrupt},
		{ErrUnavailable, ErrUnavailable},
		{errors.New("disk on fire"), ErrInternal},
		{errors.New(strings.Repeat("\xff", 3*MaxErrorLen)), ErrInternal},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.30s", tt.err), func(t *testing.T) {
			b := EncodeError(tt.err)
			if len(b) > MaxErrorReplyLen {
				t.Fatalf("error reply of %d bytes", len(b))
			}
			got := DecodeError(b)
			var re *RemoteError
			if !errors.As(got, &re) || !errors.Is(got, tt.want) {
				t.Fatalf("DecodeError = %v, want a RemoteError matching %v", got, tt.want)
			}
			if len(tt.err.Error()) <= MaxErrorLen && re.Message != tt.err.Error() {
				t.Fatalf("message %q, want %q", re.Message, tt.err.Error())
			}
			for _, op := range []Op{OpStat, OpList, OpReadlink, OpManifest} {
				if _, err := DecodeReply(op, b); !errors.Is(err, tt.want) {
					t.Fatalf("DecodeReply(%v) = %v, want %v", op, err, tt.want)
				}
			}
		})
	}
	if err := DecodeError([]byte{0, 0}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("DecodeError of status OK = %v", err)
	}
	if err := DecodeError([]byte{200, 0}); !errors.Is(err, ErrInternal) {
		t.Fatalf("DecodeError of unknown status = %v, want ErrInternal", err)
	}
}

func manyEntries(n int) []Attr {
	as := make([]Attr, n)
	for i := range as {
		as[i] = Attr{Name: fmt.Sprintf("file-%06d.dat", i), Mode: ModeRegular | 0o644, Size: int64(i) * 1000, MtimeNs: 1700000000000000000 + int64(i)}
	}
	return as
}

func TestReplyRoundTrip(t *testing.T) {
	big := manyEntries(5000)
	bigManifest := testManifest(bytes.Repeat([]byte("abc"), 300*MinChunkSize), MinChunkSize)
	tests := []struct {
		name       string
		op         Op
		reply      Reply
		compressed bool
	}{
		{"stat file", OpStat, Reply{Attr: Attr{Mode: ModeRegular | 0o600, Size: 10, MtimeNs: 5}}, false},
		{"stat symlink", OpStat, Reply{Attr: Attr{Mode: ModeSymlink | 0o777, Size: 4, Target: "/etc"}}, false},
		{"list empty", OpList, Reply{Entries: []Attr{}}, false},
		{"list small", OpList, Reply{Entries: manyEntries(3)}, false},
		{"list large", OpList, Reply{Entries: big}, true},
		{"readlink", OpReadlink, Reply{Target: "../a/b"}, false},
		{"manifest empty file", OpManifest, Reply{Manifest: testManifest(nil, DefaultChunkSize)}, false},
		{"manifest small", OpManifest, Reply{Manifest: testManifest([]byte("hello"), MinChunkSize)}, false},
		{"manifest large", OpManifest, Reply{Manifest: bigManifest}, true},
		{"blake3 manifest small", OpManifest, Reply{Manifest: testManifestAlg(BLAKE3, []byte("hello"), MinChunkSize)}, false},
		{"blake3 manifest large", OpManifest, Reply{Manifest: testManifestAlg(BLAKE3, bytes.Repeat([]byte("abc"), 300*MinChunkSize), MinChunkSize)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeReply(tt.op, &tt.reply)
			if err != nil {
				t.Fatalf("EncodeReply: %v", err)
			}
			if tt.op == OpList || tt.op == OpManifest {
				if got := b[1] == encodingZstd; got != tt.compressed {
					t.Fatalf("compressed = %v, want %v", got, tt.compressed)
				}
			}
			got, err := DecodeReply(tt.op, b)
			if err != nil {
				t.Fatalf("DecodeReply: %v", err)
			}
			want := tt.reply
			if tt.op == OpManifest && want.Manifest.Hashes == nil {
				want.Manifest.Hashes = []Hash{}
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("round trip: got %+v, want %+v", *got, want)
			}
		})
	}
}

func TestDecodeReplyRejects(t *testing.T) {
	ok := func(rest ...byte) []byte { return append([]byte{0}, rest...) }
	bomb := zstdEncoder().EncodeAll(make([]byte, MaxListLen+1), nil)
	lst := EncodeAttrs([]Attr{{Name: "", Mode: ModeRegular}})
	tests := []struct {
		name string
		op   Op
		in   []byte
		want error
	}{
		{"empty", OpStat, nil, ErrBadRequest},
		{"stat with name", OpStat, ok(EncodeAttr(Attr{Name: "x", Mode: ModeRegular})...), ErrBadRequest},
		{"stat trailing", OpStat, ok(append(EncodeAttr(Attr{Mode: ModeRegular}), 1)...), ErrBadRequest},
		{"list unknown encoding", OpList, ok(7, 0), ErrBadRequest},
		{"list entry without name", OpList, ok(append([]byte{encodingRaw}, lst...)...), ErrBadRequest},
		{"list garbage zstd", OpList, ok(encodingZstd, 1, 2, 3, 4), ErrBadRequest},
		{"list zstd bomb", OpList, ok(append([]byte{encodingZstd}, bomb...)...), ErrTooLarge},
		{"readlink empty target", OpReadlink, ok(0), ErrBadRequest},
		{"readlink NUL", OpReadlink, ok(2, 'a', 0), ErrBadRequest},
		{"manifest garbage", OpManifest, ok(encodingRaw, 1, 2), ErrBadRequest},
		{"read has no whole-reply decoding", OpRead, ok(), ErrBadRequest},
		{"oversized", OpStat, make([]byte, MaxReplyLen(OpStat)+1), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeReply(tt.op, tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeReply = %+v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestEncodeReplyRefusesInvalid(t *testing.T) {
	for _, tt := range []struct {
		op Op
		r  Reply
	}{
		{OpStat, Reply{Attr: Attr{Mode: 0o010644}}},
		{OpList, Reply{Entries: []Attr{{Mode: ModeRegular}}}},
		{OpReadlink, Reply{}},
		{OpManifest, Reply{}},
		{OpRead, Reply{}},
	} {
		if _, err := EncodeReply(tt.op, &tt.r); err == nil {
			t.Errorf("EncodeReply(%v, %+v) succeeded", tt.op, tt.r)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []Request{
		{Op: OpStat, Path: "a/b"},
		{Op: OpList},
		{Op: OpRead, Path: "f", Version: SumAlg(SHA256, nil), First: 3, Count: 2},
		{Op: OpRead, Path: "f", Version: SumAlg(SHA256, nil), First: 3, Count: 2, Background: true},
	} {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{byte(OpStat), 4, '.', '.', '/', 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrOutsideRoot) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if CheckPath(r.Path) != nil {
			t.Fatalf("accepted path %q", r.Path)
		}
		enc, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a decoded request: %v", err)
		}
		if again, err := DecodeRequest(enc); err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding changed %+v to %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	add := func(op Op, r Reply) {
		b, err := EncodeReply(op, &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(op), b)
	}
	add(OpStat, Reply{Attr: Attr{Mode: ModeDir | 0o755}})
	add(OpList, Reply{Entries: manyEntries(2)})
	add(OpList, Reply{Entries: manyEntries(200)})
	add(OpReadlink, Reply{Target: "t"})
	add(OpManifest, Reply{Manifest: testManifest([]byte("data"), MinChunkSize)})
	add(OpManifest, Reply{Manifest: testManifest(make([]byte, 100*MinChunkSize), MinChunkSize)})
	add(OpManifest, Reply{Manifest: testManifestAlg(BLAKE3, []byte("data"), MinChunkSize)})
	add(OpManifest, Reply{Manifest: testManifestAlg(BLAKE3, make([]byte, 100*MinChunkSize), MinChunkSize)})
	f.Add(uint8(OpStat), EncodeError(ErrNotFound))
	f.Fuzz(func(t *testing.T, op uint8, b []byte) {
		r, err := DecodeReply(Op(op), b)
		if err != nil {
			var re *RemoteError
			if !errors.As(err, &re) && !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		enc, err := EncodeReply(Op(op), r)
		if err != nil {
			t.Fatalf("EncodeReply of a decoded reply: %v", err)
		}
		again, err := DecodeReply(Op(op), enc)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding changed %+v to %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add(EncodeError(ErrStale))
	f.Add(EncodeError(errors.New("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := DecodeError(b)
		var re *RemoteError
		if errors.As(err, &re) {
			if re.Status == StatusOK || len(re.Message) > MaxErrorLen {
				t.Fatalf("accepted %+v", re)
			}
			return
		}
		if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
