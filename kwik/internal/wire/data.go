package wire

import (
	"bufio"
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// FlagFin marks the data frame that ends a logical stream: its end offset is
// the stream's final size.
const FlagFin byte = 0x01

// MaxDataHeaderLen is the longest encoding of a DataHeader.
const MaxDataHeaderLen = 8 + 8 + 1

// MaxStreamHeaderLen is the longest encoding of a data stream's header.
const MaxStreamHeaderLen = 8

// DataHeader precedes Length bytes of payload that belong at Offset of a
// logical stream. Offset+Length never exceeds MaxVarint.
type DataHeader struct {
	Offset uint64
	Length uint64
	Fin    bool
}

// End returns the offset just past the frame's payload.
func (h DataHeader) End() uint64 { return h.Offset + h.Length }

// Append appends the encoded header to b. It panics if Offset+Length exceeds
// MaxVarint (a programming error).
func (h DataHeader) Append(b []byte) []byte {
	if h.Offset > MaxVarint-h.Length || h.Length > MaxVarint {
		panic(fmt.Sprintf("kwik/wire: data frame [%d, +%d) beyond 2^62", h.Offset, h.Length))
	}
	b = quicvarint.Append(b, h.Offset)
	b = quicvarint.Append(b, h.Length)
	var flags byte
	if h.Fin {
		flags |= FlagFin
	}
	return append(b, flags)
}

// ParseDataHeader decodes a data frame header from the start of b and returns
// it with the number of bytes it took. A b that ends inside the header yields
// io.ErrUnexpectedEOF (io.EOF if b is empty).
func ParseDataHeader(b []byte) (DataHeader, int, error) {
	var h DataHeader
	off, n1, err := quicvarint.Parse(b)
	if err != nil {
		return h, 0, err
	}
	l, n2, err := quicvarint.Parse(b[n1:])
	if err != nil {
		return h, 0, noEOF(err)
	}
	n := n1 + n2
	if len(b) <= n {
		return h, 0, io.ErrUnexpectedEOF
	}
	h.Offset, h.Length = off, l
	if err := h.setFlags(b[n]); err != nil {
		return DataHeader{}, 0, err
	}
	return h, n + 1, nil
}

// ReadDataHeader reads a data frame header from r. io.EOF means that r ended
// cleanly before the header's first byte.
func ReadDataHeader(r io.ByteReader) (DataHeader, error) {
	var h DataHeader
	off, err := readVarint(r)
	if err != nil {
		return h, err
	}
	l, err := readVarint(r)
	if err != nil {
		return h, noEOF(err)
	}
	flags, err := r.ReadByte()
	if err != nil {
		return h, noEOF(err)
	}
	h.Offset, h.Length = off, l
	if err := h.setFlags(flags); err != nil {
		return DataHeader{}, err
	}
	return h, nil
}

func (h *DataHeader) setFlags(flags byte) error {
	if flags&^FlagFin != 0 {
		return fmt.Errorf("data frame flags 0x%02x: unknown bits: %w", flags, ErrMalformed)
	}
	if h.Offset > MaxVarint-h.Length {
		return fmt.Errorf("data frame [%d, +%d) beyond 2^62: %w", h.Offset, h.Length, ErrMalformed)
	}
	h.Fin = flags&FlagFin != 0
	return nil
}

// AppendStreamHeader appends the header that opens a data stream for
// logical stream id.
func AppendStreamHeader(b []byte, id uint64) []byte {
	return quicvarint.Append(b, id)
}

// ReadStreamHeader reads the logical stream ID that opens a data stream.
// io.EOF means that the stream ended before its first byte.
func ReadStreamHeader(r io.ByteReader) (uint64, error) {
	return readVarint(r)
}

// ParseStreamHeader decodes a data stream header from the start of b and
// returns the logical stream ID with the number of bytes it took.
func ParseStreamHeader(b []byte) (uint64, int, error) {
	return quicvarint.Parse(b)
}

// ReadDataHeaderAtomic reads a data frame header from br without consuming
// any byte unless the whole header is there: if br fails inside a header
// (say, a read deadline), the stream position is unchanged and the read can
// be retried. io.EOF means that br ended cleanly before the header. br's
// buffer must hold at least MaxDataHeaderLen bytes.
func ReadDataHeaderAtomic(br *bufio.Reader) (DataHeader, error) {
	need := 1
	for {
		b, err := br.Peek(need)
		if len(b) < need {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return DataHeader{}, err
		}
		h, n, perr := ParseDataHeader(b)
		switch {
		case perr == nil:
			br.Discard(n)
			return h, nil
		case perr == io.EOF || perr == io.ErrUnexpectedEOF:
			need = dataHeaderLen(b)
		default:
			return DataHeader{}, perr
		}
	}
}

// dataHeaderLen returns the length of the header that b begins, or, if b is
// too short to tell, a length b must at least have.
func dataHeaderLen(b []byte) int {
	l1 := 1 << (b[0] >> 6)
	if len(b) <= l1 {
		return l1 + 1
	}
	return l1 + 1<<(b[l1]>>6) + 1
}
