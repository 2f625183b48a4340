package chunkstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Key namespaces: the first byte of every Badger key. ('c' held chunk
// bytes in the first layout, formatMagic 1; it is no longer used.)
const (
	nsInfo = 'i' // 'i' sum: chunk record (where the chunk's bytes are)
	nsMeta = 'm' // 'm' key: metadata record
)

// MaxMetaKeyLen is the longest metadata key, in bytes, that PutMeta accepts
// (room for a PATH_MAX path behind a caller's prefix; Badger's own limit is
// 65000).
const MaxMetaKeyLen = 8 << 10

// infoKey returns the Badger key of the chunk record of the chunk with the
// given sum.
func infoKey(sum [32]byte) []byte {
	k := make([]byte, 1+len(sum))
	k[0] = nsInfo
	copy(k[1:], sum[:])
	return k
}

// metaKey returns the Badger key of the metadata record named key.
func metaKey(key string) []byte {
	k := make([]byte, 1+len(key))
	k[0] = nsMeta
	copy(k[1:], key)
	return k
}

// location says where a chunk's bytes are: n bytes at offset off of
// segment seg.
type location struct {
	seg uint32 // segment number, >= 1
	off int64  // offset of the chunk's first byte in the segment
	n   int64  // chunk length
}

// end returns the offset just past the chunk in its segment.
func (l location) end() int64 { return l.off + l.n }

// Chunk record, version 2 (version 1, formatMagic 1, held only the length;
// the bytes had a Badger key of their own):
//
//	[0]      infoV2
//	[1:9]    chunk length, uint64 little endian
//	[9:13]   segment number, uint32 little endian, >= 1
//	[13:21]  offset of the chunk in the segment, uint64 little endian
//
// A later version appends fields (the access time for LRU eviction) and
// bumps the format byte; touching a chunk then rewrites these 21 bytes,
// never the chunk.
const (
	infoV2  = 2
	infoLen = 21
	// maxLocation bounds the length and the offset of a chunk, so that
	// their sum never overflows an int64.
	maxLocation = 1 << 62
)

// encodeInfo returns the chunk record of a chunk stored at l.
func encodeInfo(l location) []byte {
	b := make([]byte, infoLen)
	b[0] = infoV2
	binary.LittleEndian.PutUint64(b[1:], uint64(l.n))
	binary.LittleEndian.PutUint32(b[9:], l.seg)
	binary.LittleEndian.PutUint64(b[13:], uint64(l.off))
	return b
}

// decodeInfo returns the location held in chunk record b. It rejects
// anything but a well-formed version 2 record with an error wrapping
// ErrCorrupt.
func decodeInfo(b []byte) (location, error) {
	if len(b) != infoLen {
		return location{}, fmt.Errorf("chunk record of %d bytes, want %d: %w", len(b), infoLen, ErrCorrupt)
	}
	if b[0] != infoV2 {
		return location{}, fmt.Errorf("chunk record format %d, want %d: %w", b[0], infoV2, ErrCorrupt)
	}
	n := binary.LittleEndian.Uint64(b[1:])
	seg := binary.LittleEndian.Uint32(b[9:])
	off := binary.LittleEndian.Uint64(b[13:])
	if n > maxLocation || off > maxLocation {
		return location{}, fmt.Errorf("chunk record length %d, offset %d out of range: %w", n, off, ErrCorrupt)
	}
	if seg == 0 {
		return location{}, fmt.Errorf("chunk record names segment 0: %w", ErrCorrupt)
	}
	return location{seg: seg, off: int64(off), n: int64(n)}, nil
}

// Metadata record, version 1:
//
//	[0]    metaV1
//	[1:5]  CRC-32C (Castagnoli) of the value, uint32 little endian
//	[5:]   the caller's value
const (
	metaV1     = 1
	metaHeader = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeMeta returns the stored form of value (a fresh slice; value is not
// retained).
func encodeMeta(value []byte) []byte {
	b := make([]byte, metaHeader+len(value))
	b[0] = metaV1
	binary.LittleEndian.PutUint32(b[1:], crc32.Checksum(value, castagnoli))
	copy(b[metaHeader:], value)
	return b
}

// decodeMeta returns the caller's value inside stored record b (a subslice
// of b). A short record, an unknown format or a checksum mismatch gives an
// error wrapping ErrCorrupt.
func decodeMeta(b []byte) ([]byte, error) {
	if len(b) < metaHeader {
		return nil, fmt.Errorf("meta record of %d bytes, want at least %d: %w", len(b), metaHeader, ErrCorrupt)
	}
	if b[0] != metaV1 {
		return nil, fmt.Errorf("meta record format %d, want %d: %w", b[0], metaV1, ErrCorrupt)
	}
	value := b[metaHeader:]
	if want, got := binary.LittleEndian.Uint32(b[1:]), crc32.Checksum(value, castagnoli); want != got {
		return nil, fmt.Errorf("meta record checksum %08x, want %08x: %w", got, want, ErrCorrupt)
	}
	return value, nil
}
