package transfer

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Bounds that every encoder respects and every decoder enforces before it
// allocates. A length beyond a bound is reported as ErrTooLarge; any other
// malformation as ErrBadRequest.
const (
	// MaxPathLen is the longest request path in bytes.
	MaxPathLen = 4096
	// MaxNameLen is the longest entry name in bytes.
	MaxNameLen = 4096
	// MaxTargetLen is the longest symlink target in bytes.
	MaxTargetLen = 4096
	// MaxEntries is the largest number of entries in one attribute list
	// (one LIST reply).
	MaxEntries = 1 << 20
	// MaxChunks is the largest number of chunks in one manifest; with the
	// default chunk size it allows files up to 1 TiB.
	MaxChunks = 1 << 20
	// MinChunkSize and MaxChunkSize bound Manifest.ChunkSize.
	MinChunkSize = 4 << 10
	MaxChunkSize = 16 << 20
	// DefaultChunkSize is the chunk size servers use unless configured.
	DefaultChunkSize = 1 << 20
	// MaxErrorLen is the longest error message a reply carries; longer
	// messages are truncated by the encoder.
	MaxErrorLen = 1024
)

// The first byte of an encoded Manifest: manifestFormat for a SHA-256
// manifest (the only format before manifests named their algorithm, so
// such manifests encode as they always did), manifestFormatAlg for any
// other, with the algorithm in the next byte.
const (
	manifestFormat    = 1
	manifestFormatAlg = 2
)

// manifestHeaderMax bounds the fixed part of an encoded Manifest.
const manifestHeaderMax = 2 + 4*binary.MaxVarintLen64 + len(Hash{}) + binary.MaxVarintLen64

// MaxManifestLen is the largest encoded (uncompressed) Manifest.
const MaxManifestLen = manifestHeaderMax + MaxChunks*len(Hash{})

// minAttrLen is the smallest encoded Attr: five one-byte varints.
const minAttrLen = 5

// maxAttrLen is the largest encoded Attr.
const maxAttrLen = 5*binary.MaxVarintLen64 + MaxNameLen + MaxTargetLen

// decoder reads a byte slice; the first error sticks and later reads return
// zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(fmt.Errorf("%s: bad or truncated varint: %w", what, ErrBadRequest))
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		// Padded with a zero group: every value has one encoding, so
		// that a decoded message re-encodes to the same bytes.
		d.fail(fmt.Errorf("%s: non-minimal varint: %w", what, ErrBadRequest))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(fmt.Errorf("%s: bad or truncated varint: %w", what, ErrBadRequest))
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		// Padded with a zero group: every value has one encoding, so
		// that a decoded message re-encodes to the same bytes.
		d.fail(fmt.Errorf("%s: non-minimal varint: %w", what, ErrBadRequest))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(fmt.Errorf("%s: truncated: %w", what, ErrBadRequest))
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns the next n bytes without copying.
func (d *decoder) bytes(what string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(fmt.Errorf("%s: truncated: %w", what, ErrBadRequest))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// str reads a uvarint length (at most max) and that many bytes.
func (d *decoder) str(what string, max int) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(max) {
		d.fail(fmt.Errorf("%s: length %d exceeds %d: %w", what, n, max, ErrTooLarge))
		return ""
	}
	return string(d.bytes(what, int(n)))
}

func (d *decoder) hash(what string) (h Hash) {
	copy(h[:], d.bytes(what, len(h)))
	return h
}

// end fails unless every byte was consumed.
func (d *decoder) end(what string) {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%s: %d trailing bytes: %w", what, len(d.b), ErrBadRequest))
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ValidName reports whether name may be a directory entry name: not empty,
// not "." or "..", at most MaxNameLen bytes, no '/' and no NUL.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= MaxNameLen &&
		!strings.ContainsAny(name, "/\x00")
}

