package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/kwikfs/kwikfs/internal/chunkhash"
)

// Hash is the 256-bit digest of a chunk's bytes under its manifest's
// HashAlg.
type Hash [32]byte

// String returns the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// HashAlg is the algorithm a manifest hashes its chunks with. The zero value
// is SHA256; a manifest encoded before the field existed decodes as SHA256.
// Both algorithms give 32-byte digests.
type HashAlg = chunkhash.Alg

// The chunk hash algorithms; their values are part of the manifest
// encoding.
const (
	// SHA256 is SHA-256, the algorithm of every manifest before BLAKE3.
	SHA256 HashAlg = chunkhash.SHA256
	// BLAKE3 is BLAKE3 (256-bit output), the primary's default.
	BLAKE3 HashAlg = chunkhash.BLAKE3
)

// ParseHashAlg returns the algorithm called name: "sha256" or "blake3".
func ParseHashAlg(name string) (HashAlg, error) { return chunkhash.Parse(name) }

// SumAlg returns the Hash of data under alg. It panics if alg is not
// Valid (decoded manifests always hold a valid one).
func SumAlg(alg HashAlg, data []byte) Hash { return Hash(chunkhash.Sum(alg, data)) }

// File type bits of Attr.Mode; the same values as the Unix S_IF* constants,
// so that Attr.Mode can be handed to the kernel unchanged.
const (
	ModeTypeMask uint32 = 0o170000
	ModeDir      uint32 = 0o040000
	ModeRegular  uint32 = 0o100000
	ModeSymlink  uint32 = 0o120000
	ModePermMask uint32 = 0o7777
)

// Attr describes one file, directory or symlink of the exported tree.
//
// Mode holds the Unix type bits (ModeDir, ModeRegular, ModeSymlink) and the
// permission bits. Only these three types are exported; servers skip other
// types (devices, sockets, FIFOs) when listing and refuse them in Stat.
type Attr struct {
	// Name is the base name in a List reply; Stat leaves it empty.
	Name string
	// Mode is the Unix type and permission bits.
	Mode uint32
	// Size is the length in bytes (the target's length for a symlink).
	Size int64
	// MtimeNs is the modification time in nanoseconds since the Unix epoch.
	MtimeNs int64
	// Target is the symlink target; empty for other types.
	Target string
}

// IsDir reports whether a is a directory.
func (a Attr) IsDir() bool { return a.Mode&ModeTypeMask == ModeDir }

// IsRegular reports whether a is a regular file.
func (a Attr) IsRegular() bool { return a.Mode&ModeTypeMask == ModeRegular }

// IsSymlink reports whether a is a symbolic link.
func (a Attr) IsSymlink() bool { return a.Mode&ModeTypeMask == ModeSymlink }

// Manifest describes the content of one regular file at one version: its
// length, chunk size and the hash of every chunk. Chunk i covers bytes
// [i*ChunkSize, min((i+1)*ChunkSize, Size)).
type Manifest struct {
	Size      int64
	MtimeNs   int64
	Mode      uint32
	ChunkSize uint32
	// Alg is the algorithm of Hashes; the zero value is SHA256.
	Alg HashAlg
	// Version identifies the content: SHA-256 over Size, ChunkSize, Alg
	// (unless SHA256) and every chunk hash (see ComputeVersion). Two
	// manifests with the same Version describe the same bytes.
	Version Hash
	// Hashes holds one hash per chunk under Alg; len(Hashes) ==
	// NumChunks().
	Hashes []Hash
}

// Sum returns the Hash of data under m.Alg, as m's chunk hashes are
// computed. It panics if m.Alg is not Valid (see Check).
func (m *Manifest) Sum(data []byte) Hash { return SumAlg(m.Alg, data) }

// NumChunks returns how many chunks the file has (0 for an empty file).
func (m *Manifest) NumChunks() int {
	if m.Size <= 0 || m.ChunkSize == 0 {
		return 0
	}
	return int((m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize))
}

// ChunkOffset returns the file offset at which chunk i starts.
func (m *Manifest) ChunkOffset(i int) int64 { return int64(i) * int64(m.ChunkSize) }

