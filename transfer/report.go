package transfer

import (
	"encoding/binary"
	"fmt"
)

// OpReportCorrupt is the first byte of a REPORT_CORRUPT request (see
// CorruptReport). Like OpSendChunk it lies outside the request types that
// Op.Valid accepts: a server recognises it by its first byte (see
// IsCorruptReport) before decoding an ordinary Request.
const OpReportCorrupt Op = 7

// MaxCorruptReportLen is the largest encoded CorruptReport.
const MaxCorruptReportLen = 1 + binary.MaxVarintLen64 + MaxPathLen + len(Hash{}) + binary.MaxVarintLen64

// CorruptReport tells a primary that chunk Chunk of Path at Version failed
// its hash when a client received it in a READ reply, so that the primary
// can strike the path (secondary) that delivered it. The client sends it on
// a request stream of its own, best effort; the primary answers with the
// status byte alone (StatusOK) and closes the stream.
type CorruptReport struct {
	Path    string
	Version Hash
	// Chunk is the chunk's index, below MaxChunks.
	Chunk int
}

func (r *CorruptReport) check() error {
	if r.Path == "" {
		return fmt.Errorf("REPORT_CORRUPT of the root: %w", ErrBadRequest)
	}
	if err := CheckPath(r.Path); err != nil {
		return fmt.Errorf("REPORT_CORRUPT: %w", err)
	}
	if r.Chunk < 0 || r.Chunk >= MaxChunks {
		return fmt.Errorf("REPORT_CORRUPT chunk %d: %w", r.Chunk, ErrBadRequest)
	}
	return nil
}

// MarshalBinary encodes r:
//
//	byte OpReportCorrupt (7), uvarint len(Path), Path, 32 bytes Version,
//	uvarint Chunk
//
// It refuses what DecodeCorruptReport would refuse, with the same errors.
func (r *CorruptReport) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(r.Path)+len(Hash{})+binary.MaxVarintLen64)
	b = append(b, byte(OpReportCorrupt))
	b = appendString(b, r.Path)
	b = append(b, r.Version[:]...)
	return binary.AppendUvarint(b, uint64(r.Chunk)), nil
}

// IsCorruptReport reports whether the request message b starts with
// OpReportCorrupt.
func IsCorruptReport(b []byte) bool { return len(b) > 0 && Op(b[0]) == OpReportCorrupt }

// DecodeCorruptReport decodes a CorruptReport encoded by MarshalBinary.
// Errors wrap ErrTooLarge (beyond MaxCorruptReportLen or MaxPathLen),
// ErrOutsideRoot (see CheckPath) or ErrBadRequest (anything else: another
// first byte, truncation, trailing bytes, an empty path, a chunk index of
// MaxChunks or more). It does not retain b.
func DecodeCorruptReport(b []byte) (*CorruptReport, error) {
	if len(b) > MaxCorruptReportLen {
		return nil, fmt.Errorf("REPORT_CORRUPT of %d bytes: %w", len(b), ErrTooLarge)
	}
	d := decoder{b: b}
	if op := Op(d.byte1("REPORT_CORRUPT type")); d.err == nil && op != OpReportCorrupt {
		return nil, fmt.Errorf("REPORT_CORRUPT type %d: %w", uint8(op), ErrBadRequest)
	}
	r := &CorruptReport{}
	r.Path = d.str("REPORT_CORRUPT path", MaxPathLen)
	r.Version = d.hash("REPORT_CORRUPT version")
	chunk := d.uvarint("REPORT_CORRUPT chunk")
	d.end("REPORT_CORRUPT")
	if d.err != nil {
		return nil, d.err
	}
	if chunk >= MaxChunks {
		return nil, fmt.Errorf("REPORT_CORRUPT chunk %d: %w", chunk, ErrBadRequest)
	}
	r.Chunk = int(chunk)
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}
