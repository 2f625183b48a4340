package reassembly

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// pat returns the reference content of a stream: byte i is pat(i).
func pat(off uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + uint64(i)) * 7 % 251)
	}
	return b
}

type push struct {
	off     uint64
	n       int
	fin     bool
	wantDup int
	wantErr error
}

func TestBufferPush(t *testing.T) {
	tests := []struct {
		name      string
		limit     uint64
		pushes    []push
		wantRead  int // contiguous bytes readable afterwards
		wantFinal int // -1: unknown
		wantDone  bool
		wantGaps  int
	}{
		{"in order", 100, []push{{0, 10, false, 0, nil}, {10, 10, false, 0, nil}, {20, 5, false, 0, nil}}, 25, -1, false, 0},
		{"out of order", 100, []push{{20, 10, false, 0, nil}, {0, 10, false, 0, nil}, {10, 10, false, 0, nil}}, 30, -1, false, 0},
		{"hole stays", 100, []push{{0, 10, false, 0, nil}, {20, 10, false, 0, nil}}, 10, -1, false, 1},
		{"two holes", 100, []push{{10, 5, false, 0, nil}, {30, 5, false, 0, nil}}, 0, -1, false, 2},
		{"exact duplicate", 100, []push{{0, 10, false, 0, nil}, {0, 10, false, 10, nil}}, 10, -1, false, 0},
		{"overlap front", 100, []push{{5, 10, false, 0, nil}, {0, 10, false, 5, nil}}, 15, -1, false, 0},
		{"overlap back", 100, []push{{0, 10, false, 0, nil}, {5, 10, false, 5, nil}}, 15, -1, false, 0},
		{"covering several", 100, []push{{2, 2, false, 0, nil}, {6, 2, false, 0, nil}, {10, 2, false, 0, nil}, {0, 14, false, 6, nil}}, 14, -1, false, 0},
		{"inside existing", 100, []push{{0, 20, false, 0, nil}, {5, 5, false, 5, nil}}, 20, -1, false, 0},
		{"up to window", 20, []push{{0, 20, false, 0, nil}}, 20, -1, false, 0},
		{"beyond window", 20, []push{{0, 10, false, 0, nil}, {15, 6, false, 0, ErrWindow}}, 10, -1, false, 0},
		{"far beyond window", 20, []push{{1 << 40, 1, false, 0, ErrWindow}}, 0, -1, false, 0},
		{"fin", 100, []push{{0, 10, true, 0, nil}}, 10, 10, false, 0},
		{"empty fin", 100, []push{{0, 10, false, 0, nil}, {10, 0, true, 0, nil}}, 10, 10, false, 0},
		{"fin first then data", 100, []push{{10, 5, true, 0, nil}, {0, 10, false, 0, nil}}, 15, 15, false, 0},
		{"repeated fin", 100, []push{{0, 10, true, 0, nil}, {0, 10, true, 10, nil}}, 10, 10, false, 0},
		{"data beyond final size", 100, []push{{0, 10, true, 0, nil}, {8, 5, false, 0, ErrFinalSize}}, 10, 10, false, 0},
		{"second final size differs", 100, []push{{0, 10, true, 0, nil}, {0, 12, true, 0, ErrFinalSize}}, 10, 10, false, 0},
		{"fin below received data", 100, []push{{20, 10, false, 0, nil}, {0, 10, true, 0, ErrFinalSize}}, 0, -1, false, 1},
		{"empty stream fin", 100, []push{{0, 0, true, 0, nil}}, 0, 0, true, 0},
		{"large pieces", 1 << 20, []push{{70000, 200000, false, 0, nil}, {0, 70000, false, 0, nil}, {100, 300000, false, 269900, nil}}, 300100, -1, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Buffer
			b.SetLimit(tt.limit)
			for i, p := range tt.pushes {
				dup, err := b.Push(p.off, pat(p.off, p.n), p.fin, nil)
				if !errors.Is(err, p.wantErr) || (p.wantErr == nil && err != nil) {
					t.Fatalf("push %d: err = %v, want %v", i, err, p.wantErr)
				}
				if dup != p.wantDup {
					t.Fatalf("push %d: dup = %d, want %d", i, dup, p.wantDup)
				}
			}
			if b.gaps != tt.wantGaps {
				t.Errorf("gaps = %d, want %d", b.gaps, tt.wantGaps)
			}
			fs, ok := b.FinalSize()
			if (tt.wantFinal >= 0) != ok || (ok && fs != uint64(tt.wantFinal)) {
				t.Errorf("final size = %d, %v; want %d", fs, ok, tt.wantFinal)
			}
			buffered := b.Buffered()
			got := make([]byte, 0, tt.wantRead)
			buf := make([]byte, 7)
			for {
				n := b.Read(buf)
				if n == 0 {
					break
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, pat(0, tt.wantRead)) {
				t.Fatalf("read %d bytes, want %d matching bytes", len(got), tt.wantRead)
			}
			if b.Buffered() != buffered-uint64(len(got)) {
				t.Errorf("buffered %d after reading %d of %d", b.Buffered(), len(got), buffered)
			}
			done := tt.wantDone || (tt.wantFinal >= 0 && tt.wantFinal == tt.wantRead)
			if b.Done() != done {
				t.Errorf("Done() = %v, want %v", b.Done(), done)
			}
		})
	}
}

