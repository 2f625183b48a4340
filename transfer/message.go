package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Op is a request type: the first byte of a request message.
type Op uint8

// Request types. 6 is SEND_CHUNK (a primary delegating a chunk range to a
// secondary), 7 REPORT_CORRUPT (report.go) and 8 PATH_REPORT
// (pathreport.go), which have encodings of their own; 10 to 15 are
// reserved for later protocol versions. DecodeRequest refuses every value
// but these with ErrBadRequest.
const (
	OpStat     Op = 1
	OpList     Op = 2
	OpReadlink Op = 3
	OpManifest Op = 4
	OpRead     Op = 5
	// OpFiles asks for the manifests, and the first chunks, of several
	// files of one directory (see files.go).
	OpFiles Op = 9

	// NumOps bounds the Op values in use: every Op is below NumOps.
	NumOps = 10
)

// String returns the protocol name of o ("STAT", "LIST", ...).
func (o Op) String() string {
	switch o {
	case OpStat:
		return "STAT"
	case OpList:
		return "LIST"
	case OpReadlink:
		return "READLINK"
	case OpManifest:
		return "MANIFEST"
	case OpRead:
		return "READ"
	case OpFiles:
		return "FILES"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Valid reports whether o is a request type of this protocol version.
func (o Op) Valid() bool { return o >= OpStat && o <= OpRead || o == OpFiles }

// Request is one request message. Version, First, Count and Background
// are used by OpRead only, Names and MaxBytes by OpFiles only; they must
// be zero otherwise.
type Request struct {
	Op Op
	// Path is the file or directory the request is about (the directory
	// of Names, for FILES).
	Path string
	// Version is the Manifest.Version the client holds (READ).
	Version Hash
	// First is the index of the first chunk and Count the number of chunks
	// (READ): 0 <= First, 1 <= Count, First+Count <= MaxChunks.
	First, Count int
	// Background marks a READ made for background work (prefetch): the
	// server sends nothing of it while it serves a foreground READ (a
	// process waiting in read(2)) on the same session.
	Background bool
	// Names are the files of directory Path a FILES request asks about,
	// 1 to MaxFilesNames valid names of at most maxFilesNamesLen bytes in
	// all; MaxBytes (1 to MaxFilesBytes) bounds the manifests and chunks
	// of the reply (see EncodeReply).
	Names    []string
	MaxBytes int
	// Known is nil, or holds for each of Names the Manifest.Version whose
	// content the client holds already (the zero Hash: none); the server
	// sends no content of a file still at that version.
	Known []Hash
}

// readFlagBackground is the READ flags bit of Request.Background.
const readFlagBackground = 1

// MaxRequestLen is the largest encoded Request: a FILES request's. Every
// other request is at most maxOtherRequestLen bytes (see RequestLimit).
const MaxRequestLen = 1 + binary.MaxVarintLen64 + MaxPathLen + 2*binary.MaxVarintLen64 + MaxFilesNames*(binary.MaxVarintLen16+1+len(Hash{})) + maxFilesNamesLen

// maxOtherRequestLen bounds every request but FILES (a READ is the
// largest).
const maxOtherRequestLen = 1 + binary.MaxVarintLen64 + MaxPathLen + len(Hash{}) + 2*binary.MaxVarintLen64 + 1

// RequestLimit is the most bytes a request whose first byte is first may
// have: MaxRequestLen for FILES, less for any other, so that a server
// reads no more of a request than its type can need.
func RequestLimit(first byte) int {
	if Op(first) == OpFiles {
		return MaxRequestLen
	}
	return maxOtherRequestLen
}

func (r *Request) check() error {
	if !r.Op.Valid() {
		return fmt.Errorf("request type %d: %w", uint8(r.Op), ErrBadRequest)
	}
	if err := CheckPath(r.Path); err != nil {
		return fmt.Errorf("%v: %w", r.Op, err)
	}
	if r.Op == OpRead {
		if r.First < 0 || r.Count < 1 || r.First > MaxChunks || r.Count > MaxChunks-r.First {
			return fmt.Errorf("READ chunks [%d, +%d): %w", r.First, r.Count, ErrBadRequest)
		}
	} else if r.First != 0 || r.Count != 0 || r.Version != (Hash{}) || r.Background {
		return fmt.Errorf("%v with READ fields: %w", r.Op, ErrBadRequest)
	}
	if r.Op == OpFiles {
		return checkFilesRequest(r.Names, r.Known, r.MaxBytes)
	}
	if r.Names != nil || r.MaxBytes != 0 || r.Known != nil {
		return fmt.Errorf("%v with FILES fields: %w", r.Op, ErrBadRequest)
	}
	return nil
}

// MarshalBinary encodes r:
//
//	byte Op, uvarint len(Path), Path
//	READ only: 32 bytes Version, uvarint First, uvarint Count,
//	  then for a background READ only: byte flags (1 = background)
//	FILES only: uvarint MaxBytes, uvarint len(Names), then each name as
//	  uvarint length and bytes, followed by 0, or by 1 and 32 bytes Known
//	  (Known nil encodes as all zero, and decodes as nil)
//
// A foreground READ has no flags byte, so that every request has one
// encoding. It refuses requests that DecodeRequest would refuse.
func (r *Request) MarshalBinary() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(r.Path)+len(Hash{})+2*binary.MaxVarintLen64+1)
	b = append(b, byte(r.Op))
	b = appendString(b, r.Path)
	if r.Op == OpRead {
		b = append(b, r.Version[:]...)
		b = binary.AppendUvarint(b, uint64(r.First))
		b = binary.AppendUvarint(b, uint64(r.Count))
		if r.Background {
			b = append(b, readFlagBackground)
		}
	}
	if r.Op == OpFiles {
		b = appendFilesRequest(b, r.Names, r.Known, r.MaxBytes)
	}
	return b, nil
}

