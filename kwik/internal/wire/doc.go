// Package wire holds kwik's wire codecs: the control frames that travel on a
// path's control stream, the headers of the data frames that travel on QUIC
// unidirectional streams, and the path tokens and relayed commands that the
// multipath frames carry.
//
// # Encoding
//
// Every integer is a QUIC variable-length integer (RFC 9000, section 16), so
// no value exceeds 2^62-1. Decoders accept non-minimal encodings; encoders
// always write the minimal one.
//
// A control frame is
//
//	varint type | varint length | body (length bytes)
//
// A data stream (one QUIC unidirectional stream per path, logical stream and
// direction) starts with
//
//	varint logical-stream-id
//
// and then carries data frames
//
//	varint offset | varint length | byte flags | payload (length bytes)
//
// where flags bit 0 is FIN and the other bits must be zero.
//
// # Multipath frames
//
//	ADD_PATH    (0x10)  varint path | varint len, address | varint len, token
//	PATH_STATUS (0x11)  varint path | varint state | varint code | varint len, reason
//	RAW_DATA    (0x12)  varint path | command (the rest of the body)
//	REPORT      (0x13)  varint n, n path entries | varint m, m stream entries
//
// A path entry of REPORT is ten varints (path, delivered, received, frames,
// duplicate, out-of-grant bytes and frames, refused streams, smoothed and
// minimum RTT in microseconds); a stream entry is varint stream, varint
// contiguous offset, a flags byte (bit 0: complete), varint k and k ranges
// (varint start, varint length) beyond the contiguous offset, varint j and
// j (varint path, varint bytes). A path token and a command (see PathToken
// and Command) start with an 8-byte session ID and end with the primary's
// SigLen-byte (64) Ed25519 signature over everything before it, which kwik
// makes with the primary's signing key and checks with the secondaries'
// verify keys over the bytes received.
//
// # Bounds
//
// Decoders never allocate more than the caller's limit: [ReadControlFrame]
// checks a frame's length against its max argument before it reads the body,
// and [ReadDataHeader] only parses the header, leaving the payload (whose
// length the caller checks) on the stream. Within a body, every count and
// length is checked against what is left and against its own bound
// ([MaxAddrLen], [MaxTokenLen], [MaxReasonLen], [MaxReportPaths],
// [MaxReportRanges]) before anything is allocated; byte strings are copied
// out of the body, which the caller reuses.
//
// # Errors
//
// Malformed input yields an error matching [ErrMalformed]; a control frame
// longer than the limit yields one matching [ErrFrameTooLarge]. Errors from
// the underlying reader (io.EOF, stream resets) are returned as they are,
// except that io.EOF inside a frame becomes io.ErrUnexpectedEOF.
package wire
