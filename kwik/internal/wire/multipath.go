package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/quic-go/quic-go/quicvarint"
)

// Bounds of the multipath codecs. Decoders refuse (ErrMalformed) anything
// beyond them, so a peer cannot make the receiver allocate more than a
// frame's worth of memory.
const (
	// MaxAddrLen bounds a secondary's address in ADD_PATH and in a token.
	MaxAddrLen = 255
	// MaxTokenLen bounds the token carried by ADD_PATH.
	MaxTokenLen = 512
	// MaxReasonLen bounds the reason text of PATH_STATUS.
	MaxReasonLen = 255
	// MaxReportPaths bounds the path entries of one REPORT.
	MaxReportPaths = 64
	// MaxReportRanges bounds the received ranges of one stream entry.
	MaxReportRanges = 16
	// SigLen is the length of the Ed25519 signature that ends a token and
	// a command.
	SigLen = 64
	// MaxServerNameLen bounds the server name ADD_PATH carries.
	MaxServerNameLen = 255
)

// Path states carried by PATH_STATUS.
const (
	PathStateUp     = 1 // the client's connection to the secondary is admitted
	PathStateFailed = 2 // the path was refused or broke
	PathStateClosed = 3 // the path ended in an orderly way
)

// AddPath travels on path 0 from the primary to the client: dial the
// secondary at Addr as path PathID, verify its certificate for ServerName
// (empty: the host of Addr) and present Token. The client presents it by
// sending the same frame as the second control frame (after SETTINGS) on
// the new path's control stream. ServerName is encoded last and only when
// set, so that a frame without it is that of an earlier version.
type AddPath struct {
	PathID     uint64
	Addr       string
	Token      []byte // an encoded PathToken, opaque to the client
	ServerName string
}

func (f *AddPath) Type() FrameType { return TypeAddPath }
func (f *AddPath) bodyLen() int {
	n := quicvarint.Len(f.PathID) + strLen(len(f.Addr)) + strLen(len(f.Token))
	if f.ServerName != "" {
		n += strLen(len(f.ServerName))
	}
	return n
}
func (f *AddPath) appendBody(b []byte) []byte {
	b = quicvarint.Append(b, f.PathID)
	b = appendStr(b, []byte(f.Addr))
	b = appendStr(b, f.Token)
	if f.ServerName != "" {
		b = appendStr(b, []byte(f.ServerName))
	}
	return b
}
func (f *AddPath) parseBody(b []byte) error {
	p := body{b: b}
	f.PathID = p.varint()
	f.Addr = string(p.bytes(MaxAddrLen, "address"))
	f.Token = p.bytes(MaxTokenLen, "token")
	f.ServerName = ""
	if p.err == nil && len(p.b) > 0 {
		f.ServerName = string(p.bytes(MaxServerNameLen, "server name"))
	}
	return p.done()
}

// PathStatus travels on path 0 from the client to the primary: path PathID
// is up, failed or closed (State, one of the PathState constants). Code and
// Reason say why a path failed or closed (the kwik error code and message
// of the connection's close).
type PathStatus struct {
	PathID uint64
	State  uint64
	Code   uint64
	Reason string
}

func (f *PathStatus) Type() FrameType { return TypePathStatus }
func (f *PathStatus) bodyLen() int {
	return quicvarint.Len(f.PathID) + quicvarint.Len(f.State) + quicvarint.Len(f.Code) + strLen(len(f.Reason))
}
func (f *PathStatus) appendBody(b []byte) []byte {
	b = quicvarint.Append(b, f.PathID)
	b = quicvarint.Append(b, f.State)
	b = quicvarint.Append(b, f.Code)
	return appendStr(b, []byte(f.Reason))
}
func (f *PathStatus) parseBody(b []byte) error {
	p := body{b: b}
	f.PathID, f.State, f.Code = p.varint(), p.varint(), p.varint()
	f.Reason = string(p.bytes(MaxReasonLen, "reason"))
	if p.err == nil && (f.State < PathStateUp || f.State > PathStateClosed) {
		return fmt.Errorf("path state %d: %w", f.State, ErrMalformed)
	}
	return p.done()
}

// RawData carries an encoded Command for path PathID: from the primary to
// the client on path 0, and, unchanged, from the client to the secondary on
// path PathID. The command is the rest of the body.
type RawData struct {
	PathID  uint64
	Command []byte
}