// DecodeRequest decodes a request message. Errors wrap ErrTooLarge (beyond
// MaxRequestLen or MaxPathLen), ErrOutsideRoot (see CheckPath) or
// ErrBadRequest (anything else). When the first byte names a known Op, the
// returned Request has Op set even on error, so that servers can count it.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) > MaxRequestLen || len(b) > 0 && len(b) > RequestLimit(b[0]) {
		return Request{}, fmt.Errorf("request of %d bytes: %w", len(b), ErrTooLarge)
	}
	d := decoder{b: b}
	op := Op(d.byte1("request type"))
	if d.err != nil {
		return Request{}, d.err
	}
	if !op.Valid() {
		return Request{}, fmt.Errorf("request type %d: %w", uint8(op), ErrBadRequest)
	}
	r := Request{Op: op}
	r.Path = d.str("request path", MaxPathLen)
	if op == OpRead {
		r.Version = d.hash("READ version")
		first := d.uvarint("READ first")
		count := d.uvarint("READ count")
		if d.err == nil && (first > MaxChunks || count > MaxChunks) {
			return Request{Op: op}, fmt.Errorf("READ chunks [%d, +%d): %w", first, count, ErrBadRequest)
		}
		r.First, r.Count = int(first), int(count)
		if d.err == nil && len(d.b) > 0 {
			// Flags: present only when not zero, with known bits only.
			if flags := d.byte1("READ flags"); flags != readFlagBackground {
				return Request{Op: op}, fmt.Errorf("READ flags %#x: %w", flags, ErrBadRequest)
			}
			r.Background = true
		}
	}
	if op == OpFiles {
		r.Names, r.Known, r.MaxBytes = decodeFilesRequest(&d)
	}
	d.end("request")
	if d.err != nil {
		return Request{Op: op}, d.err
	}
	if err := r.check(); err != nil {
		return Request{Op: op}, err
	}
	return r, nil
}

// Status is the first byte of every reply: StatusOK or an error code.
type Status uint8

