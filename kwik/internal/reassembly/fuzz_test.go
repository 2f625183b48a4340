package reassembly

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzBufferPush drives a Buffer with a sequence of pushes and reads decoded
// from the input and compares every outcome with a byte-map model: what is
// read must be the reference content, duplicates must be counted exactly and
// errors must match the window and final-size rules.
//
// Each operation takes 6 bytes: kind (push, push from a chunk, read,
// advance), flags (FIN), offset (2 bytes), length (2 bytes).
func FuzzBufferPush(f *testing.F) {
	f.Add([]byte{0, 0, 0, 10, 0, 20, 0, 1, 0, 0, 0, 10, 2, 0, 0, 0, 0, 100})
	f.Add([]byte{1, 1, 0, 0, 0x10, 0, 2, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1 << 14
		var b Buffer
		b.SetLimit(limit)
		have := make([]bool, 1<<17)
		var readOff uint64
		var final, highest, buffered uint64
		hasFinal := false
		for len(in) >= 6 {
			kind, flags := in[0]%4, in[1]
			off := uint64(binary.BigEndian.Uint16(in[2:]))
			n := int(binary.BigEndian.Uint16(in[4:]))
			in = in[6:]
			switch kind {
			case 0, 1, 3: // push, copied (0) or from a chunk (1); advance (3)
				fin := flags&1 != 0
				if kind == 3 {
					off = readOff
				}
				end := off + uint64(n)
				var wantErr error
				switch {
				case hasFinal && (end > final || fin && end != final):
					wantErr = ErrFinalSize
				case !hasFinal && fin && end < highest:
					wantErr = ErrFinalSize
				case end > limit:
					wantErr = ErrWindow
				}
				data := pat(off, n)
				var c *Chunk
				if kind == 1 && n > 0 && n <= MaxChunk {
					c = NewChunk(n)
					copy(c.Bytes(), data)
					data = c.Bytes()
				}
				var dup int
				var err error
				if kind == 3 {
					dup, err = b.Advance(off, n, fin)
				} else {
					dup, err = b.Push(off, data, fin, c)
				}
				if c != nil {
					c.Release()
				}
				if errors.Is(err, ErrTooFragmented) {
					return
				}
				if !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
					t.Fatalf("push [%d,+%d) fin=%v: err %v, want %v", off, n, fin, err, wantErr)
				}
				if err != nil {
					continue
				}
				wantDup := 0
				for i := off; i < end; i++ {
					switch {
					case kind == 3 && have[i]:
						wantDup++
						have[i] = false
						buffered--
					case kind == 3:
					case i < readOff || have[i]:
						wantDup++
					default:
						have[i] = true
						buffered++
					}
				}
				if kind == 3 {
					readOff = end
				}
				if dup != wantDup {
					t.Fatalf("push [%d,+%d): dup %d, want %d", off, n, dup, wantDup)
				}
				if fin {
					final, hasFinal = end, true
				}
				highest = max(highest, end)
			case 2: // read up to n bytes
				p := make([]byte, n)
				got := b.Read(p)
				want := 0
				for want < n && have[readOff+uint64(want)] {
					want++
				}
				if got != want || !bytes.Equal(p[:got], pat(readOff, got)) {
					t.Fatalf("read at %d: %d bytes, want %d", readOff, got, want)
				}
				for i := readOff; i < readOff+uint64(got); i++ {
					have[i] = false
				}
				buffered -= uint64(got)
				readOff += uint64(got)
			}
			if b.Buffered() != buffered || b.ReadOffset() != readOff || b.Highest() != highest {
				t.Fatalf("buffered %d/%d, read offset %d/%d, highest %d/%d",
					b.Buffered(), buffered, b.ReadOffset(), readOff, b.Highest(), highest)
			}
			if b.Done() != (hasFinal && readOff == final) {
				t.Fatalf("Done() = %v", b.Done())
			}
		}
	})
}
