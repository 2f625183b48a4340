package transfer

import (
	"encoding/binary"
	"fmt"
	"math"
)

// OpSendChunk is the first byte of a SEND_CHUNK command (see SendChunk). It
// is not a request type a client may send: Op.Valid reports false for it and
// DecodeRequest refuses it.
const OpSendChunk Op = 6

// MaxSendChunkLen is the largest encoded SendChunk.
const MaxSendChunkLen = 1 + binary.MaxVarintLen64 + MaxPathLen + len(Hash{}) + binary.MaxVarintLen64

// SendChunk is the payload of a command a primary relays (kwik
// Session.SendRawData) to a secondary: "write bytes [FileOffset,
// FileOffset+grant.Length) of Path into the granted stream range", the
// grant being the command's kwik.Grant. Byte k of that file range goes to
// stream offset grant.Offset+k. For a delegated part of a READ reply the
// primary sets FileOffset = j*ChunkSize + k for the range starting at byte k
// of chunk j, and the grant starts at the matching reply offset (see the
// offset contract in the package documentation).
//
// The secondary does not verify what it sends: the client checks every
// chunk against the manifest, so a stale or corrupt mirror is caught there.
type SendChunk struct {
	// Path is the file, relative to the exported root; it must pass
	// CheckPath and must not be "" (the root is not a file).
	Path string
	// Version is the Manifest.Version of the content the primary expects;
	// a secondary does not check it (see below).
	Version Hash
	// FileOffset is where the range starts in the file, at most
	// math.MaxInt64.
	FileOffset uint64
}

func (s *SendChunk) check() error {
	if s.Path == "" {
		return fmt.Errorf("SEND_CHUNK of the root: %w", ErrBadRequest)
	}
	if err := CheckPath(s.Path); err != nil {
		return fmt.Errorf("SEND_CHUNK: %w", err)
	}
	if s.FileOffset > math.MaxInt64 {
		return fmt.Errorf("SEND_CHUNK file offset %d: %w", s.FileOffset, ErrBadRequest)
	}
	return nil
}

// MarshalBinary encodes s:
//
//	byte OpSendChunk (6), uvarint len(Path), Path, 32 bytes Version,
//	uvarint FileOffset
//
// at most MaxSendChunkLen bytes. It refuses what DecodeSendChunk would
// refuse, with the same errors.
func (s *SendChunk) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(s.Path)+len(Hash{})+binary.MaxVarintLen64)
	b = append(b, byte(OpSendChunk))
	b = appendString(b, s.Path)
	b = append(b, s.Version[:]...)
	return binary.AppendUvarint(b, s.FileOffset), nil
}

// DecodeSendChunk decodes a SendChunk encoded by MarshalBinary. Errors wrap
// ErrTooLarge (beyond MaxSendChunkLen or MaxPathLen), ErrOutsideRoot (an
// absolute path, a ".." element or a NUL byte; see CheckPath) or
// ErrBadRequest (anything else: another first byte, truncation, trailing
// bytes, an empty or non-canonical path, an offset beyond math.MaxInt64).
// It does not retain b.
func DecodeSendChunk(b []byte) (*SendChunk, error) {
	if len(b) > MaxSendChunkLen {
		return nil, fmt.Errorf("SEND_CHUNK of %d bytes: %w", len(b), ErrTooLarge)
	}
	d := decoder{b: b}
	op := Op(d.byte1("SEND_CHUNK type"))
	if d.err != nil {
		return nil, d.err
	}
	if op != OpSendChunk {
		return nil, fmt.Errorf("SEND_CHUNK: message type %d: %w", uint8(op), ErrBadRequest)
	}
	s := &SendChunk{}
	s.Path = d.str("SEND_CHUNK path", MaxPathLen)
	s.Version = d.hash("SEND_CHUNK version")
	s.FileOffset = d.uvarint("SEND_CHUNK file offset")
	d.end("SEND_CHUNK")
	if d.err != nil {
		return nil, d.err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}