// Reply status codes. A code this version does not know decodes as
// ErrInternal.
const (
	StatusOK          Status = 0
	StatusNotFound    Status = 1
	StatusNotDir      Status = 2
	StatusIsDir       Status = 3
	StatusOutsideRoot Status = 4
	StatusPermission  Status = 5
	StatusStale       Status = 6
	StatusBadRequest  Status = 7
	StatusTooLarge    Status = 8
	StatusInternal    Status = 9
	StatusCorrupt     Status = 10
	StatusUnavailable Status = 11

	// NumStatus bounds the Status values in use: StatusOf returns a
	// Status below NumStatus.
	NumStatus = 12
)

// statusErrs maps status codes to sentinel errors, in the order StatusOf
// tries them.
var statusErrs = []struct {
	s   Status
	err error
}{
	{StatusOutsideRoot, ErrOutsideRoot},
	{StatusNotFound, ErrNotFound},
	{StatusNotDir, ErrNotDir},
	{StatusIsDir, ErrIsDir},
	{StatusPermission, ErrPermission},
	{StatusStale, ErrStale},
	{StatusTooLarge, ErrTooLarge},
	{StatusBadRequest, ErrBadRequest},
	{StatusCorrupt, ErrCorrupt},
	{StatusUnavailable, ErrUnavailable},
	{StatusInternal, ErrInternal},
}

// StatusOf returns the status code for err: StatusOK for nil, the code of
// the first sentinel error err matches, StatusInternal otherwise.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	for _, se := range statusErrs {
		if errors.Is(err, se.err) {
			return se.s
		}
	}
	return StatusInternal
}

// Err returns the sentinel error of s: nil for StatusOK, ErrInternal for an
// unknown code.
func (s Status) Err() error {
	if s == StatusOK {
		return nil
	}
	for _, se := range statusErrs {
		if se.s == s {
			return se.err
		}
	}
	return ErrInternal
}

// RemoteError is an error reply decoded by a client. It matches the
// sentinel error of its status with errors.Is.
type RemoteError struct {
	Status  Status
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "server: " + e.Status.Err().Error()
	}
	return "server: " + e.Message
}

// Unwrap returns the sentinel error of the status.
func (e *RemoteError) Unwrap() error { return e.Status.Err() }

// MaxErrorReplyLen is the largest encoded error reply.
const MaxErrorReplyLen = 1 + binary.MaxVarintLen64 + MaxErrorLen

// EncodeError returns the error reply for err (which must not be nil): its
// status byte, then uvarint length and message, err.Error() cut to
// MaxErrorLen bytes and made valid UTF-8.
func EncodeError(err error) []byte {
	msg := err.Error()
	if len(msg) > MaxErrorLen {
		msg = msg[:MaxErrorLen]
	}
	msg = strings.ToValidUTF8(msg, "?")
	if len(msg) > MaxErrorLen { // replacement characters may have grown it
		msg = strings.ToValidUTF8(msg[:MaxErrorLen-8], "?")
	}
	b := make([]byte, 0, MaxErrorReplyLen)
	b = append(b, byte(StatusOf(err)))
	return appendString(b, msg)
}

// DecodeError decodes an error reply (status byte included). It returns a
// *RemoteError, or an error wrapping ErrBadRequest or ErrTooLarge when b is
// malformed.
func DecodeError(b []byte) error {
	d := decoder{b: b}
	s := Status(d.byte1("reply status"))
	if d.err == nil && s == StatusOK {
		return fmt.Errorf("error reply with status OK: %w", ErrBadRequest)
	}
	msg := d.str("error message", MaxErrorLen)
	d.end("error reply")
	if d.err != nil {
		return d.err
	}
	return &RemoteError{Status: s, Message: msg}
}

// Body encodings of LIST and MANIFEST replies (the byte after the status).
const (
	encodingRaw  = 0
	encodingZstd = 1
)

// compressThreshold is the smallest LIST or MANIFEST body that is
// compressed; smaller bodies, and those that do not shrink, travel raw.
const compressThreshold = 2048

// MaxListLen bounds the uncompressed body of a LIST reply; a server answers
// a larger directory with ErrTooLarge.
const MaxListLen = 64 << 20

// zstdEncoder compresses with EncodeAll, which may be called concurrently
// and keeps its own pool of encoder states.
var zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(2))
	if err != nil {
		panic(fmt.Sprintf("zstd.NewWriter: %v", err)) // only fails on invalid options
	}
	return e
})

