// Package kwik is kwikfs's multipath session layer: a QUIC-like API (Dial,
// Listen, OpenStreamSync, AcceptStream, stream Read/Write/Close) over
// quic-go, whose logical streams are reassembled by offset so that, in a
// later version, several servers can feed the same stream.
//
// # Sessions and paths
//
// A Session is a set of paths, each a QUIC connection. This version has one
// path, path 0, between the client (the dialer) and the primary server.
// Every path has a control stream, the first bidirectional QUIC stream,
// opened by the dialer. It carries control frames (varint type, varint
// length, body), each at most the receiver's MaxControlFrameSize: SETTINGS
// first in each direction, then MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS,
// RESET_STREAM and STOP_SENDING. Frame types 0x10-0x13 are reserved for
// ADD_PATH, PATH_STATUS, RAW_DATA and REPORT (see internal/wire).
//
// # Logical streams and data frames
//
// Streams opened by the client have even IDs, those opened by the server odd
// IDs. Data travels on QUIC unidirectional streams, one per path, logical
// stream and direction, opened on the first write: the logical stream ID,
// then data frames (varint offset, varint length, flags byte with FIN,
// payload of at most the receiver's MaxDataFramePayload). The first frame
// for a new peer-side ID creates the stream, which AcceptStream returns.
//
// The receiver reassembles each stream by offset: out-of-order, overlapping
// and repeated bytes are handled, bytes received before are dropped and
// counted (PathStats.DuplicateBytes), and Read returns contiguous bytes only.
//
// A logical stream fed by a single data stream (the normal case with one
// path) is read in pull mode: Read reads the QUIC stream itself, parsing
// frame headers and copying payload straight into the caller's buffer, as
// fast as a plain QUIC stream. A stream fed by several data streams (later:
// several paths), or whose reading was canceled, switches to push mode: a
// goroutine per data stream reads frames into the reassembly buffer.
//
// # Flow control and limits
//
// Each side grants per-stream (StreamReceiveWindow) and per-session
// (SessionReceiveWindow) windows and returns credit with MAX_STREAM_DATA and
// MAX_DATA once half a window has been read. The windows bound what a
// receiver holds: data in the reassembly buffer, and data not yet read in
// pull mode, which waits in QUIC's buffers whose windows kwik sizes to its
// own (plus room for frame headers). MaxIncomingStreams bounds the
// peer-opened streams not yet finished; OpenStreamSync blocks at the peer's
// limit.
//
// A peer that sends beyond a window or a final size, an oversized or
// malformed frame, or too many streams has its session closed with a
// *SessionError naming the violation (FlowControlError, FinalSizeError,
// FrameSizeError, ProtocolViolation, StreamLimitError); other sessions are
// unaffected. Control frames and the first frame of every data stream are
// checked on arrival, data in push mode as it arrives, other data frames as
// they are read.
//
// # Errors and cancellation
//
// Blocking calls take a context or honour deadlines (os.ErrDeadlineExceeded).
// Stream cancellation surfaces as *StreamError, session closure as
// *SessionError, which matches ErrClosed. Close and CloseWithError wait for
// the session's goroutines; Listener.Close waits for the listener's.
//
// # Locking
//
// Session.mu guards the stream table and stream limits, Session.fc the
// session windows, Stream.mu a stream's state and Stream.writeMu serializes
// its writers. Locks are taken in the order Stream.writeMu, Stream.mu,
// Session.fc (or Session.spawnMu); Session.mu is never held with a Stream
// lock. A data stream is read by one goroutine at a time: the Read in pull
// mode, its drain goroutine in push mode (Stream.pulling and
// Stream.pushMode hand it over).
package kwik