func (f *RawData) Type() FrameType { return TypeRawData }
func (f *RawData) bodyLen() int    { return quicvarint.Len(f.PathID) + len(f.Command) }
func (f *RawData) appendBody(b []byte) []byte {
	return append(quicvarint.Append(b, f.PathID), f.Command...)
}
func (f *RawData) parseBody(b []byte) error {
	p := body{b: b}
	f.PathID = p.varint()
	if p.err != nil {
		return p.err
	}
	if len(p.b) == 0 {
		return fmt.Errorf("empty command: %w", ErrMalformed)
	}
	f.Command = append([]byte(nil), p.b...)
	return nil
}

// PathReport is one path's entry in a REPORT: the client's counters for
// that path (payload bytes of data frames) and its RTT estimates.
type PathReport struct {
	PathID           uint64
	Delivered        uint64 // bytes accepted into a stream for the first time
	Received         uint64 // bytes received, duplicates and dropped bytes included
	Frames           uint64 // data frames received
	Duplicate        uint64 // bytes dropped because they had arrived before
	OutOfGrant       uint64 // bytes dropped because no grant covered them
	OutOfGrantFrames uint64 // frames with bytes (or a FIN) outside the grants
	RefusedStreams   uint64 // data streams for streams the path may not write
	SmoothedRTTMicro uint64
	MinRTTMicro      uint64
}

func (r *PathReport) fields() [10]uint64 {
	return [10]uint64{r.PathID, r.Delivered, r.Received, r.Frames, r.Duplicate, r.OutOfGrant,
		r.OutOfGrantFrames, r.RefusedStreams, r.SmoothedRTTMicro, r.MinRTTMicro}
}

// PathReportLen returns the encoded length of one path entry.
func PathReportLen(r *PathReport) int {
	n := 0
	for _, v := range r.fields() {
		n += quicvarint.Len(v)
	}
	return n
}

// Range is the byte range [Start, End) of a stream.
type Range struct {
	Start, End uint64
}

// PathBytes counts the bytes of a stream first delivered by one path.
type PathBytes struct {
	PathID uint64
	Bytes  uint64
}

// StreamReport is one stream's entry in a REPORT: how much of the stream
// the client has received.
type StreamReport struct {
	StreamID uint64
	// Contiguous is the offset below which the client has every byte.
	Contiguous uint64
	// Complete: the client has every byte up to the final size (which is
	// then Contiguous). The client sends no further entry for the stream.
	Complete bool
	// Ranges are byte ranges received beyond Contiguous, in order, disjoint
	// and not adjacent; at most MaxReportRanges (the lowest ones).
	Ranges []Range
	// ByPath counts the bytes of the stream first delivered by each path.
	ByPath []PathBytes
}

// Report travels on path 0 from the client to the primary, periodically
// while data flows and at once when a stream completes.
type Report struct {
	Paths   []PathReport
	Streams []StreamReport
}

// Report flag bits.
const reportComplete = 0x1

func (f *Report) Type() FrameType { return TypeReport }

// Len returns the encoded length of the frame's body.
func (f *Report) Len() int { return f.bodyLen() }

func (f *Report) bodyLen() int {
	n := quicvarint.Len(uint64(len(f.Paths))) + quicvarint.Len(uint64(len(f.Streams)))
	for i := range f.Paths {
		n += PathReportLen(&f.Paths[i])
	}
	for i := range f.Streams {
		n += StreamReportLen(&f.Streams[i])
	}
	return n
}

// StreamReportLen returns the encoded length of one stream entry, so that
// a sender can split its entries over frames of a bounded size.
func StreamReportLen(s *StreamReport) int {
	n := quicvarint.Len(s.StreamID) + quicvarint.Len(s.Contiguous) + 1 +
		quicvarint.Len(uint64(len(s.Ranges))) + quicvarint.Len(uint64(len(s.ByPath)))
	for _, r := range s.Ranges {
		n += quicvarint.Len(r.Start) + quicvarint.Len(r.End-r.Start)
	}
	for _, pb := range s.ByPath {
		n += quicvarint.Len(pb.PathID) + quicvarint.Len(pb.Bytes)
	}
	return n
}