// newZstdDecoder returns a decoder for DecodeAll (concurrent-safe, with its
// own pool of decoder states) that refuses output beyond max bytes.
func newZstdDecoder(max int) func() *zstd.Decoder {
	return sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(max)), zstd.WithDecoderConcurrency(2))
		if err != nil {
			panic(fmt.Sprintf("zstd.NewReader: %v", err)) // only fails on invalid options
		}
		return d
	})
}

var (
	listDecoder     = newZstdDecoder(MaxListLen)
	manifestDecoder = newZstdDecoder(MaxManifestLen)
)

// appendCompressible appends the encoding byte and body, compressed when
// that pays.
func appendCompressible(b, body []byte) []byte {
	if len(body) >= compressThreshold {
		z := zstdEncoder().EncodeAll(body, make([]byte, 0, len(body)/2))
		if len(z) < len(body) {
			b = append(b, encodingZstd)
			return append(b, z...)
		}
	}
	b = append(b, encodingRaw)
	return append(b, body...)
}

// decodeCompressible undoes appendCompressible, refusing bodies beyond max.
func decodeCompressible(b []byte, max int, dec func() *zstd.Decoder) ([]byte, error) {
	d := decoder{b: b}
	enc := d.byte1("body encoding")
	if d.err != nil {
		return nil, d.err
	}
	switch enc {
	case encodingRaw:
		if len(d.b) > max {
			return nil, fmt.Errorf("body of %d bytes: %w", len(d.b), ErrTooLarge)
		}
		return d.b, nil
	case encodingZstd:
		if len(d.b) > max {
			return nil, fmt.Errorf("compressed body of %d bytes: %w", len(d.b), ErrTooLarge)
		}
		out, err := dec().DecodeAll(d.b, nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, fmt.Errorf("decompress body: %w", ErrTooLarge)
		}
		if err != nil {
			return nil, fmt.Errorf("decompress body: %v: %w", err, ErrBadRequest)
		}
		if len(out) > max {
			return nil, fmt.Errorf("body of %d bytes: %w", len(out), ErrTooLarge)
		}
		return out, nil
	}
	return nil, fmt.Errorf("body encoding %d: %w", enc, ErrBadRequest)
}

// Reply is a decoded OK reply to a request other than READ. The field of
// the request's Op is set: Attr (STAT), Entries (LIST), Target (READLINK),
// Manifest (MANIFEST), Files (FILES).
type Reply struct {
	Attr     Attr
	Entries  []Attr
	Target   string
	Manifest *Manifest
	Files    []FileData
}

// EncodeReply returns the OK reply to a request of type op (not OpRead):
//
//	STAT:     0x00, EncodeAttr(r.Attr)
//	LIST:     0x00, encoding byte, EncodeAttrs(r.Entries) (zstd when large)
//	READLINK: 0x00, uvarint len(r.Target), r.Target
//	MANIFEST: 0x00, encoding byte, r.Manifest.MarshalBinary() (zstd when large)
//	FILES:    0x00, then each of r.Files (see appendFiles)
//
// The encoding byte is 0 for a raw body and 1 for a zstd frame. It fails
// with ErrTooLarge for a LIST body beyond MaxListLen or more than
// MaxEntries entries, and with the errors of checkAttr or
// Manifest.MarshalBinary for invalid content.
func EncodeReply(op Op, r *Reply) ([]byte, error) {
	b := []byte{byte(StatusOK)}
	switch op {
	case OpStat:
		if err := checkAttr(&r.Attr); err != nil {
			return nil, err
		}
		return append(b, EncodeAttr(r.Attr)...), nil
	case OpList:
		if len(r.Entries) > MaxEntries {
			return nil, fmt.Errorf("LIST of %d entries: %w", len(r.Entries), ErrTooLarge)
		}
		for i := range r.Entries {
			if err := checkAttr(&r.Entries[i]); err != nil {
				return nil, err
			}
			if r.Entries[i].Name == "" {
				return nil, fmt.Errorf("LIST entry %d without a name: %w", i, ErrBadRequest)
			}
		}
		body := EncodeAttrs(r.Entries)
		if len(body) > MaxListLen {
			return nil, fmt.Errorf("LIST body of %d bytes: %w", len(body), ErrTooLarge)
		}
		return appendCompressible(b, body), nil
	case OpReadlink:
		if len(r.Target) > MaxTargetLen || r.Target == "" || strings.IndexByte(r.Target, 0) >= 0 {
			return nil, fmt.Errorf("READLINK target of %d bytes: %w", len(r.Target), ErrBadRequest)
		}
		return appendString(b, r.Target), nil
	case OpManifest:
		if r.Manifest == nil {
			return nil, fmt.Errorf("MANIFEST reply without a manifest: %w", ErrBadRequest)
		}
		body, err := r.Manifest.MarshalBinary()
		if err != nil {
			return nil, err
		}
		return appendCompressible(b, body), nil
	case OpFiles:
		return appendFiles(b, r.Files)
	}
	return nil, fmt.Errorf("no reply encoding for %v: %w", op, ErrBadRequest)
}

