// Package wire holds kwik's wire codecs: the control frames that travel on a
// path's control stream and the headers of the data frames that travel on
// QUIC unidirectional streams.
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
// # Bounds
//
// Decoders never allocate more than the caller's limit: [ReadControlFrame]
// checks a frame's length against its max argument before it reads the body,
// and [ReadDataHeader] only parses the header, leaving the payload (whose
// length the caller checks) on the stream.
//
// # Errors
//
// Malformed input yields an error matching [ErrMalformed]; a control frame
// longer than the limit yields one matching [ErrFrameTooLarge]. Errors from
// the underlying reader (io.EOF, stream resets) are returned as they are,
// except that io.EOF inside a frame becomes io.ErrUnexpectedEOF.
package wire