// CheckPath validates a request path: relative to the root, '/'-separated,
// "" for the root itself, every element a ValidName. It returns an error
// wrapping ErrOutsideRoot for an absolute path, a ".." element or a NUL
// byte; ErrTooLarge beyond MaxPathLen; ErrBadRequest for any other
// non-canonical form (empty or "." elements, a trailing '/').
func CheckPath(p string) error {
	if len(p) > MaxPathLen {
		return fmt.Errorf("path of %d bytes: %w", len(p), ErrTooLarge)
	}
	if p == "" {
		return nil
	}
	if strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("path %q: %w", p, ErrOutsideRoot)
	}
	for elem := range strings.SplitSeq(p, "/") {
		if elem == ".." {
			return fmt.Errorf("path %q: %w", p, ErrOutsideRoot)
		}
	}
	for elem := range strings.SplitSeq(p, "/") {
		if !ValidName(elem) {
			return fmt.Errorf("path %q: element %q: %w", p, elem, ErrBadRequest)
		}
	}
	return nil
}

// checkAttr validates the fields of a decoded or to-be-encoded Attr.
func checkAttr(a *Attr) error {
	if len(a.Name) > MaxNameLen {
		return fmt.Errorf("attr name of %d bytes: %w", len(a.Name), ErrTooLarge)
	}
	if len(a.Target) > MaxTargetLen {
		return fmt.Errorf("attr target of %d bytes: %w", len(a.Target), ErrTooLarge)
	}
	if a.Name != "" && !ValidName(a.Name) {
		return fmt.Errorf("attr name %q: %w", a.Name, ErrBadRequest)
	}
	switch a.Mode & ModeTypeMask {
	case ModeDir, ModeRegular:
		if a.Target != "" {
			return fmt.Errorf("attr %q: target on a non-symlink: %w", a.Name, ErrBadRequest)
		}
	case ModeSymlink:
		if strings.IndexByte(a.Target, 0) >= 0 {
			return fmt.Errorf("attr %q: NUL in target: %w", a.Name, ErrBadRequest)
		}
	default:
		return fmt.Errorf("attr %q: mode %o: unsupported type: %w", a.Name, a.Mode, ErrBadRequest)
	}
	if a.Mode&^(ModeTypeMask|ModePermMask) != 0 {
		return fmt.Errorf("attr %q: mode %o: unknown bits: %w", a.Name, a.Mode, ErrBadRequest)
	}
	if a.Size < 0 {
		return fmt.Errorf("attr %q: size %d: %w", a.Name, a.Size, ErrBadRequest)
	}
	return nil
}

// appendAttr appends the encoding of a:
//
//	uvarint len(Name), Name, uvarint Mode, varint Size, varint MtimeNs,
//	uvarint len(Target), Target
func appendAttr(b []byte, a *Attr) []byte {
	b = appendString(b, a.Name)
	b = binary.AppendUvarint(b, uint64(a.Mode))
	b = binary.AppendVarint(b, a.Size)
	b = binary.AppendVarint(b, a.MtimeNs)
	return appendString(b, a.Target)
}

func (d *decoder) attr() Attr {
	var a Attr
	a.Name = d.str("attr name", MaxNameLen)
	mode := d.uvarint("attr mode")
	a.Size = d.varint("attr size")
	a.MtimeNs = d.varint("attr mtime")
	a.Target = d.str("attr target", MaxTargetLen)
	if d.err != nil {
		return Attr{}
	}
	if mode > uint64(^uint32(0)) {
		d.fail(fmt.Errorf("attr mode %o: %w", mode, ErrBadRequest))
		return Attr{}
	}
	a.Mode = uint32(mode)
	if err := checkAttr(&a); err != nil {
		d.fail(err)
		return Attr{}
	}
	return a
}

// EncodeAttrs returns the encoding of attrs: a uvarint count followed by
// each Attr (see DecodeAttrs). Attrs are encoded as given; an Attr that
// DecodeAttrs would refuse makes the result undecodable, so callers encode
// only Attrs produced by this package's servers or decoders.
func EncodeAttrs(attrs []Attr) []byte {
	n := binary.MaxVarintLen64
	for i := range attrs {
		n += 5*binary.MaxVarintLen64 + len(attrs[i].Name) + len(attrs[i].Target)
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(attrs)))
	for i := range attrs {
		b = appendAttr(b, &attrs[i])
	}
	return b
}

