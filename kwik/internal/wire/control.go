package wire

import (
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// Errors returned by the decoders. Compare with errors.Is.
var (
	// ErrMalformed reports bytes that do not form a valid frame.
	ErrMalformed = errors.New("malformed frame")
	// ErrFrameTooLarge reports a control frame longer than the receiver's limit.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrUnknownFrame reports a control frame type that this version does not
	// implement.
	ErrUnknownFrame = errors.New("unknown frame type")
)

// MaxVarint is the largest value a QUIC varint holds, and so the largest
// stream offset, stream ID or window kwik can express (2^62-1).
const MaxVarint = quicvarint.Max

// FrameType is the type number of a control frame.
type FrameType uint64

// Control frame types. 0x00-0x05 manage streams and flow control on every
// path; 0x10-0x13 are the multipath frames (see multipath.go).
const (
	TypeSettings      FrameType = 0x00
	TypeMaxData       FrameType = 0x01
	TypeMaxStreamData FrameType = 0x02
	TypeMaxStreams    FrameType = 0x03
	TypeResetStream   FrameType = 0x04
	TypeStopSending   FrameType = 0x05

	// TypeAddPath: the primary tells the client to dial a secondary and
	// hands it a path token, which the client presents to the secondary.
	TypeAddPath FrameType = 0x10
	// TypePathStatus: the client reports a path's state to the primary.
	TypePathStatus FrameType = 0x11
	// TypeRawData: an authenticated command the primary relays through the
	// client to a secondary, carrying a write grant.
	TypeRawData FrameType = 0x12
	// TypeReport: per-path statistics and per-stream received ranges,
	// flowing from the client back to the primary.
	TypeReport FrameType = 0x13
)

var typeNames = map[FrameType]string{
	TypeSettings:      "SETTINGS",
	TypeMaxData:       "MAX_DATA",
	TypeMaxStreamData: "MAX_STREAM_DATA",
	TypeMaxStreams:    "MAX_STREAMS",
	TypeResetStream:   "RESET_STREAM",
	TypeStopSending:   "STOP_SENDING",
	TypeAddPath:       "ADD_PATH",
	TypePathStatus:    "PATH_STATUS",
	TypeRawData:       "RAW_DATA",
	TypeReport:        "REPORT",
}

// String returns the frame type's name, or its number in hex if unknown.
func (t FrameType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", uint64(t))
}

// Frame is a decoded control frame: one of *Settings, *MaxData,
// *MaxStreamData, *MaxStreams, *ResetStream, *StopSending, *AddPath,
// *PathStatus, *RawData or *Report.
type Frame interface {
	Type() FrameType
	bodyLen() int
	appendBody(b []byte) []byte
	parseBody(b []byte) error
}

// AppendFrame appends f, with its type and length prefix, to b.
// It panics if a field exceeds MaxVarint (a programming error).
func AppendFrame(b []byte, f Frame) []byte {
	b = quicvarint.Append(b, uint64(f.Type()))
	b = quicvarint.Append(b, uint64(f.bodyLen()))
	return f.appendBody(b)
}

// Reader is what the stream decoders read from; *bufio.Reader is one.
type Reader interface {
	io.Reader
	io.ByteReader
}

// ReadControlFrame reads one control frame from r. A frame whose length
// exceeds max is rejected with ErrFrameTooLarge before its body is read.
// buf is scratch space for the body; it is grown if needed and returned for
// reuse. io.EOF means that r ended cleanly between frames.
func ReadControlFrame(r Reader, max int, buf []byte) (Frame, []byte, error) {
	t, err := readVarint(r)
	if err != nil {
		return nil, buf, err
	}
	l, err := readVarint(r)
	if err != nil {
		return nil, buf, noEOF(err)
	}
	typ := FrameType(t)
	if l > uint64(max) {
		return nil, buf, fmt.Errorf("control frame %v of %d bytes exceeds the limit of %d: %w", typ, l, max, ErrFrameTooLarge)
	}
	if uint64(cap(buf)) < l {
		buf = make([]byte, l)
	}
	body := buf[:l]
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, buf, noEOF(err)
	}
	f, err := ParseFrame(typ, body)
	return f, buf, err
}