func (f *Report) appendBody(b []byte) []byte {
	b = quicvarint.Append(b, uint64(len(f.Paths)))
	for i := range f.Paths {
		for _, v := range f.Paths[i].fields() {
			b = quicvarint.Append(b, v)
		}
	}
	b = quicvarint.Append(b, uint64(len(f.Streams)))
	for i := range f.Streams {
		s := &f.Streams[i]
		b = quicvarint.Append(b, s.StreamID)
		b = quicvarint.Append(b, s.Contiguous)
		var flags byte
		if s.Complete {
			flags |= reportComplete
		}
		b = append(b, flags)
		b = quicvarint.Append(b, uint64(len(s.Ranges)))
		for _, r := range s.Ranges {
			b = quicvarint.Append(b, r.Start)
			b = quicvarint.Append(b, r.End-r.Start)
		}
		b = quicvarint.Append(b, uint64(len(s.ByPath)))
		for _, pb := range s.ByPath {
			b = quicvarint.Append(b, pb.PathID)
			b = quicvarint.Append(b, pb.Bytes)
		}
	}
	return b
}

func (f *Report) parseBody(b []byte) error {
	p := body{b: b}
	np := p.count(MaxReportPaths, 10, "paths")
	if np > 0 {
		f.Paths = make([]PathReport, np)
	}
	for i := range np {
		r := &f.Paths[i]
		for _, dst := range []*uint64{&r.PathID, &r.Delivered, &r.Received, &r.Frames, &r.Duplicate,
			&r.OutOfGrant, &r.OutOfGrantFrames, &r.RefusedStreams, &r.SmoothedRTTMicro, &r.MinRTTMicro} {
			*dst = p.varint()
		}
	}
	// A stream entry takes at least 5 bytes.
	ns := p.count(len(b), 5, "streams")
	if ns > 0 {
		f.Streams = make([]StreamReport, ns)
	}
	for i := 0; i < ns && p.err == nil; i++ {
		s := &f.Streams[i]
		s.StreamID, s.Contiguous = p.varint(), p.varint()
		flags := p.u8()
		if p.err == nil && flags&^reportComplete != 0 {
			return fmt.Errorf("report flags 0x%02x: %w", flags, ErrMalformed)
		}
		s.Complete = flags&reportComplete != 0
		nr := p.count(MaxReportRanges, 2, "ranges")
		if nr > 0 {
			s.Ranges = make([]Range, nr)
		}
		prev := s.Contiguous
		for k := 0; k < nr && p.err == nil; k++ {
			start, n := p.varint(), p.varint()
			if p.err != nil {
				break
			}
			// Ranges lie beyond Contiguous, ascending, disjoint, not
			// adjacent and not empty.
			if start <= prev || n == 0 || n > MaxVarint-start {
				return fmt.Errorf("report range [%d, +%d) after %d: %w", start, n, prev, ErrMalformed)
			}
			s.Ranges[k] = Range{start, start + n}
			prev = start + n
		}
		if s.Complete && nr > 0 {
			return fmt.Errorf("complete stream with ranges: %w", ErrMalformed)
		}
		nb := p.count(MaxReportPaths, 2, "path counts")
		if nb > 0 {
			s.ByPath = make([]PathBytes, nb)
		}
		for k := 0; k < nb && p.err == nil; k++ {
			s.ByPath[k] = PathBytes{PathID: p.varint(), Bytes: p.varint()}
		}
	}
	return p.done()
}

// Grant lets a secondary write logical stream StreamID in
// [Offset, Offset+Length).
type Grant struct {
	StreamID uint64
	Offset   uint64
	Length   uint64
}

// End returns the offset just past the granted range.
func (g Grant) End() uint64 { return g.Offset + g.Length }

// Command is a command the primary relays through the client to a
// secondary. It is encoded as
//
//	session-id (8 bytes) | varint path-id | varint seq | varint expiry |
//	varint stream | varint offset | varint length |
//	varint payload-length | payload | signature (64 bytes)
//
// where expiry is in Unix milliseconds and the signature is the primary's
// Ed25519 signature over every byte before it, in a context of its own
// (made and checked by kwik, not here).
type Command struct {
	SessionID uint64
	PathID    uint64
	Seq       uint64
	Expiry    uint64
	Grant     Grant
	Payload   []byte
	Sig       [SigLen]byte
}

// AppendSigned appends the part of the command the signature covers.
// It panics if the grant's end exceeds MaxVarint (a programming error).
func (c *Command) AppendSigned(b []byte) []byte {
	if c.Grant.Offset > MaxVarint-c.Grant.Length {
		panic(fmt.Sprintf("kwik/wire: grant [%d, +%d) beyond 2^62", c.Grant.Offset, c.Grant.Length))
	}
	b = binary.BigEndian.AppendUint64(b, c.SessionID)
	for _, v := range [...]uint64{c.PathID, c.Seq, c.Expiry, c.Grant.StreamID, c.Grant.Offset, c.Grant.Length} {
		b = quicvarint.Append(b, v)
	}
	return appendStr(b, c.Payload)
}

