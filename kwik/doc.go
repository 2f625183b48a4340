// Package kwik is kwikfs's multipath session layer: a QUIC-like API (Dial,
// Listen, OpenStreamSync, AcceptStream, stream Read/Write/Close) over
// quic-go, whose logical streams are reassembled by offset so that several
// servers can feed the same stream.
//
// # Sessions, paths and roles
//
// A Session is a set of paths, each a QUIC connection. Path 0 connects the
// client (the dialer, Dial) and the primary (Listen). A primary whose Config
// has a SigningKey (Ed25519) may add secondary paths: AddPath tells the
// client to connect to a secondary (ListenSecondary, whose VerifyKeys hold
// the public key), which then writes the ranges of the client's streams
// that the primary grants it.
// Every path has a control stream, the first bidirectional QUIC stream,
// opened by the dialer. It carries control frames (varint type, varint
// length, body), each at most the receiver's MaxControlFrameSize: SETTINGS
// first in each direction, then MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS,
// RESET_STREAM and STOP_SENDING on path 0, and the multipath frames below
// (see internal/wire for the encodings).
//
// # Logical streams and data frames
//
// Streams opened by the client have even IDs, those opened by the server odd
// IDs. Data travels on QUIC unidirectional streams, one per path, logical
// stream and direction (a secondary opens one per command), opened on the
// first write: the logical stream ID, then data frames (varint offset,
// varint length, flags byte with FIN, payload of at most the receiver's
// MaxDataFramePayload). The first frame for a new peer-side ID on path 0
// creates the stream, which AcceptStream returns.
//
// The receiver reassembles each stream by offset: out-of-order, overlapping
// and repeated bytes are handled, bytes received before are dropped and
// counted (PathStats.DuplicateBytes), so sending a range over two paths
// (hedging) is harmless, and Read returns contiguous bytes only.
//
// A logical stream fed by a single data stream (the normal case with one
// path) is read in pull mode: Read reads the QUIC stream itself, parsing
// frame headers and copying payload straight into the caller's buffer, as
// fast as a plain QUIC stream. A stream fed by several data streams (several
// paths, or data written again with WriteAt after Close), or whose reading
// was canceled, switches to push mode: a goroutine per data stream reads
// frames into the reassembly buffer. A secondary's data streams are always
// read in push mode.
//
// # Adding a path
//
// AddPath(ctx, addr) sends the client ADD_PATH (path ID, addr, token, and
// with AddPathAs the server name the secondary's certificate must carry).
// The token is the primary's Ed25519 signature (context "kwik path token
// v1") over the session ID (random, chosen by the primary), the path ID,
// addr and an expiry (Config.TokenLifetime). The client dials addr on its
// own UDP socket, verifies the secondary's certificate like the primary's
// (for the server name ADD_PATH gives, else the host of addr), and
// sends SETTINGS and the same ADD_PATH on the new control stream. The
// secondary answers with its SETTINGS only if the token verifies, names its
// own address (Config.AdvertiseAddr), has not expired and was not used
// before; otherwise it closes the connection with PATH_REFUSED and the
// reason (ErrTokenMissing, ErrTokenInvalid, ErrTokenExpired,
// ErrTokenWrongSecondary, ErrTokenReused), which it counts
// (SecondaryStats). The client reports every change of a path's state to
// the primary with PATH_STATUS (up, failed, closed, with the close's code
// and reason); both sides queue PathEvents (NextPathEvent) and show the
// state in Stats. A path that fails never affects the session or the other
// paths, and the bytes it delivered stay.
//
// # Relayed commands and write grants
//
// SendRawData(path, grant, payload) sends the client RAW_DATA (path ID,
// command). The command holds the session ID, path ID, a per-path sequence
// number, an expiry, the grant (stream, offset, length) in clear and the
// opaque payload, all covered by the primary's Ed25519 signature (context
// "kwik relayed command v1"). The client parses the grant, records it for the
// path (a grant beyond the stream's receive window closes the session: the
// primary broke flow control) and forwards the frame unchanged to the
// secondary. The secondary delivers a command (AcceptCommand) only if its
// signature verifies over the bytes received, it names the session and path the
// path was admitted for, its sequence number exceeds the last one accepted
// on the path and it has not expired; otherwise it counts and drops it, and
// after 8 commands on a path refused for any reason but expiry (which an
// honest client never causes) it closes the path with ProtocolViolation. It
// answers with data frames for the granted range (Command.Write, WriteAt).
//
// On the primary, Stream.Reserve commits a range of the stream (taking
// flow-control credit, exactly like Write) without sending it; a grant must
// lie within the committed bytes, so it never exceeds the client's windows.
// Stream.WriteAt sends a committed range on path 0, also after Close: to
// serve a range itself or to resend one a failed or late path did not
// deliver.
//
// # Secondary isolation
//
// On the client, a secondary path's bytes are pushed into a stream only
// where that path's grants cover them; bytes outside are dropped and counted
// (OutOfGrantBytes, OutOfGrantFrames), and so is a FIN (only the primary
// ends a stream) or an empty frame. A secondary cannot open a logical
// stream: its data for a stream that does not exist is read and counted
// (RefusedStreams). Granted bytes that break the receive rules are dropped
// and counted (RejectedBytes), and a secondary's data may leave at most
// half of the reassembly buffer's holes. None of this closes the session.
// A framing error on a secondary path (malformed or oversized frame, any
// control frame) ends only that path, and so does repeated writing outside
// the grants, which an honest secondary never does: more than 1 MiB
// outside them, more than 8 such frames or more than 4 refused streams
// end the path with ProtocolViolation (matching ErrGrantViolation,
// counted in PathStats.GrantViolation and
// SessionStats.GrantViolationPaths), reported to the primary as
// PATH_STATUS failed.
//
// # Stall detection
//
// A client closes a secondary path that stalls: one that has received no
// data for Config.PathStallTimeout (default 2 s) since the first command
// relayed to it after its last data. Only granted bytes count, as they
// arrive, duplicates and bytes for finished streams included, so neither a
// slow path that keeps sending nor hedging trips it, while bytes outside
// the grants and headers do not make a path look alive. A path given no
// work is never closed for being quiet; the primary's reassignments do not
// hide a stall either. A secondary that cannot serve a command answers it with
// an empty data stream (Command.Close). The path ends with a *PathError of
// code PathStalled (matching ErrPathStalled), reported to the primary as
// PATH_STATUS failed like any other failure; both sides count it
// (PathStats.Stalled, SessionStats.StalledPaths), and the client shows how
// long each path has owed data (PathStats.AwaitingData).
//
// # Reports
//
// The client sends the primary REPORT frames every ReportInterval while
// data arrives, and at once when a stream has all its bytes: per path its
// counters (delivered, received, duplicate and out-of-grant bytes, frames,
// refused streams) and RTT estimates; per stream the contiguous received
// offset, up to 16 received ranges beyond it, whether it is complete, and
// the bytes each path delivered first. The primary shows them in
// PathStats.Reported (with a delivery-rate estimate) and Stream.Delivered;
// Stream.WaitDelivered blocks until a stream's bytes below an offset have
// arrived. A scheduler computes each path's rate and RTT from these and
// reassigns the ranges that are late.
//
// # Flow control and limits
//
// Each side grants per-stream (StreamReceiveWindow) and per-session
// (SessionReceiveWindow) windows and returns credit with MAX_STREAM_DATA and
// MAX_DATA, on path 0, once half a window has been read. The windows bound
// what a receiver holds: data in the reassembly buffer, and data not yet
// read in pull mode, which waits in QUIC's buffers whose windows kwik sizes
// to its own (plus room for frame headers). MaxIncomingStreams bounds the
// peer-opened streams not yet finished; OpenStreamSync blocks at the peer's
// limit. A client keeps at most MaxPaths secondary paths and 1024 granted
// ranges per stream and path; every multipath decoder bounds what it
// accepts.
//
// A listener holds at most MaxSessions sessions (default 256) and a
// secondary at most MaxSessions paths, at most MaxSessionsPerSource (32)
// of them from one source IP address, and at most MaxSetupsPerSource (8)
// from one address still in setup, which must end within SetupTimeout (5
// s) of the QUIC handshake; a connection beyond a limit is closed at once
// with SessionLimitError ("session limit of N reached", "limit of N
// sessions per source address reached", "limit of N handshakes per source
// address reached"), which the dialler's Dial or AddPath returns. A
// secondary hands over at most MaxCommandsPerPath (16) commands of one
// path at once, and closes with WriteStalled a path whose client takes
// none of a command's data for WriteTimeout (10 s). A control frame must arrive
// whole within FrameTimeout (default IdleTimeout, 30 s) of its first byte,
// and a new data stream must bring its headers within FrameTimeout; a
// session that breaks either is closed with ProtocolViolation. So a peer
// makes a session hold at most: its receive windows of data (QUIC's
// windows, sized to kwik's, bound the bytes waiting in QUIC),
// MaxIncomingStreams logical streams, one control frame of
// MaxControlFrameSize and, for at most FrameTimeout, data streams without
// headers; a Write blocked on the peer's credit holds only the caller's
// buffer (SetWriteDeadline bounds the wait). A peer that stops reading its
// control stream makes this side hold at most MaxControlQueueBytes (4
// MiB) of control frames for it, beyond window updates (one per stream):
// the frame that would exceed it ends the session, or the secondary path,
// with ControlQueueOverflow.
//
// Listener.Stats and SecondaryStats.Refused count the connections refused
// at these limits, those whose kwik handshake timed out or failed, and
// those whose client certificate the TLS handshake refused (kwik sees
// each connection end with the TLS alert it sent); Listener.Stats counts
// the sessions closed with ControlQueueOverflow too.
//
// A primary that sends beyond a window or a final size, an oversized or
// malformed frame, or too many streams has its session closed with a
// *SessionError naming the violation (FlowControlError, FinalSizeError,
// FrameSizeError, ProtocolViolation, StreamLimitError); other sessions are
// unaffected. Control frames and the first frame of every data stream are
// checked on arrival, data in push mode as it arrives, other data frames as
// they are read. The same data from a secondary is dropped and counted
// instead (see Secondary isolation).
//
// # Errors and cancellation
//
// Blocking calls take a context or honour deadlines (os.ErrDeadlineExceeded).
// Stream cancellation surfaces as *StreamError, session closure as
// *SessionError, which matches ErrClosed, the end of a path as *PathError,
// which matches the refusal's sentinel, or ErrPathStalled. Close and CloseWithError wait for
// the session's goroutines (path goroutines included); Listener.Close and
// Secondary.Close wait for theirs.
//
// # Locking
//
// Session.mu guards the stream table and stream limits, Session.fc the
// session windows, Session.pathMu the secondary paths (their table, states,
// command sequence numbers, reports) and the path events, Session.repMu the
// client's set of streams to report, Stream.mu a stream's state (grants and
// delivery reports included) and Stream.writeMu serializes its writers.
// Locks are taken in the order Stream.writeMu, Stream.mu, then Session.fc,
// Session.repMu or Session.spawnMu; Session.mu and Session.pathMu are never
// held with a Stream lock nor with each other; a path's control queue lock
// is a leaf taken under any of them, its stall watch lock (stallWatch.mu) a
// leaf taken under none. A data stream is read by one goroutine
// at a time: the Read in pull mode, its drain goroutine in push mode
// (Stream.pulling and Stream.pushMode hand it over).
package kwik
