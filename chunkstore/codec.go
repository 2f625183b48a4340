package chunkstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

// Key namespaces: the first byte of every Badger key. ('c' held chunk
// bytes in the first layout, formatMagic 1; it is no longer used.)
const (
	nsInfo  = 'i' // 'i' sum: chunk record (where the chunk's bytes are)
	nsStamp = 'a' // 'a' sum: last use of the chunk (for LRU eviction)
	nsMeta  = 'm' // 'm' key: metadata record
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

// stampKey returns the Badger key of the last-use stamp of the chunk with
// the given sum.
func stampKey(sum [32]byte) []byte {
	k := make([]byte, 1+len(sum))
	k[0] = nsStamp
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
	// aligned says that the chunk was written by an aligning appender: it
	// starts at a multiple of chunkAlign and owns the bytes up to the next
	// multiple after its end (nothing else is stored there), so removing
	// it may release [off, alignUp(end)). Chunks of the first segment
	// layout (record format 2) lie back to back and own [off, end) only.
	aligned bool
	// alg is the hash the chunk's key is under, which Get verifies it
	// with. It says nothing of where the chunk is, but is recorded with
	// it, in the same record.
	alg chunkhash.Alg
}

// end returns the offset just past the chunk in its segment.
func (l location) end() int64 { return l.off + l.n }

// chunkAlign is where the appender starts every non-empty chunk: a multiple
// of 4 KiB, the block size of the usual Linux filesystems (ext4, XFS,
// Btrfs, tmpfs on x86-64), so that each chunk owns whole blocks and
// punching the hole of a removed chunk returns exactly its blocks. On a
// filesystem with larger blocks a removed chunk may leave one partly
// used block allocated until its neighbours go too.
const chunkAlign = 4096

// alignUp rounds x up to a multiple of chunkAlign.
func alignUp(x int64) int64 { return (x + chunkAlign - 1) &^ (chunkAlign - 1) }

// alignDown rounds x down to a multiple of chunkAlign.
func alignDown(x int64) int64 { return x &^ (chunkAlign - 1) }

// owned returns the byte range [lo, hi) of its segment that the chunk owns:
// what removing it frees.
func (l location) owned() (lo, hi int64) {
	if l.n == 0 {
		return l.off, l.off
	}
	if l.aligned {
		return l.off, alignUp(l.end())
	}
	return l.off, l.end()
}

// diskBytes returns the disk space charged to the chunk: the whole blocks
// its bytes touch. For an aligned chunk that is exactly the blocks it
// owns; for a chunk of the first layout it may count a block it shares
// with a neighbour twice, so the sum over chunks never falls short of
// the space they take.
func (l location) diskBytes() int64 {
	if l.n == 0 {
		return 0
	}
	return alignUp(l.end()) - alignDown(l.off)
}

// Chunk record, versions 2 and 3 (version 1, formatMagic 1, held only the
// length; the bytes had a Badger key of their own):
//
//	[0]      infoV2 (chunk bytes back to back) or infoV3 (aligned: see
//	         location.aligned)
//	[1:9]    chunk length, uint64 little endian
//	[9:13]   segment number, uint32 little endian, >= 1
//	[13:21]  offset of the chunk in the segment, uint64 little endian
//	[21]     only for a chunk not under SHA-256: its hash algorithm
//	         (chunkhash.Alg, never chunkhash.SHA256)
//
// A SHA-256 chunk's record is 21 bytes, exactly as before chunks named
// their algorithm, so stores written then read as they were, and every
// record has one encoding. A store written by an older kwikfs refuses a
// 22-byte record as corrupt and drops its chunk: it is fetched again,
// never served unverified.
//
// The chunk's last use lives in a record of its own (stampKey), so that
// touching a chunk never rewrites its record.
const (
	infoV2  = 2
	infoV3  = 3
	infoLen = 21
	// infoAlgLen is the length of a record with its algorithm byte.
	infoAlgLen = infoLen + 1
	// maxLocation bounds the length and the offset of a chunk, so that
	// their sum never overflows an int64 (nor its alignment).
	maxLocation = 1 << 60
)

// encodeInfo returns the chunk record of a chunk stored at l.
func encodeInfo(l location) []byte {
	n := infoLen
	if l.alg != chunkhash.SHA256 {
		n = infoAlgLen
	}
	b := make([]byte, n)
	b[0] = infoV2
	if l.aligned {
		b[0] = infoV3
	}
	binary.LittleEndian.PutUint64(b[1:], uint64(l.n))
	binary.LittleEndian.PutUint32(b[9:], l.seg)
	binary.LittleEndian.PutUint64(b[13:], uint64(l.off))
	if n == infoAlgLen {
		b[infoLen] = byte(l.alg)
	}
	return b
}

// decodeInfo returns the location held in chunk record b. It rejects
// anything but a well-formed version 2 or 3 record with an error wrapping
// ErrCorrupt; a version 3 record must name an aligned offset, and an
// algorithm byte must name a known algorithm other than SHA-256.
func decodeInfo(b []byte) (location, error) {
	if len(b) != infoLen && len(b) != infoAlgLen {
		return location{}, fmt.Errorf("chunk record of %d bytes, want %d or %d: %w", len(b), infoLen, infoAlgLen, ErrCorrupt)
	}
	if b[0] != infoV2 && b[0] != infoV3 {
		return location{}, fmt.Errorf("chunk record format %d, want %d or %d: %w", b[0], infoV2, infoV3, ErrCorrupt)
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
	aligned := b[0] == infoV3
	if aligned && off%chunkAlign != 0 {
		return location{}, fmt.Errorf("aligned chunk record at offset %d: %w", off, ErrCorrupt)
	}
	alg := chunkhash.SHA256
	if len(b) == infoAlgLen {
		alg = chunkhash.Alg(b[infoLen])
		if alg == chunkhash.SHA256 || !alg.Valid() {
			return location{}, fmt.Errorf("chunk record hash algorithm %v: %w", alg, ErrCorrupt)
		}
	}
	return location{seg: seg, off: int64(off), n: int64(n), aligned: aligned, alg: alg}, nil
}

// Last-use stamp record: the value of the Store's logical clock when the
// chunk was last stored or read, uint64 little endian (8 bytes).
const stampLen = 8

// encodeStamp returns the stamp record of stamp.
func encodeStamp(stamp uint64) []byte {
	return binary.LittleEndian.AppendUint64(make([]byte, 0, stampLen), stamp)
}

// decodeStamp returns the stamp held in record b, or an error wrapping
// ErrCorrupt if b is not 8 bytes long.
func decodeStamp(b []byte) (uint64, error) {
	if len(b) != stampLen {
		return 0, fmt.Errorf("stamp record of %d bytes, want %d: %w", len(b), stampLen, ErrCorrupt)
	}
	return binary.LittleEndian.Uint64(b), nil
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