// Append appends the whole command, signature included.
func (c *Command) Append(b []byte) []byte {
	return append(c.AppendSigned(b), c.Sig[:]...)
}

// ParseCommand decodes an encoded command, which must be consumed exactly.
// The signature covers b[:len(b)-SigLen]. Payload is copied.
func ParseCommand(b []byte) (*Command, error) {
	if len(b) < 8+SigLen {
		return nil, fmt.Errorf("command of %d bytes: %w", len(b), ErrMalformed)
	}
	c := &Command{SessionID: binary.BigEndian.Uint64(b)}
	p := body{b: b[8 : len(b)-SigLen]}
	c.PathID, c.Seq, c.Expiry = p.varint(), p.varint(), p.varint()
	c.Grant = Grant{StreamID: p.varint(), Offset: p.varint(), Length: p.varint()}
	c.Payload = p.bytes(len(b), "payload")
	if err := p.done(); err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	if c.Grant.Offset > MaxVarint-c.Grant.Length {
		return nil, fmt.Errorf("grant [%d, +%d) beyond 2^62: %w", c.Grant.Offset, c.Grant.Length, ErrMalformed)
	}
	copy(c.Sig[:], b[len(b)-SigLen:])
	return c, nil
}

// PathToken admits a client to a secondary as path PathID of session
// SessionID, until Expiry (Unix milliseconds). It is encoded as
//
//	session-id (8 bytes) | varint path-id | varint expiry |
//	varint address-length | address | signature (64 bytes)
//
// where the signature is the primary's Ed25519 signature over every byte
// before it, in a context of its own.
type PathToken struct {
	SessionID uint64
	PathID    uint64
	Expiry    uint64
	Addr      string // the secondary's address, as the primary named it
	Sig       [SigLen]byte
}

// AppendSigned appends the part of the token the signature covers.
func (t *PathToken) AppendSigned(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, t.SessionID)
	b = quicvarint.Append(b, t.PathID)
	b = quicvarint.Append(b, t.Expiry)
	return appendStr(b, []byte(t.Addr))
}

// Append appends the whole token, signature included.
func (t *PathToken) Append(b []byte) []byte {
	return append(t.AppendSigned(b), t.Sig[:]...)
}

// ParsePathToken decodes an encoded token, which must be consumed exactly.
// The signature covers b[:len(b)-SigLen].
func ParsePathToken(b []byte) (*PathToken, error) {
	if len(b) < 8+SigLen || len(b) > MaxTokenLen {
		return nil, fmt.Errorf("token of %d bytes: %w", len(b), ErrMalformed)
	}
	t := &PathToken{SessionID: binary.BigEndian.Uint64(b)}
	p := body{b: b[8 : len(b)-SigLen]}
	t.PathID, t.Expiry = p.varint(), p.varint()
	t.Addr = string(p.bytes(MaxAddrLen, "address"))
	if err := p.done(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	copy(t.Sig[:], b[len(b)-SigLen:])
	return t, nil
}

func strLen(n int) int { return quicvarint.Len(uint64(n)) + n }

func appendStr(b, s []byte) []byte {
	return append(quicvarint.Append(b, uint64(len(s))), s...)
}

// bytes reads a length-prefixed byte string of at most max bytes and
// returns a copy (nil if empty).
func (p *body) bytes(max int, what string) []byte {
	n := p.varint()
	if p.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(p.b)) {
		p.err = fmt.Errorf("%s of %d bytes (limit %d, %d left): %w", what, n, max, len(p.b), ErrMalformed)
		return nil
	}
	var s []byte
	if n > 0 {
		s = append([]byte(nil), p.b[:n]...)
	}
	p.b = p.b[n:]
	return s
}

// count reads an element count of at most max, each element taking at least
// minLen bytes of what is left.
func (p *body) count(max, minLen int, what string) int {
	n := p.varint()
	if p.err != nil {
		return 0
	}
	if n > uint64(max) || n*uint64(minLen) > uint64(len(p.b)) {
		p.err = fmt.Errorf("%d %s (limit %d, %d bytes left): %w", n, what, max, len(p.b), ErrMalformed)
		return 0
	}
	return int(n)
}

func (p *body) u8() byte {
	if p.err != nil {
		return 0
	}
	if len(p.b) == 0 {
		p.err = fmt.Errorf("truncated frame: %w", ErrMalformed)
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}
