package wire

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sig(b byte) (m [SigLen]byte) {
	for i := range m {
		m[i] = b
	}
	return m
}

func TestMultipathFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want []byte // nil: only the round trip is checked
	}{
		{"add path", &AddPath{PathID: 1, Addr: "h:1", Token: []byte{0xaa, 0xbb}},
			[]byte{0x10, 0x08, 1, 3, 'h', ':', '1', 2, 0xaa, 0xbb}},
		{"add path with a server name", &AddPath{PathID: 2, Addr: "192.0.2.7:4434", Token: []byte{1}, ServerName: "mirror-2.example"},
			append(append([]byte{0x10, 0x23, 2, 14}, "192.0.2.7:4434\x01\x01\x10"...), "mirror-2.example"...)},
		{"add path empty token", &AddPath{PathID: 70, Addr: "x"},
			[]byte{0x10, 0x05, 0x40, 70, 1, 'x', 0}},
		{"path status up", &PathStatus{PathID: 2, State: PathStateUp},
			[]byte{0x11, 0x04, 2, 1, 0, 0}},
		{"path status failed", &PathStatus{PathID: 2, State: PathStateFailed, Code: 7, Reason: "no"},
			[]byte{0x11, 0x06, 2, 2, 7, 2, 'n', 'o'}},
		{"raw data", &RawData{PathID: 3, Command: []byte{1, 2, 3}},
			[]byte{0x12, 0x04, 3, 1, 2, 3}},
		{"empty report", &Report{}, []byte{0x13, 0x02, 0, 0}},
		{"report", &Report{
			Paths: []PathReport{{PathID: 1, Delivered: 2, Received: 3, Frames: 4, Duplicate: 5, OutOfGrant: 6,
				OutOfGrantFrames: 7, RefusedStreams: 8, SmoothedRTTMicro: 9, MinRTTMicro: 10}},
			Streams: []StreamReport{
				{StreamID: 4, Contiguous: 10, Ranges: []Range{{12, 15}, {20, 21}}, ByPath: []PathBytes{{0, 11}, {1, 5}}},
				{StreamID: 6, Contiguous: 0, Complete: true},
			}},
			[]byte{0x13, 0x1e,
				1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
				2,
				4, 10, 0, 2, 12, 3, 20, 1, 2, 0, 11, 1, 5,
				6, 0, 1, 0, 0}},
		{"report large values", &Report{
			Paths:   []PathReport{{PathID: MaxVarint, Delivered: MaxVarint, SmoothedRTTMicro: 1 << 40}},
			Streams: []StreamReport{{StreamID: MaxVarint, Contiguous: MaxVarint - 2, Ranges: []Range{{MaxVarint - 1, MaxVarint}}}},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendFrame(nil, tt.f)
			if tt.want != nil && !bytes.Equal(got, tt.want) {
				t.Fatalf("AppendFrame = %x, want %x", got, tt.want)
			}
			f, _, err := ReadControlFrame(bufio.NewReader(bytes.NewReader(got)), 1<<10, nil)
			if err != nil {
				t.Fatalf("ReadControlFrame: %v", err)
			}
			if !reflect.DeepEqual(f, tt.f) {
				t.Fatalf("decoded %#v, want %#v", f, tt.f)
			}
			if r, ok := tt.f.(*Report); ok && r.Len() != len(got)-2 {
				t.Fatalf("Len() = %d, body is %d bytes", r.Len(), len(got)-2)
			}
		})
	}
}