// ParseFrame decodes the body of a control frame of type typ. The body must
// be consumed exactly.
func ParseFrame(typ FrameType, body []byte) (Frame, error) {
	var f Frame
	switch typ {
	case TypeSettings:
		f = &Settings{}
	case TypeMaxData:
		f = &MaxData{}
	case TypeMaxStreamData:
		f = &MaxStreamData{}
	case TypeMaxStreams:
		f = &MaxStreams{}
	case TypeResetStream:
		f = &ResetStream{}
	case TypeStopSending:
		f = &StopSending{}
	case TypeAddPath:
		f = &AddPath{}
	case TypePathStatus:
		f = &PathStatus{}
	case TypeRawData:
		f = &RawData{}
	case TypeReport:
		f = &Report{}
	default:
		return nil, fmt.Errorf("control frame type %v: %w", typ, ErrUnknownFrame)
	}
	if err := f.parseBody(body); err != nil {
		return nil, fmt.Errorf("%v frame: %w", typ, err)
	}
	return f, nil
}

// readVarint reads a QUIC varint from r. io.EOF means r ended before the
// first byte; an end inside the varint is io.ErrUnexpectedEOF.
func readVarint(r io.ByteReader) (uint64, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	n := 1 << (first >> 6)
	v := uint64(first & 0x3f)
	for i := 1; i < n; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		v = v<<8 | uint64(b)
	}
	return v, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// body is a cursor over a frame body.
type body struct {
	b   []byte
	err error
}

func (p *body) varint() uint64 {
	if p.err != nil {
		return 0
	}
	v, n, err := quicvarint.Parse(p.b)
	if err != nil {
		p.err = fmt.Errorf("truncated varint: %w", ErrMalformed)
		return 0
	}
	p.b = p.b[n:]
	return v
}

func (p *body) done() error {
	if p.err != nil {
		return p.err
	}
	if len(p.b) != 0 {
		return fmt.Errorf("%d trailing bytes: %w", len(p.b), ErrMalformed)
	}
	return nil
}

// Settings keys.
const (
	settingStreamWindow        = 0x1
	settingSessionWindow       = 0x2
	settingMaxStreams          = 0x3
	settingMaxDataFramePayload = 0x4
	settingMaxControlFrameSize = 0x5
)

// Settings is the first frame each side sends on a path's control stream.
// It announces the sender's receive limits. On the wire it is a list of
// (varint key, varint value) pairs; unknown keys are ignored so later
// versions can add settings, a repeated known key is malformed, and a
// missing key decodes as zero.
type Settings struct {
	StreamWindow        uint64 // initial MAX_STREAM_DATA for every logical stream
	SessionWindow       uint64 // initial MAX_DATA
	MaxStreams          uint64 // initial MAX_STREAMS (peer-opened logical streams)
	MaxDataFramePayload uint64 // largest data frame payload the sender accepts
	MaxControlFrameSize uint64 // largest control frame body the sender accepts
}

func (f *Settings) Type() FrameType { return TypeSettings }

func (f *Settings) pairs() [5][2]uint64 {
	return [5][2]uint64{
		{settingStreamWindow, f.StreamWindow},
		{settingSessionWindow, f.SessionWindow},
		{settingMaxStreams, f.MaxStreams},
		{settingMaxDataFramePayload, f.MaxDataFramePayload},
		{settingMaxControlFrameSize, f.MaxControlFrameSize},
	}
}

func (f *Settings) bodyLen() int {
	n := 0
	for _, kv := range f.pairs() {
		n += quicvarint.Len(kv[0]) + quicvarint.Len(kv[1])
	}
	return n
}

func (f *Settings) appendBody(b []byte) []byte {
	for _, kv := range f.pairs() {
		b = quicvarint.Append(b, kv[0])
		b = quicvarint.Append(b, kv[1])
	}
	return b
}

func (f *Settings) parseBody(b []byte) error {
	p := body{b: b}
	var seen uint8
	for len(p.b) > 0 && p.err == nil {
		k, v := p.varint(), p.varint()
		if p.err != nil {
			break
		}
		var dst *uint64
		switch k {
		case settingStreamWindow:
			dst = &f.StreamWindow
		case settingSessionWindow:
			dst = &f.SessionWindow
		case settingMaxStreams:
			dst = &f.MaxStreams
		case settingMaxDataFramePayload:
			dst = &f.MaxDataFramePayload
		case settingMaxControlFrameSize:
			dst = &f.MaxControlFrameSize
		default:
			continue // unknown setting: ignored
		}
		if seen&(1<<k) != 0 {
			return fmt.Errorf("setting 0x%x repeated: %w", k, ErrMalformed)
		}
		seen |= 1 << k
		*dst = v
	}
	return p.done()
}