// ChunkLen returns the length of chunk i; only the last chunk may be short.
func (m *Manifest) ChunkLen(i int) int {
	start := m.ChunkOffset(i)
	end := start + int64(m.ChunkSize)
	if end > m.Size {
		end = m.Size
	}
	if end < start {
		return 0
	}
	return int(end - start)
}

// Verify reports whether data is exactly chunk i of m, hashing it with
// m.Alg. It returns an error wrapping ErrCorrupt when the length or the
// hash differs, and ErrBadRequest for an index out of range or an unknown
// m.Alg.
func (m *Manifest) Verify(i int, data []byte) error {
	if i < 0 || i >= len(m.Hashes) {
		return fmt.Errorf("chunk %d of %d: %w", i, len(m.Hashes), ErrBadRequest)
	}
	if !m.Alg.Valid() {
		return fmt.Errorf("chunk %d: hash algorithm %v: %w", i, m.Alg, ErrBadRequest)
	}
	if len(data) != m.ChunkLen(i) {
		return fmt.Errorf("chunk %d: length %d, want %d: %w", i, len(data), m.ChunkLen(i), ErrCorrupt)
	}
	if m.Sum(data) != m.Hashes[i] {
		return fmt.Errorf("chunk %d: hash mismatch: %w", i, ErrCorrupt)
	}
	return nil
}

// ComputeVersion returns the content version of a file of the given size and
// chunk size whose chunks have the given hashes under alg: SHA-256 over a
// header and the hashes. The header is size (8 bytes, big endian) and
// chunkSize (4 bytes), followed, for any alg but SHA256, by alg (1 byte).
// So SHA-256 manifests keep the versions they always had, and manifests of
// different algorithms never share a version (short of a SHA-256
// collision): a SHA-256 manifest's input is 12+32n bytes long, any
// other's 13+32m bytes, and two other algorithms differ in the alg byte.
// The version is SHA-256 whatever alg is: it hashes 32 bytes per chunk,
// which costs nothing next to the chunks themselves.
func ComputeVersion(alg HashAlg, size int64, chunkSize uint32, hashes []Hash) Hash {
	h := sha256.New()
	hdr := make([]byte, 12, 13)
	for i := 0; i < 8; i++ {
		hdr[i] = byte(uint64(size) >> (56 - 8*i))
	}
	for i := 0; i < 4; i++ {
		hdr[8+i] = byte(chunkSize >> (24 - 8*i))
	}
	if alg != SHA256 {
		hdr = append(hdr, byte(alg))
	}
	h.Write(hdr)
	for i := range hashes {
		h.Write(hashes[i][:])
	}
	var v Hash
	h.Sum(v[:0])
	return v
}

// Errors of the file protocol. A reply carries one of them as a status code,
// so the client side returns errors that match these with errors.Is.
var (
	// ErrNotFound: the path does not exist on the server.
	ErrNotFound = errors.New("no such file or directory")
	// ErrNotDir: a directory was expected.
	ErrNotDir = errors.New("not a directory")
	// ErrIsDir: a regular file was expected.
	ErrIsDir = errors.New("is a directory")
	// ErrOutsideRoot: the path leaves the exported root (.., absolute path,
	// NUL byte, or a symlink whose target is outside the root).
	ErrOutsideRoot = errors.New("path outside the exported root")
	// ErrPermission: the server may not read the path.
	ErrPermission = errors.New("permission denied")
	// ErrStale: the file changed on the server since the manifest was taken.
	ErrStale = errors.New("file changed on the server")
	// ErrCorrupt: data does not match its manifest hash.
	ErrCorrupt = errors.New("chunk hash mismatch")
	// ErrBadRequest: the request is malformed or out of range.
	ErrBadRequest = errors.New("malformed request")
	// ErrTooLarge: a message exceeds its size bound.
	ErrTooLarge = errors.New("message too large")
	// ErrUnavailable: the server could not be reached in time.
	ErrUnavailable = errors.New("server unavailable")
	// ErrInternal: the server failed for a reason of its own.
	ErrInternal = errors.New("server error")
)
