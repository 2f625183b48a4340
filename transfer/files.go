package transfer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// FILES asks the primary, in one round trip, for what opening and reading
// several files of one directory needs: each file's manifest and its first
// chunk (the whole content of a file of one chunk at most). A client asks
// for the file it is opening first, and for the files it expects to be
// opened next (the next ones of a directory being copied) after it. The
// server answers the first name as MANIFEST would, whatever the file's
// size, and adds its first chunk if it fits in MaxBytes; it answers each
// further name only for a regular file of one chunk at most, with its
// content, while the manifests and content so far fit in MaxBytes, and
// skips the others (larger files, names that are gone or are not regular
// files, files past the budget), which the client then opens the usual
// way. A skipped name is not an error: the reply fails as a whole only
// when the directory cannot be read.

// Bounds of FILES requests.
const (
	// MaxFilesNames is the most names one FILES request may carry.
	MaxFilesNames = 1024
	// MaxFilesBytes is the largest MaxBytes of a FILES request.
	MaxFilesBytes = 16 << 20
	// maxFilesNamesLen bounds the bytes of all names of a request.
	maxFilesNamesLen = 64 << 10
)

// maxFilesBodyLen bounds a FILES reply after its status byte: a kind byte
// and a manifest length per name, the first name's manifest (which may
// exceed MaxBytes), and MaxBytes of further manifests and chunks.
const maxFilesBodyLen = MaxFilesNames*(1+binary.MaxVarintLen64) + MaxManifestLen + MaxFilesBytes

// The kind byte of each file of a FILES reply.
const (
	filesSkipped  = 0 // nothing follows
	filesManifest = 1 // uvarint len, the manifest's encoding
	filesContent  = 2 // as filesManifest, then the first chunk's bytes
)

// FileData is what a FILES reply says of one name.
type FileData struct {
	// Manifest is the file's current manifest; nil when the server
	// skipped the name.
	Manifest *Manifest
	// First is chunk 0 of the file (the whole file when it has one chunk
	// at most; empty, not nil, for an empty file), nil when the reply
	// does not carry it. Client.Files returns only chunks it verified
	// against Manifest, each in a buffer of its own.
	First []byte
}

// FilesCost is what a file with manifest m counts against a FILES
// request's MaxBytes: its encoded manifest, plus its first chunk when
// withFirst is set.
func FilesCost(m *Manifest, withFirst bool) int {
	n := manifestHeaderMax + len(m.Hashes)*len(Hash{})
	if withFirst && m.NumChunks() > 0 {
		n += m.ChunkLen(0)
	}
	return n
}

func checkFilesRequest(names []string, known []Hash, maxBytes int) error {
	if len(names) < 1 || len(names) > MaxFilesNames {
		return fmt.Errorf("FILES of %d names: %w", len(names), ErrBadRequest)
	}
	if known != nil && len(known) != len(names) {
		return fmt.Errorf("FILES of %d names with %d known versions: %w", len(names), len(known), ErrBadRequest)
	}
	if known != nil && !slices.ContainsFunc(known, func(h Hash) bool { return h != Hash{} }) {
		return fmt.Errorf("FILES with known versions all zero: %w", ErrBadRequest)
	}
	total := 0
	for _, n := range names {
		if !ValidName(n) {
			return fmt.Errorf("FILES name %q: %w", n, ErrBadRequest)
		}
		total += len(n)
	}
	if total > maxFilesNamesLen {
		return fmt.Errorf("FILES names of %d bytes: %w", total, ErrTooLarge)
	}
	if maxBytes < 1 || maxBytes > MaxFilesBytes {
		return fmt.Errorf("FILES budget of %d bytes: %w", maxBytes, ErrBadRequest)
	}
	return nil
}