// DecodeAttrs decodes the output of EncodeAttrs. It refuses (with an error
// wrapping ErrTooLarge) more than MaxEntries entries, names longer than
// MaxNameLen and targets longer than MaxTargetLen, and (with ErrBadRequest)
// truncated input, trailing bytes, names that are neither empty nor a
// ValidName, unsupported file types, unknown mode bits, negative sizes and
// targets on non-symlinks. It never allocates more than a small multiple of
// len(b).
func DecodeAttrs(b []byte) ([]Attr, error) {
	d := decoder{b: b}
	n := d.uvarint("attr count")
	if d.err != nil {
		return nil, d.err
	}
	if n > MaxEntries {
		return nil, fmt.Errorf("%d entries exceed %d: %w", n, MaxEntries, ErrTooLarge)
	}
	if n > uint64(len(d.b)/minAttrLen) {
		return nil, fmt.Errorf("%d entries in %d bytes: truncated: %w", n, len(d.b), ErrBadRequest)
	}
	attrs := make([]Attr, n)
	for i := range attrs {
		attrs[i] = d.attr()
		if d.err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, d.err)
		}
	}
	d.end("attrs")
	if d.err != nil {
		return nil, d.err
	}
	return attrs, nil
}

// EncodeAttr returns the encoding of a single Attr (a STAT reply body).
func EncodeAttr(a Attr) []byte {
	return appendAttr(make([]byte, 0, 5*binary.MaxVarintLen64+len(a.Name)+len(a.Target)), &a)
}

// DecodeAttr decodes the output of EncodeAttr with the checks of DecodeAttrs.
func DecodeAttr(b []byte) (Attr, error) {
	d := decoder{b: b}
	a := d.attr()
	d.end("attr")
	if d.err != nil {
		return Attr{}, d.err
	}
	return a, nil
}

// Check validates m: a known Alg, ChunkSize within [MinChunkSize,
// MaxChunkSize], Size not negative and at most MaxChunks chunks,
// len(Hashes) == NumChunks(), a regular-file Mode with no unknown bits
// (errors wrap ErrBadRequest or ErrTooLarge), and Version ==
// ComputeVersion(Alg, Size, ChunkSize, Hashes) (an error wrapping both
// ErrCorrupt and ErrBadRequest otherwise).
func (m *Manifest) Check() error {
	if err := m.checkShape(); err != nil {
		return err
	}
	if len(m.Hashes) != m.NumChunks() {
		return fmt.Errorf("manifest: %d hashes for %d chunks: %w", len(m.Hashes), m.NumChunks(), ErrBadRequest)
	}
	if ComputeVersion(m.Alg, m.Size, m.ChunkSize, m.Hashes) != m.Version {
		return fmt.Errorf("manifest: version does not match its hashes: %w (%w)", ErrCorrupt, ErrBadRequest)
	}
	return nil
}

// checkShape checks everything but the hashes.
func (m *Manifest) checkShape() error {
	if !m.Alg.Valid() {
		return fmt.Errorf("manifest: hash algorithm %v: %w", m.Alg, ErrBadRequest)
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		return fmt.Errorf("manifest: chunk size %d outside [%d, %d]: %w", m.ChunkSize, MinChunkSize, MaxChunkSize, ErrBadRequest)
	}
	if m.Size < 0 {
		return fmt.Errorf("manifest: size %d: %w", m.Size, ErrBadRequest)
	}
	if m.Size > int64(MaxChunks)*int64(m.ChunkSize) {
		return fmt.Errorf("manifest: size %d needs more than %d chunks: %w", m.Size, MaxChunks, ErrTooLarge)
	}
	if m.Mode&ModeTypeMask != ModeRegular || m.Mode&^(ModeTypeMask|ModePermMask) != 0 {
		return fmt.Errorf("manifest: mode %o: %w", m.Mode, ErrBadRequest)
	}
	return nil
}

