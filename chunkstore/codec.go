package chunkstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Key namespaces: the first byte of every Badger key.
const (
	nsChunk = 'c' // 'c' sum: chunk bytes
	nsInfo  = 'i' // 'i' sum: chunk info record
	nsMeta  = 'm' // 'm' key: metadata record
)

// MaxMetaKeyLen is the longest metadata key, in bytes, that PutMeta accepts
// (room for a PATH_MAX path behind a caller's prefix; Badger's own limit is
// 65000).
const MaxMetaKeyLen = 8 << 10

// chunkKey returns the Badger key of the chunk with the given sum.
func chunkKey(sum [32]byte) []byte {
	k := make([]byte, 1+len(sum))
	k[0] = nsChunk
	copy(k[1:], sum[:])
	return k
}

// infoKey returns the Badger key of the info record of the chunk with the
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

// Chunk info record, version 1:
//
//	[0]    infoV1
//	[1:9]  chunk length, uint64 little endian
//
// A later version appends fields (the access time for LRU eviction) and
// bumps the format byte.
const (
	infoV1  = 1
	infoLen = 9
)

// encodeInfo returns the info record of a chunk of n bytes.
func encodeInfo(n int) []byte {
	b := make([]byte, infoLen)
	b[0] = infoV1
	binary.LittleEndian.PutUint64(b[1:], uint64(n))
	return b
}

// decodeInfo returns the chunk length held in info record b. It rejects
// anything but a well-formed version 1 record with an error wrapping
// ErrCorrupt.
func decodeInfo(b []byte) (int64, error) {
	if len(b) != infoLen {
		return 0, fmt.Errorf("chunk info of %d bytes, want %d: %w", len(b), infoLen, ErrCorrupt)
	}
	if b[0] != infoV1 {
		return 0, fmt.Errorf("chunk info format %d, want %d: %w", b[0], infoV1, ErrCorrupt)
	}
	n := binary.LittleEndian.Uint64(b[1:])
	if n > 1<<62 {
		return 0, fmt.Errorf("chunk info length %d out of range: %w", n, ErrCorrupt)
	}
	return int64(n), nil
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