// MaxData raises the session-wide send limit: the sum over all logical
// streams of the highest offset sent may reach Max.
type MaxData struct {
	Max uint64
}

func (f *MaxData) Type() FrameType            { return TypeMaxData }
func (f *MaxData) bodyLen() int               { return quicvarint.Len(f.Max) }
func (f *MaxData) appendBody(b []byte) []byte { return quicvarint.Append(b, f.Max) }
func (f *MaxData) parseBody(b []byte) error {
	p := body{b: b}
	f.Max = p.varint()
	return p.done()
}

// MaxStreams raises the number of logical streams the receiver of this frame
// may open in total (a cumulative count, like QUIC's MAX_STREAMS).
type MaxStreams struct {
	Max uint64
}

func (f *MaxStreams) Type() FrameType            { return TypeMaxStreams }
func (f *MaxStreams) bodyLen() int               { return quicvarint.Len(f.Max) }
func (f *MaxStreams) appendBody(b []byte) []byte { return quicvarint.Append(b, f.Max) }
func (f *MaxStreams) parseBody(b []byte) error {
	p := body{b: b}
	f.Max = p.varint()
	return p.done()
}

// MaxStreamData raises the send limit of one logical stream: its data may
// extend to offset Max.
type MaxStreamData struct {
	StreamID uint64
	Max      uint64
}

func (f *MaxStreamData) Type() FrameType { return TypeMaxStreamData }
func (f *MaxStreamData) bodyLen() int {
	return quicvarint.Len(f.StreamID) + quicvarint.Len(f.Max)
}
func (f *MaxStreamData) appendBody(b []byte) []byte {
	return quicvarint.Append(quicvarint.Append(b, f.StreamID), f.Max)
}
func (f *MaxStreamData) parseBody(b []byte) error {
	p := body{b: b}
	f.StreamID, f.Max = p.varint(), p.varint()
	return p.done()
}

// ResetStream ends the write direction of a logical stream abruptly. FinalSize
// is the number of bytes the sender had committed to the stream; the receiver
// uses it for session flow control.
type ResetStream struct {
	StreamID  uint64
	Code      uint64
	FinalSize uint64
}

func (f *ResetStream) Type() FrameType { return TypeResetStream }
func (f *ResetStream) bodyLen() int {
	return quicvarint.Len(f.StreamID) + quicvarint.Len(f.Code) + quicvarint.Len(f.FinalSize)
}
func (f *ResetStream) appendBody(b []byte) []byte {
	b = quicvarint.Append(b, f.StreamID)
	b = quicvarint.Append(b, f.Code)
	return quicvarint.Append(b, f.FinalSize)
}
func (f *ResetStream) parseBody(b []byte) error {
	p := body{b: b}
	f.StreamID, f.Code, f.FinalSize = p.varint(), p.varint(), p.varint()
	return p.done()
}

// StopSending asks the peer to stop writing a logical stream; the peer
// answers with RESET_STREAM carrying Code.
type StopSending struct {
	StreamID uint64
	Code     uint64
}

func (f *StopSending) Type() FrameType { return TypeStopSending }
func (f *StopSending) bodyLen() int {
	return quicvarint.Len(f.StreamID) + quicvarint.Len(f.Code)
}
func (f *StopSending) appendBody(b []byte) []byte {
	return quicvarint.Append(quicvarint.Append(b, f.StreamID), f.Code)
}
func (f *StopSending) parseBody(b []byte) error {
	p := body{b: b}
	f.StreamID, f.Code = p.varint(), p.varint()
	return p.done()
}

// ControlFrameLen returns the total length, header and body, of the control
// frame that b starts with, and false if b does not hold its whole header.
func ControlFrameLen(b []byte) (uint64, bool) {
	_, tn, err := quicvarint.Parse(b)
	if err != nil {
		return 0, false
	}
	l, ln, err := quicvarint.Parse(b[tn:])
	if err != nil {
		return 0, false
	}
	return uint64(tn+ln) + l, true
}