// MarshalBinary encodes m:
//
//	format, [alg,] uvarint Size, varint MtimeNs, uvarint Mode,
//	uvarint ChunkSize, 32 bytes Version, uvarint len(Hashes), the hashes
//
// where a SHA256 manifest starts with the byte 1 and no alg byte (as every
// manifest did before they named their algorithm), and a manifest of any
// other algorithm with the bytes 2 and Alg. Each manifest has exactly one
// encoding. It fails (see Check) when m is inconsistent, so that only
// decodable manifests are ever sent.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, manifestHeaderMax+len(m.Hashes)*len(Hash{}))
	if m.Alg == SHA256 {
		b = append(b, manifestFormat)
	} else {
		b = append(b, manifestFormatAlg, byte(m.Alg))
	}
	b = binary.AppendUvarint(b, uint64(m.Size))
	b = binary.AppendVarint(b, m.MtimeNs)
	b = binary.AppendUvarint(b, uint64(m.Mode))
	b = binary.AppendUvarint(b, uint64(m.ChunkSize))
	b = append(b, m.Version[:]...)
	b = binary.AppendUvarint(b, uint64(len(m.Hashes)))
	for i := range m.Hashes {
		b = append(b, m.Hashes[i][:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes the output of MarshalBinary into m and runs
// Check on the result. An unknown format or algorithm, and format 2 naming
// SHA256 (whose encoding is format 1), are refused. The hash count must
// equal NumChunks() (so at most MaxChunks) and is checked against the
// remaining input before the hashes are allocated. Errors wrap
// ErrBadRequest, ErrTooLarge or ErrCorrupt; on error m is left unchanged.
func (m *Manifest) UnmarshalBinary(b []byte) error {
	if len(b) > MaxManifestLen {
		return fmt.Errorf("manifest of %d bytes: %w", len(b), ErrTooLarge)
	}
	d := decoder{b: b}
	alg := SHA256
	switch f := d.byte1("manifest format"); {
	case d.err != nil:
		return d.err
	case f == manifestFormatAlg:
		alg = HashAlg(d.byte1("manifest hash algorithm"))
		if d.err == nil && (alg == SHA256 || !alg.Valid()) {
			return fmt.Errorf("manifest hash algorithm %v in format %d: %w", alg, f, ErrBadRequest)
		}
	case f != manifestFormat:
		return fmt.Errorf("manifest format %d: %w", f, ErrBadRequest)
	}
	size := d.uvarint("manifest size")
	mtime := d.varint("manifest mtime")
	mode := d.uvarint("manifest mode")
	chunkSize := d.uvarint("manifest chunk size")
	version := d.hash("manifest version")
	n := d.uvarint("manifest hash count")
	if d.err != nil {
		return d.err
	}
	if size > 1<<62 || mode > uint64(^uint32(0)) || chunkSize > uint64(^uint32(0)) {
		return fmt.Errorf("manifest: size %d, mode %o, chunk size %d: %w", size, mode, chunkSize, ErrBadRequest)
	}
	nm := Manifest{Size: int64(size), MtimeNs: mtime, Mode: uint32(mode), ChunkSize: uint32(chunkSize), Alg: alg, Version: version}
	if err := nm.checkShape(); err != nil {
		return err
	}
	if n != uint64(nm.NumChunks()) {
		return fmt.Errorf("manifest: %d hashes for %d chunks: %w", n, nm.NumChunks(), ErrBadRequest)
	}
	if n*uint64(len(Hash{})) != uint64(len(d.b)) {
		return fmt.Errorf("manifest: %d hashes in %d bytes: %w", n, len(d.b), ErrBadRequest)
	}
	nm.Hashes = make([]Hash, n)
	for i := range nm.Hashes {
		nm.Hashes[i] = d.hash("manifest hash")
	}
	d.end("manifest")
	if d.err != nil {
		return d.err
	}
	if err := nm.Check(); err != nil {
		return err
	}
	*m = nm
	return nil
}