func TestMultipathFrameErrors(t *testing.T) {
	long := make([]byte, 300)
	tests := []struct {
		name string
		typ  FrameType
		body []byte
		msg  string
	}{
		{"add path truncated", TypeAddPath, []byte{1, 3, 'h'}, "address of 3 bytes"},
		{"add path address too long", TypeAddPath, append([]byte{1, 0x41, 0x00}, long[:256]...), "address of 256 bytes (limit 255"},
		{"add path token too long", TypeAddPath, append([]byte{1, 0, 0x42, 0x01}, long[:300]...), "token of 513 bytes"},
		{"add path trailing", TypeAddPath, []byte{1, 0, 0, 1, 'x', 9}, "trailing"},
		{"add path server name beyond body", TypeAddPath, []byte{1, 0, 0, 9}, "server name of 9 bytes"},
		{"path status state 0", TypePathStatus, []byte{1, 0, 0, 0}, "path state 0"},
		{"path status state 4", TypePathStatus, []byte{1, 4, 0, 0}, "path state 4"},
		{"path status no reason", TypePathStatus, []byte{1, 1, 0}, "truncated"},
		{"path status reason too long", TypePathStatus, append([]byte{1, 2, 0, 0x41, 0x00}, long[:256]...), "reason of 256 bytes"},
		{"raw data empty command", TypeRawData, []byte{5}, "empty command"},
		{"raw data empty", TypeRawData, nil, "truncated"},
		{"report too many paths", TypeReport, append([]byte{0x40, 65}, long...), "65 paths"},
		{"report paths beyond body", TypeReport, []byte{2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "2 paths"},
		{"report unknown flag", TypeReport, []byte{0, 1, 4, 0, 2, 0, 0}, "flags 0x02"},
		{"report range inside contiguous", TypeReport, []byte{0, 1, 4, 10, 0, 1, 5, 1, 0}, "range [5, +1) after 10"},
		{"report range adjacent", TypeReport, []byte{0, 1, 4, 10, 0, 1, 10, 1, 0}, "range [10, +1) after 10"},
		{"report empty range", TypeReport, []byte{0, 1, 4, 10, 0, 1, 12, 0, 0}, "range [12, +0)"},
		{"report ranges overlap", TypeReport, []byte{0, 1, 4, 0, 0, 2, 2, 5, 6, 1, 0}, "range [6, +1) after 7"},
		{"report too many ranges", TypeReport, append([]byte{0, 1, 4, 0, 0, 17}, long[:40]...), "17 ranges"},
		{"report complete with ranges", TypeReport, []byte{0, 1, 4, 0, 1, 1, 2, 1, 0}, "complete stream with ranges"},
		{"report truncated stream", TypeReport, []byte{0, 1, 4, 0, 0, 0, 0, 0}, "trailing"},
		{"report streams beyond body", TypeReport, []byte{0, 2, 4, 0, 0, 0, 0}, "2 streams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFrame(tt.typ, tt.body)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, tt.msg)
			}
		})
	}
}

func TestCommandRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Command
		want []byte
	}{
		{"small", Command{SessionID: 0x0102030405060708, PathID: 1, Seq: 2, Expiry: 3,
			Grant: Grant{StreamID: 4, Offset: 5, Length: 6}, Payload: []byte("hi"), Sig: sig(0xee)},
			append([]byte{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 2, 'h', 'i'}, bytes.Repeat([]byte{0xee}, SigLen)...)},
		{"no payload", Command{Grant: Grant{Length: 1}, Sig: sig(1)},
			append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, bytes.Repeat([]byte{1}, SigLen)...)},
		{"grant at 2^62", Command{Grant: Grant{StreamID: 1, Offset: MaxVarint - 10, Length: 10}, Seq: MaxVarint, Expiry: 1 << 41}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.c.Append(nil)
			if tt.want != nil && !bytes.Equal(got, tt.want) {
				t.Fatalf("Append = %x, want %x", got, tt.want)
			}
			if signed := tt.c.AppendSigned(nil); !bytes.Equal(signed, got[:len(got)-SigLen]) {
				t.Fatalf("AppendSigned is not the prefix before the MAC")
			}
			c, err := ParseCommand(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*c, tt.c) {
				t.Fatalf("decoded %#v, want %#v", *c, tt.c)
			}
			if tt.c.Grant.End() != tt.c.Grant.Offset+tt.c.Grant.Length {
				t.Fatal("Grant.End")
			}
		})
	}
}

func TestParseCommandErrors(t *testing.T) {
	valid := (&Command{Grant: Grant{Length: 1}, Payload: []byte("abc")}).Append(nil)
	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty", nil, "command of 0 bytes"},
		{"shorter than id and signature", make([]byte, 71), "command of 71 bytes"},
		{"no fields", make([]byte, 72), "truncated varint"},
		{"payload longer than body", append(append([]byte(nil), valid[:14]...), append([]byte{9, 'a', 'b', 'c'}, make([]byte, SigLen)...)...), "payload of 9 bytes"},
		{"trailing byte", append(append(append([]byte(nil), valid[:len(valid)-SigLen]...), 0), make([]byte, SigLen)...), "1 trailing bytes"},
		{"grant beyond 2^62", append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0},
			make([]byte, SigLen)...), "beyond 2^62"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCommand(tt.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, tt.msg)
			}
		})
	}
}

func TestPathTokenRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		tok  PathToken
		want []byte
	}{
		{"small", PathToken{SessionID: 9, PathID: 1, Expiry: 2, Addr: "a:1", Sig: sig(7)},
			append([]byte{0, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3, 'a', ':', '1'}, bytes.Repeat([]byte{7}, SigLen)...)},
		{"long address", PathToken{SessionID: 1 << 63, PathID: MaxVarint, Expiry: 1 << 45, Addr: strings.Repeat("x", MaxAddrLen)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.tok.Append(nil)
			if tt.want != nil && !bytes.Equal(got, tt.want) {
				t.Fatalf("Append = %x, want %x", got, tt.want)
			}
			if signed := tt.tok.AppendSigned(nil); !bytes.Equal(signed, got[:len(got)-SigLen]) {
				t.Fatalf("AppendSigned is not the prefix before the MAC")
			}
			tok, err := ParsePathToken(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*tok, tt.tok) {
				t.Fatalf("decoded %#v, want %#v", *tok, tt.tok)
			}
		})
	}
}

func TestParsePathTokenErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty", nil, "token of 0 bytes"},
		{"too long", make([]byte, MaxTokenLen+1), "token of 513 bytes"},
		{"no fields", make([]byte, 72), "truncated varint"},
		{"address beyond body", append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 5, 'a'}, make([]byte, SigLen)...), "address of 5 bytes"},
		{"address too long", append(append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x41, 0x00}, make([]byte, 256)...), make([]byte, SigLen)...), "address of 256 bytes"},
		{"trailing byte", append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0}, make([]byte, SigLen)...), "1 trailing bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePathToken(tt.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, tt.msg)
			}
		})
	}
}

// fuzzFrame checks that ParseFrame of typ never panics and that whatever it
// accepts re-encodes to a body that decodes to the same value.
func fuzzFrame(f *testing.F, typ FrameType, seeds ...Frame) {
	for _, s := range seeds {
		b := AppendFrame(nil, s)
		f.Add(b[2:]) // seeds are small: a one-byte type and a one-byte length
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := ParseFrame(typ, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		enc := AppendFrame(nil, fr)
		fr2, _, err := ReadControlFrame(bufio.NewReader(bytes.NewReader(enc)), len(enc), nil)
		if err != nil {
			t.Fatalf("re-decode of %x: %v", enc, err)
		}
		if !reflect.DeepEqual(fr, fr2) {
			t.Fatalf("round trip: %#v != %#v", fr, fr2)
		}
	})
}

func FuzzAddPath(f *testing.F) {
	fuzzFrame(f, TypeAddPath, &AddPath{PathID: 1, Addr: "127.0.0.1:4433", Token: []byte("token")})
}

func FuzzPathStatus(f *testing.F) {
	fuzzFrame(f, TypePathStatus, &PathStatus{PathID: 1, State: PathStateFailed, Code: 7, Reason: "kwik: path token expired"})
}

func FuzzRawData(f *testing.F) {
	fuzzFrame(f, TypeRawData, &RawData{PathID: 1, Command: (&Command{Grant: Grant{Length: 1}}).Append(nil)})
}

func FuzzReport(f *testing.F) {
	fuzzFrame(f, TypeReport, &Report{
		Paths:   []PathReport{{PathID: 1, Delivered: 100, SmoothedRTTMicro: 500}},
		Streams: []StreamReport{{StreamID: 0, Contiguous: 5, Ranges: []Range{{7, 9}}, ByPath: []PathBytes{{1, 5}}}, {StreamID: 2, Complete: true}},
	})
}

// FuzzParseCommand checks that the command decoder never panics, never
// accepts a grant beyond 2^62, and that what it accepts re-encodes to a
// command that decodes to the same value. (kwik checks a command's MAC over
// the bytes received, never over a re-encoding.)
func FuzzParseCommand(f *testing.F) {
	f.Add((&Command{SessionID: 1, PathID: 1, Seq: 1, Expiry: 1 << 40, Grant: Grant{StreamID: 1, Offset: 1 << 20, Length: 1 << 18}, Payload: []byte("chunk 7"), Sig: sig(3)}).Append(nil))
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseCommand(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if c.Grant.Offset > MaxVarint-c.Grant.Length {
			t.Fatalf("accepted grant %+v beyond 2^62", c.Grant)
		}
		c2, err := ParseCommand(c.Append(nil))
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %#v, %v", c2, err)
		}
	})
}

func FuzzParsePathToken(f *testing.F) {
	f.Add((&PathToken{SessionID: 1, PathID: 2, Expiry: 1 << 40, Addr: "127.0.0.1:4433", Sig: sig(9)}).Append(nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := ParsePathToken(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if len(tok.Addr) > MaxAddrLen {
			t.Fatalf("accepted address of %d bytes", len(tok.Addr))
		}
		tok2, err := ParsePathToken(tok.Append(nil))
		if err != nil || !reflect.DeepEqual(tok, tok2) {
			t.Fatalf("round trip: %#v, %v", tok2, err)
		}
	})
}