// MaxReplyLen returns the largest reply (OK or error) to a request of type
// op other than OpRead; a client reads at most this many bytes.
func MaxReplyLen(op Op) int {
	n := MaxErrorReplyLen
	switch op {
	case OpStat:
		n = max(n, 1+maxAttrLen)
	case OpList:
		n = max(n, 2+MaxListLen)
	case OpReadlink:
		n = max(n, 1+binary.MaxVarintLen64+MaxTargetLen)
	case OpManifest:
		n = max(n, 2+MaxManifestLen)
	case OpFiles:
		n = max(n, 1+maxFilesBodyLen)
	}
	return n
}

// DecodeReply decodes a whole reply to a request of type op (not OpRead).
// An error reply yields a *RemoteError (matching its sentinel error with
// errors.Is); a malformed reply an error wrapping ErrBadRequest or
// ErrTooLarge. LIST entries must have valid, non-empty names and a MANIFEST
// must pass Manifest.Check.
func DecodeReply(op Op, b []byte) (*Reply, error) {
	if len(b) > MaxReplyLen(op) {
		return nil, fmt.Errorf("%v reply of %d bytes: %w", op, len(b), ErrTooLarge)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%v reply: empty: %w", op, ErrBadRequest)
	}
	if Status(b[0]) != StatusOK {
		return nil, DecodeError(b)
	}
	body := b[1:]
	r := &Reply{}
	var err error
	switch op {
	case OpStat:
		r.Attr, err = DecodeAttr(body)
		if err == nil && r.Attr.Name != "" {
			err = fmt.Errorf("STAT reply with a name: %w", ErrBadRequest)
		}
	case OpList:
		var raw []byte
		if raw, err = decodeCompressible(body, MaxListLen, listDecoder); err == nil {
			r.Entries, err = DecodeAttrs(raw)
		}
		for i := 0; err == nil && i < len(r.Entries); i++ {
			if r.Entries[i].Name == "" {
				err = fmt.Errorf("LIST entry %d without a name: %w", i, ErrBadRequest)
			}
		}
	case OpReadlink:
		d := decoder{b: body}
		r.Target = d.str("READLINK target", MaxTargetLen)
		d.end("READLINK reply")
		err = d.err
		if err == nil && (r.Target == "" || strings.IndexByte(r.Target, 0) >= 0) {
			err = fmt.Errorf("READLINK target %q: %w", r.Target, ErrBadRequest)
		}
	case OpManifest:
		var raw []byte
		if raw, err = decodeCompressible(body, MaxManifestLen, manifestDecoder); err == nil {
			r.Manifest = new(Manifest)
			err = r.Manifest.UnmarshalBinary(raw)
		}
	case OpFiles:
		r.Files, err = decodeFiles(body)
	default:
		err = fmt.Errorf("no reply decoding for %v: %w", op, ErrBadRequest)
	}
	if err != nil {
		return nil, fmt.Errorf("%v reply: %w", op, err)
	}
	return r, nil
}
