package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestDataHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    DataHeader
		want []byte
	}{
		{"zero", DataHeader{}, []byte{0, 0, 0}},
		{"fin only", DataHeader{Offset: 10, Fin: true}, []byte{10, 0, 1}},
		{"256 KiB at 1 MiB", DataHeader{Offset: 1 << 20, Length: 256 << 10}, []byte{0x80, 0x10, 0, 0, 0x80, 0x04, 0, 0, 0}},
		{"max end", DataHeader{Offset: MaxVarint - 5, Length: 5, Fin: true},
			[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa, 5, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.h.Append(nil)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("Append = %x, want %x", got, tt.want)
			}
			if len(got) > MaxDataHeaderLen {
				t.Fatalf("header of %d bytes exceeds MaxDataHeaderLen", len(got))
			}
			h, n, err := ParseDataHeader(append(got, 0xee))
			if err != nil || n != len(got) || h != tt.h {
				t.Fatalf("ParseDataHeader = %+v, %d, %v", h, n, err)
			}
			h, err = ReadDataHeader(bufio.NewReader(bytes.NewReader(got)))
			if err != nil || h != tt.h {
				t.Fatalf("ReadDataHeader = %+v, %v", h, err)
			}
		})
	}
}

func TestDataHeaderErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		parseErr error // ParseDataHeader
		readErr  error // ReadDataHeader
	}{
		{"empty", nil, io.EOF, io.EOF},
		{"offset only", []byte{5}, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"truncated offset", []byte{0x80, 1}, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"no flags", []byte{5, 6}, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"unknown flag bits", []byte{5, 6, 0x02}, ErrMalformed, ErrMalformed},
		{"end beyond 2^62", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa, 6, 0}, ErrMalformed, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseDataHeader(tt.in); !errors.Is(err, tt.parseErr) {
				t.Errorf("ParseDataHeader err = %v, want %v", err, tt.parseErr)
			}
			if _, err := ReadDataHeader(bufio.NewReader(bytes.NewReader(tt.in))); !errors.Is(err, tt.readErr) {
				t.Errorf("ReadDataHeader err = %v, want %v", err, tt.readErr)
			}
		})
	}
}

func TestStreamHeader(t *testing.T) {
	tests := []struct {
		id   uint64
		want []byte
	}{
		{0, []byte{0}},
		{63, []byte{63}},
		{64, []byte{0x40, 64}},
		{1<<30 + 1, []byte{0xc0, 0, 0, 0, 0x40, 0, 0, 1}},
	}
	for _, tt := range tests {
		got := AppendStreamHeader(nil, tt.id)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("AppendStreamHeader(%d) = %x, want %x", tt.id, got, tt.want)
		}
		id, err := ReadStreamHeader(bytes.NewReader(got))
		if err != nil || id != tt.id {
			t.Errorf("ReadStreamHeader = %d, %v", id, err)
		}
	}
	if _, err := ReadStreamHeader(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: err = %v, want io.EOF", err)
	}
}

// FuzzParseDataHeader checks that ParseDataHeader and ReadDataHeader agree,
// never panic, and that accepted headers re-encode to equal values.
func FuzzParseDataHeader(f *testing.F) {
	f.Add(DataHeader{Offset: 1 << 20, Length: 256 << 10, Fin: true}.Append(nil))
	f.Add([]byte{5, 6, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, perr := ParseDataHeader(in)
		rh, rerr := ReadDataHeader(bytes.NewReader(in))
		if (perr == nil) != (rerr == nil) {
			t.Fatalf("parse err %v, read err %v", perr, rerr)
		}
		ah, aerr := ReadDataHeaderAtomic(bufio.NewReaderSize(bytes.NewReader(in), 32))
		if (perr == nil) != (aerr == nil) || ah != h {
			t.Fatalf("parse %+v, %v; atomic %+v, %v", h, perr, ah, aerr)
		}
		if perr != nil {
			return
		}
		if h != rh || n > len(in) || n > MaxDataHeaderLen {
			t.Fatalf("parse %+v/%d, read %+v", h, n, rh)
		}
		if h.End() > MaxVarint {
			t.Fatalf("accepted end %d beyond 2^62", h.End())
		}
		h2, _, err := ParseDataHeader(h.Append(nil))
		if err != nil || h2 != h {
			t.Fatalf("round trip %+v -> %+v, %v", h, h2, err)
		}
	})
}

// FuzzReadStreamHeader checks the data stream header decoder.
func FuzzReadStreamHeader(f *testing.F) {
	f.Add([]byte{0x40, 0x40})
	f.Fuzz(func(t *testing.T, in []byte) {
		id, n, perr := ParseStreamHeader(in)
		rid, rerr := ReadStreamHeader(bytes.NewReader(in))
		if (perr == nil) != (rerr == nil) || (perr == nil && (id != rid || n > len(in))) {
			t.Fatalf("parse %d/%d/%v, read %d/%v", id, n, perr, rid, rerr)
		}
		if perr == nil {
			if id2, _, err := ParseStreamHeader(AppendStreamHeader(nil, id)); err != nil || id2 != id {
				t.Fatalf("round trip %d -> %d, %v", id, id2, err)
			}
		}
	})
}

// failingReader returns its bytes one Read at a time, then err.
type failingReader struct {
	chunks [][]byte
	err    error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, r.err
	}
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

func TestReadDataHeaderAtomic(t *testing.T) {
	hdr := DataHeader{Offset: 1 << 20, Length: 70000, Fin: true}.Append(nil)
	errTimeout := errors.New("timeout")
	t.Run("whole header", func(t *testing.T) {
		br := bufio.NewReaderSize(bytes.NewReader(append(hdr, 'x')), 16)
		h, err := ReadDataHeaderAtomic(br)
		if err != nil || h != (DataHeader{Offset: 1 << 20, Length: 70000, Fin: true}) {
			t.Fatalf("%+v, %v", h, err)
		}
		if b, _ := br.ReadByte(); b != 'x' {
			t.Fatalf("next byte %q", b)
		}
	})
	t.Run("failure inside header consumes nothing", func(t *testing.T) {
		for cut := 1; cut < len(hdr); cut++ {
			fr := &failingReader{chunks: [][]byte{hdr[:cut]}, err: errTimeout}
			br := bufio.NewReaderSize(fr, 16)
			if _, err := ReadDataHeaderAtomic(br); err != errTimeout {
				t.Fatalf("cut %d: err = %v", cut, err)
			}
			// The rest arrives; the retry sees the whole header.
			fr.chunks = [][]byte{hdr[cut:]}
			fr.err = io.EOF
			h, err := ReadDataHeaderAtomic(br)
			if err != nil || h.Length != 70000 {
				t.Fatalf("cut %d: retry %+v, %v", cut, h, err)
			}
		}
	})
	t.Run("clean end", func(t *testing.T) {
		if _, err := ReadDataHeaderAtomic(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("end inside header", func(t *testing.T) {
		if _, err := ReadDataHeaderAtomic(bufio.NewReader(bytes.NewReader(hdr[:3]))); err != io.ErrUnexpectedEOF {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		if _, err := ReadDataHeaderAtomic(bufio.NewReader(bytes.NewReader([]byte{1, 2, 4}))); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err = %v", err)
		}
	})
}
