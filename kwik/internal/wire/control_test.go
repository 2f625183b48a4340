package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestControlFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want []byte
	}{
		{"settings", &Settings{StreamWindow: 8 << 20, SessionWindow: 32 << 20, MaxStreams: 1024, MaxDataFramePayload: 256 << 10, MaxControlFrameSize: 64 << 10},
			[]byte{0x00, 0x17,
				0x01, 0x80, 0x80, 0x00, 0x00,
				0x02, 0x82, 0x00, 0x00, 0x00,
				0x03, 0x44, 0x00,
				0x04, 0x80, 0x04, 0x00, 0x00,
				0x05, 0x80, 0x01, 0x00, 0x00}},
		{"settings zero", &Settings{}, []byte{0x00, 0x0a, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0}},
		{"max data", &MaxData{Max: 37}, []byte{0x01, 0x01, 37}},
		{"max data 2^62-1", &MaxData{Max: MaxVarint}, []byte{0x01, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"max stream data", &MaxStreamData{StreamID: 4, Max: 300}, []byte{0x02, 0x03, 4, 0x41, 0x2c}},
		{"max streams", &MaxStreams{Max: 1024}, []byte{0x03, 0x02, 0x44, 0x00}},
		{"reset stream", &ResetStream{StreamID: 7, Code: 9, FinalSize: 1 << 20}, []byte{0x04, 0x06, 7, 9, 0x80, 0x10, 0x00, 0x00}},
		{"stop sending", &StopSending{StreamID: 1, Code: 0x100}, []byte{0x05, 0x03, 1, 0x41, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendFrame(nil, tt.f)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("AppendFrame = %x, want %x", got, tt.want)
			}
			f, _, err := ReadControlFrame(bufio.NewReader(bytes.NewReader(got)), 1<<10, nil)
			if err != nil {
				t.Fatalf("ReadControlFrame: %v", err)
			}
			if !reflect.DeepEqual(f, tt.f) {
				t.Fatalf("decoded %#v, want %#v", f, tt.f)
			}
		})
	}
}

func TestReadControlFrameErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		max   int
		isErr error
	}{
		{"clean end", nil, 64, io.EOF},
		{"end inside type varint", []byte{0x40}, 64, io.ErrUnexpectedEOF},
		{"end after type", []byte{0x01}, 64, io.ErrUnexpectedEOF},
		{"end inside length varint", []byte{0x01, 0x40}, 64, io.ErrUnexpectedEOF},
		{"end inside body", []byte{0x02, 0x03, 4}, 64, io.ErrUnexpectedEOF},
		{"too large", []byte{0x01, 0x41, 0x00}, 64, ErrFrameTooLarge},
		{"too large huge length", []byte{0x01, 0xbf, 0xff, 0xff, 0xff}, 64 << 10, ErrFrameTooLarge},
		{"unknown type", []byte{0x3f, 0x00}, 64, ErrUnknownFrame},
		{"unknown type 0x14", []byte{0x14, 0x00}, 64, ErrUnknownFrame},
		{"empty add path", []byte{0x10, 0x00}, 64, ErrMalformed},
		{"raw data without command", []byte{0x12, 0x01, 0x00}, 64, ErrMalformed},
		{"trailing bytes", []byte{0x01, 0x02, 0x01, 0x01}, 64, ErrMalformed},
		{"truncated varint in body", []byte{0x02, 0x02, 0x04, 0x40}, 64, ErrMalformed},
		{"empty max data", []byte{0x01, 0x00}, 64, ErrMalformed},
		{"reset missing final size", []byte{0x04, 0x02, 1, 2}, 64, ErrMalformed},
		{"settings repeated key", []byte{0x00, 0x04, 1, 5, 1, 6}, 64, ErrMalformed},
		{"settings odd pair", []byte{0x00, 0x01, 1}, 64, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadControlFrame(bufio.NewReader(bytes.NewReader(tt.in)), tt.max, nil)
			if !errors.Is(err, tt.isErr) {
				t.Fatalf("err = %v, want %v", err, tt.isErr)
			}
		})
	}
}

func TestSettingsIgnoresUnknownKeys(t *testing.T) {
	in := []byte{0x00, 0x00, 0x3f, 0x07, 0x01, 0x09, 0x40, 0x20, 0x00}
	in[1] = byte(len(in) - 2)
	f, _, err := ReadControlFrame(bufio.NewReader(bytes.NewReader(in)), 64, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Settings{StreamWindow: 9}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("got %#v, want %#v", f, want)
	}
}

func TestReadControlFrameSequenceReusesBuffer(t *testing.T) {
	var b []byte
	frames := []Frame{&MaxData{Max: 1}, &StopSending{StreamID: 2, Code: 3}, &MaxStreams{Max: 4}}
	for _, f := range frames {
		b = AppendFrame(b, f)
	}
	r := bufio.NewReader(bytes.NewReader(b))
	buf := make([]byte, 0, 16)
	for i, want := range frames {
		f, nbuf, err := ReadControlFrame(r, 64, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if &nbuf[:1][0] != &buf[:1][0] {
			t.Fatalf("frame %d: buffer reallocated", i)
		}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("frame %d: got %#v, want %#v", i, f, want)
		}
	}
	if _, _, err := ReadControlFrame(r, 64, buf); err != io.EOF {
		t.Fatalf("after last frame: err = %v, want io.EOF", err)
	}
}

func TestFrameTypeString(t *testing.T) {
	if got := TypeRawData.String(); got != "RAW_DATA" {
		t.Fatalf("got %q", got)
	}
	if got := FrameType(0x99).String(); got != "0x99" {
		t.Fatalf("got %q", got)
	}
}

// FuzzReadControlFrame checks that the decoder never panics, never accepts a
// frame over the limit, and that whatever it accepts re-encodes to a frame
// that decodes to the same value.
func FuzzReadControlFrame(f *testing.F) {
	f.Add(AppendFrame(nil, &Settings{StreamWindow: 1, SessionWindow: 2, MaxStreams: 3, MaxDataFramePayload: 4, MaxControlFrameSize: 5}))
	f.Add(AppendFrame(nil, &ResetStream{StreamID: 1, Code: 2, FinalSize: 3}))
	f.Add([]byte{0x01, 0x41, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 256
		r := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for {
			fr, nbuf, err := ReadControlFrame(r, max, buf)
			buf = nbuf
			if err != nil {
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
		}
	})
}
