package wire

import (
	"bufio"
	"bytes"
	"testing"
)

func TestControlFrameLen(t *testing.T) {
	full := AppendFrame(nil, &MaxStreamData{StreamID: 1 << 20, Max: 1 << 40})
	big := AppendFrame(nil, &RawData{PathID: 1, Command: make([]byte, 300)})
	tests := []struct {
		name string
		b    []byte
		want uint64
		ok   bool
	}{
		{"empty", nil, 0, false},
		{"type only", full[:1], 0, false},
		{"header only", full[:2], uint64(len(full)), true},
		{"whole frame", full, uint64(len(full)), true},
		{"frame and more", append(bytes.Clone(full), 0, 1), uint64(len(full)), true},
		{"two-byte length", big[:3], uint64(len(big)), true},
		{"half a two-byte length", big[:2], 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := ControlFrameLen(tt.b)
			if n != tt.want || ok != tt.ok {
				t.Fatalf("ControlFrameLen = %d, %v; want %d, %v", n, ok, tt.want, tt.ok)
			}
		})
	}
}

// FuzzControlFrameLen checks that ControlFrameLen never panics and agrees
// with ReadControlFrame: a frame it reads whole is exactly as long as
// ControlFrameLen says.
func FuzzControlFrameLen(f *testing.F) {
	f.Add(AppendFrame(nil, &MaxData{Max: 7}))
	f.Add(AppendFrame(nil, &AddPath{PathID: 1, Addr: "127.0.0.1:4433", Token: []byte("token")}))
	f.Add([]byte{0x12, 0x7f})
	f.Fuzz(func(t *testing.T, in []byte) {
		n, ok := ControlFrameLen(in)
		if ok && n < 2 {
			t.Fatalf("frame of %d bytes", n)
		}
		src := bytes.NewReader(in)
		r := bufio.NewReader(src)
		if _, _, err := ReadControlFrame(r, 1<<20, nil); err != nil {
			return
		}
		if used := uint64(len(in) - r.Buffered() - src.Len()); !ok || n != used {
			t.Fatalf("ControlFrameLen = %d, %v; ReadControlFrame used %d bytes", n, ok, used)
		}
	})
}