func appendFilesRequest(b []byte, names []string, known []Hash, maxBytes int) []byte {
	b = binary.AppendUvarint(b, uint64(maxBytes))
	b = binary.AppendUvarint(b, uint64(len(names)))
	for i, n := range names {
		b = appendString(b, n)
		if known == nil || known[i] == (Hash{}) {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = append(b, known[i][:]...)
	}
	return b
}

// decodeFilesRequest reads the FILES fields; check validates them.
func decodeFilesRequest(d *decoder) (names []string, known []Hash, maxBytes int) {
	mb := d.uvarint("FILES budget")
	n := d.uvarint("FILES name count")
	if d.err != nil {
		return nil, nil, 0
	}
	if mb > MaxFilesBytes || n < 1 || n > MaxFilesNames {
		d.fail(fmt.Errorf("FILES of %d names, budget %d: %w", n, mb, ErrBadRequest))
		return nil, nil, 0
	}
	names = make([]string, 0, n)
	some := false
	all := make([]Hash, n)
	for i := range n {
		names = append(names, d.str("FILES name", MaxNameLen))
		switch d.byte1("FILES known flag") {
		case 0:
		case 1:
			all[i] = d.hash("FILES known version")
			some = some || all[i] != Hash{}
			if d.err == nil && all[i] == (Hash{}) {
				d.fail(fmt.Errorf("FILES known version zero: %w", ErrBadRequest))
			}
		default:
			d.fail(fmt.Errorf("FILES known flag: %w", ErrBadRequest))
		}
	}
	if some {
		known = all
	}
	return names, known, int(mb)
}

// appendFiles encodes the body of a FILES reply: for each file, its kind
// byte, then for a file with a manifest its encoding's length and the
// encoding, then for a file with content its first chunk.
func appendFiles(b []byte, files []FileData) ([]byte, error) {
	if len(files) > MaxFilesNames {
		return nil, fmt.Errorf("FILES reply of %d files: %w", len(files), ErrTooLarge)
	}
	for i, f := range files {
		if f.Manifest == nil {
			b = append(b, filesSkipped)
			continue
		}
		enc, err := f.Manifest.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("FILES file %d: %w", i, err)
		}
		kind := byte(filesManifest)
		if f.First != nil {
			if want := firstLen(f.Manifest); len(f.First) != want {
				return nil, fmt.Errorf("FILES file %d: first chunk of %d bytes, want %d: %w", i, len(f.First), want, ErrBadRequest)
			}
			kind = filesContent
		}
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(enc)))
		b = append(b, enc...)
		if kind == filesContent {
			b = append(b, f.First...)
		}
	}
	return b, nil
}

// firstLen is the length of chunk 0 of m, 0 for an empty file.
func firstLen(m *Manifest) int {
	if m.NumChunks() == 0 {
		return 0
	}
	return m.ChunkLen(0)
}

// decodeFiles decodes the body of a FILES reply. The chunks it returns
// share b's memory and are not verified.
func decodeFiles(b []byte) ([]FileData, error) {
	d := decoder{b: b}
	var files []FileData
	for len(d.b) > 0 && d.err == nil {
		if len(files) == MaxFilesNames {
			return nil, fmt.Errorf("FILES reply of more than %d files: %w", MaxFilesNames, ErrTooLarge)
		}
		kind := d.byte1("FILES kind")
		if kind == filesSkipped {
			files = append(files, FileData{})
			continue
		}
		if d.err == nil && kind != filesManifest && kind != filesContent {
			return nil, fmt.Errorf("FILES kind %d: %w", kind, ErrBadRequest)
		}
		n := d.uvarint("FILES manifest length")
		if d.err == nil && n > uint64(min(MaxManifestLen, len(d.b))) {
			return nil, fmt.Errorf("FILES manifest of %d bytes: %w", n, ErrBadRequest)
		}
		enc := d.bytes("FILES manifest", int(n))
		if d.err != nil {
			break
		}
		m := new(Manifest)
		if err := m.UnmarshalBinary(enc); err != nil {
			return nil, fmt.Errorf("FILES file %d: %w", len(files), err)
		}
		f := FileData{Manifest: m}
		if kind == filesContent {
			f.First = d.bytes("FILES first chunk", firstLen(m))
			if f.First == nil {
				f.First = []byte{}
			}
		}
		files = append(files, f)
	}
	if d.err != nil {
		return nil, d.err
	}
	return files, nil
}

// Files asks for the manifests of files names of directory dir and their
// first chunks (see FILES above), within maxBytes (at most MaxFilesBytes)
// beyond the first name's manifest. known is nil or, for each name, the
// version whose content the caller holds (the zero Hash: none): the
// reply carries no content of a file still at that version. The result has one FileData per name,
// in order; a name the server skipped has a nil Manifest. Every chunk
// returned was verified against its manifest and sits in a buffer of its
// own; one that fails verification is dropped (First nil) and counted as
// corrupt. A server that predates FILES fails it with an error wrapping
// ErrBadRequest.
func (c *Client) Files(ctx context.Context, dir string, names []string, known []Hash, maxBytes int) ([]FileData, error) {
	if known != nil && !slices.ContainsFunc(known, func(h Hash) bool { return h != Hash{} }) {
		known = nil
	}
	r, err := c.roundTrip(ctx, Request{Op: OpFiles, Path: dir, Names: names, Known: known, MaxBytes: maxBytes})
	if err != nil {
		return nil, err
	}
	if len(r.Files) != len(names) {
		return nil, fmt.Errorf("FILES %q: %d files in the reply to %d names: %w", dir, len(r.Files), len(names), ErrBadRequest)
	}
	for i := range r.Files {
		f := &r.Files[i]
		if f.First == nil || f.Manifest.NumChunks() == 0 {
			continue
		}
		if err := f.Manifest.Verify(0, f.First); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return nil, fmt.Errorf("FILES %q, %q: %w", dir, names[i], err)
			}
			c.corrupt.Add(1)
			f.First = nil
			continue
		}
		f.First = append(make([]byte, 0, len(f.First)), f.First...)
		c.chunks.Add(1)
		c.dataBytes.Add(int64(len(f.First)))
	}
	return r.Files, nil
}