func TestBufferDuplicateAfterRead(t *testing.T) {
	var b Buffer
	b.SetLimit(100)
	if _, err := b.Push(0, pat(0, 10), false, nil); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if n := b.Read(p); n != 10 {
		t.Fatalf("read %d", n)
	}
	dup, err := b.Push(5, pat(5, 10), false, nil)
	if err != nil || dup != 5 {
		t.Fatalf("dup = %d, err = %v; want 5, nil", dup, err)
	}
	if n := b.Read(p); n != 5 || !bytes.Equal(p[:5], pat(10, 5)) {
		t.Fatalf("read %d bytes %x", n, p[:n])
	}
}

func TestBufferFirstCopyWins(t *testing.T) {
	var b Buffer
	b.SetLimit(100)
	b.Push(0, []byte("aaaa"), false, nil)
	if dup, _ := b.Push(2, []byte("bbbb"), false, nil); dup != 2 {
		t.Fatalf("dup = %d, want 2", dup)
	}
	p := make([]byte, 10)
	if n := b.Read(p); string(p[:n]) != "aaaabb" {
		t.Fatalf("read %q, want aaaabb", p[:n])
	}
}

func TestBufferTooFragmented(t *testing.T) {
	var b Buffer
	b.SetLimit(1 << 20)
	for i := range MaxGaps {
		if _, err := b.Push(uint64(2*i+1), []byte{1}, false, nil); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if _, err := b.Push(uint64(2*MaxGaps+1), []byte{1}, false, nil); !errors.Is(err, ErrTooFragmented) {
		t.Fatalf("err = %v, want ErrTooFragmented", err)
	}
	// Filling a gap is always allowed.
	if _, err := b.Push(0, []byte{0}, false, nil); err != nil {
		t.Fatal(err)
	}
	if b.gaps != MaxGaps-1 {
		t.Fatalf("gaps = %d", b.gaps)
	}
}

func TestBufferCoalescesSmallPieces(t *testing.T) {
	var b Buffer
	b.SetLimit(1 << 20)
	for i := range 1000 {
		if _, err := b.Push(uint64(i*10), pat(uint64(i*10), 10), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(b.segs) - b.head; n > 10000/ownedMax+2 {
		t.Fatalf("%d segments for 1000 adjacent 10-byte pieces", n)
	}
	got := make([]byte, 20000)
	if n := b.Read(got); n != 10000 || !bytes.Equal(got[:n], pat(0, 10000)) {
		t.Fatalf("read %d", n)
	}
}

func TestBufferChunkReferences(t *testing.T) {
	var b Buffer
	b.SetLimit(1 << 20)
	b.Push(3000, pat(3000, 100), false, nil)
	c := NewChunk(8000)
	copy(c.Bytes(), pat(0, 8000))
	dup, err := b.Push(0, c.Bytes(), false, c)
	if err != nil || dup != 100 {
		t.Fatalf("dup %d err %v", dup, err)
	}
	if r := c.refs.Load(); r != 3 { // caller + two segments around [3000,3100)
		t.Fatalf("refs = %d, want 3", r)
	}
	c.Release()
	got := make([]byte, 8000)
	if n := b.Read(got); n != 8000 || !bytes.Equal(got, pat(0, 8000)) {
		t.Fatalf("read %d", n)
	}
	if r := c.refs.Load(); r != 0 {
		t.Fatalf("refs after reading = %d, want 0", r)
	}
}

func TestBufferDiscard(t *testing.T) {
	var b Buffer
	b.SetLimit(100)
	c := NewChunk(2000)
	b.SetLimit(5000)
	b.Push(0, c.Bytes(), false, c)
	c.Release()
	b.Discard()
	if c.refs.Load() != 0 || b.Buffered() != 0 {
		t.Fatalf("refs %d buffered %d after Discard", c.refs.Load(), b.Buffered())
	}
	if _, err := b.Push(2000, pat(0, 100), true, nil); err != nil {
		t.Fatal(err)
	}
	if fs, ok := b.FinalSize(); !ok || fs != 2100 || b.Buffered() != 0 || b.Readable() {
		t.Fatalf("final %d %v buffered %d", fs, ok, b.Buffered())
	}
	if _, err := b.Push(2000, pat(0, 200), false, nil); !errors.Is(err, ErrFinalSize) {
		t.Fatalf("err = %v", err)
	}
}

func TestBufferAdvance(t *testing.T) {
	tests := []struct {
		name     string
		pushes   []push // before Advance
		off      uint64
		n        int
		fin      bool
		wantDup  int
		wantErr  error
		wantRead int // bytes readable afterwards, from off+n
		wantGaps int
	}{
		{"empty buffer", nil, 0, 10, false, 0, nil, 0, 0},
		{"with fin", nil, 0, 10, true, 0, nil, 0, 0},
		{"covers buffered data", []push{{5, 10, false, 0, nil}}, 0, 20, false, 10, nil, 0, 0},
		{"partly covers a segment", []push{{5, 10, false, 0, nil}}, 0, 8, false, 3, nil, 7, 0},
		{"leaves a later gap", []push{{5, 5, false, 0, nil}, {20, 5, false, 0, nil}}, 0, 7, false, 2, nil, 3, 1},
		{"closes all gaps", []push{{5, 5, false, 0, nil}, {20, 5, false, 0, nil}}, 0, 30, false, 10, nil, 0, 0},
		{"not at read offset", nil, 3, 10, false, 0, nil, 0, 0},
		{"beyond window", nil, 0, 101, false, 0, ErrWindow, 0, 0},
		{"beyond final size", []push{{0, 0, true, 0, nil}}, 0, 1, false, 0, ErrFinalSize, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Buffer
			b.SetLimit(100)
			for _, p := range tt.pushes {
				if _, err := b.Push(p.off, pat(p.off, p.n), p.fin, nil); err != nil {
					t.Fatal(err)
				}
			}
			dup, err := b.Advance(tt.off, tt.n, tt.fin)
			if tt.name == "not at read offset" {
				if err == nil {
					t.Fatal("Advance away from the read offset succeeded")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if dup != tt.wantDup || b.ReadOffset() != tt.off+uint64(tt.n) || b.gaps != tt.wantGaps {
				t.Fatalf("dup %d read offset %d gaps %d; want %d %d %d", dup, b.ReadOffset(), b.gaps, tt.wantDup, tt.off+uint64(tt.n), tt.wantGaps)
			}
			got := make([]byte, 100)
			n := b.Read(got)
			if n != tt.wantRead || !bytes.Equal(got[:n], pat(b.ReadOffset()-uint64(n), n)) {
				t.Fatalf("read %d bytes after Advance, want %d", n, tt.wantRead)
			}
			if fs, ok := b.FinalSize(); tt.fin && (!ok || fs != tt.off+uint64(tt.n)) {
				t.Fatalf("final size %d, %v", fs, ok)
			}
		})
	}
}

func TestBufferReceivedAndGaps(t *testing.T) {
	var b Buffer
	b.SetLimit(1000)
	push := func(off uint64, s string) {
		t.Helper()
		if _, err := b.Push(off, []byte(s), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	check := func(max int, wantContig uint64, want [][2]uint64, wantGaps int) {
		t.Helper()
		contig, got := b.Received(nil, max)
		if contig != wantContig || !reflect.DeepEqual(got, want) || b.Gaps() != wantGaps {
			t.Fatalf("Received = %d, %v, gaps %d; want %d, %v, gaps %d", contig, got, b.Gaps(), wantContig, want, wantGaps)
		}
	}
	check(4, 0, nil, 0)
	push(10, "abc")
	check(4, 0, [][2]uint64{{10, 13}}, 1)
	push(13, "de") // adjacent: one range
	push(20, "x")
	push(30, "y")
	check(4, 0, [][2]uint64{{10, 15}, {20, 21}, {30, 31}}, 3)
	check(2, 0, [][2]uint64{{10, 15}, {20, 21}}, 3)
	push(0, "0123456789")
	check(4, 15, [][2]uint64{{20, 21}, {30, 31}}, 2)
	b.Read(make([]byte, 12))
	check(4, 15, [][2]uint64{{20, 21}, {30, 31}}, 2)
	b.Read(make([]byte, 12))
	check(4, 15, [][2]uint64{{20, 21}, {30, 31}}, 2)
}

func TestBufferPushBounded(t *testing.T) {
	var b Buffer
	b.SetLimit(1000)
	for i := range 3 {
		if _, err := b.PushBounded(uint64(10*i+5), []byte{1}, false, nil, 3); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
	}
	// A fourth hole is refused, filling one is not, and plain Push is not
	// bound by the tighter limit.
	if _, err := b.PushBounded(40, []byte{1}, false, nil, 3); !errors.Is(err, ErrTooFragmented) {
		t.Fatalf("fourth hole: err = %v, want ErrTooFragmented", err)
	}
	if _, err := b.PushBounded(0, make([]byte, 5), false, nil, 3); err != nil || b.Gaps() != 2 {
		t.Fatalf("filling a hole: %v, gaps %d", err, b.Gaps())
	}
	for i := range 2 {
		if _, err := b.PushBounded(uint64(100+10*i), []byte{1}, false, nil, 3); (err != nil) != (i == 1) {
			t.Fatalf("hole %d after the fill: %v", 3+i, err)
		}
	}
	if _, err := b.Push(200, []byte{1}, false, nil); err != nil || b.Gaps() != 4 {
		t.Fatalf("Push: %v, gaps %d", err, b.Gaps())
	}
}
