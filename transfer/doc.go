// Package transfer is the kwikfs file protocol (layer 2 of docs/architecture.md): the
// messages a client exchanges with a primary server over a kwik session,
// their bounded encodings, and the client that verifies every chunk against
// its manifest before anyone sees it.
//
// # Files, chunks and manifests
//
// A regular file is a sequence of chunks of Manifest.ChunkSize bytes (only
// the last chunk may be shorter). Its Manifest names a hash algorithm
// (Manifest.Alg: SHA256 or BLAKE3, both 256-bit; the server chooses, a
// client accepts either), lists the hash of every chunk under it and a
// Version, the SHA-256 over the size, chunk size, algorithm and chunk
// hashes (ComputeVersion). Two manifests with equal Version describe the
// same bytes; a client names the content it wants by Version, and a server
// whose file changed answers ErrStale. A client verifies every chunk with
// its manifest's algorithm (Manifest.Verify).
//
// # Streams and messages
//
// Every request travels on a kwik logical stream of its own. The client
// opens the stream, writes one request message and closes its write side;
// the server writes one reply and closes the stream. A request is
//
//	byte Op, uvarint len(path), path
//	READ only: 32 bytes version, uvarint first, uvarint count
//
// with Op one of STAT (1), LIST (2), READLINK (3), MANIFEST (4) and READ (5).
// Op 6 is SEND_CHUNK (SendChunk: the payload of a command a primary relays
// to a secondary, never sent by a client), op 7 REPORT_CORRUPT (CorruptReport:
// a client telling the primary that a chunk failed its hash, so that the
// path which delivered it gets a strike), op 8 PATH_REPORT (the request is
// that byte alone; the reply lists the primary's account of every path of
// the session, see PathReport), op 9 FILES (the manifests and first chunks
// of several small files in one reply, see FileData and Client.Files), and 10 to 15 are
// reserved. Paths are relative to the
// exported root, '/'-separated and canonical ("" is the root); absolute
// paths, ".." elements and NUL bytes are refused with ErrOutsideRoot (see
// CheckPath).
//
// A reply starts with one status byte. A non-zero status is an error code
// (see Status) followed by a uvarint-length message of at most MaxErrorLen
// bytes; clients return it as a *RemoteError, which matches the sentinel
// errors of this package with errors.Is. Status 0 (OK) is followed by the
// body (see EncodeReply): an Attr for STAT, an attribute list with every
// entry's full Attr for LIST (so "ls -l" needs no further round trip), the
// target for READLINK, and an encoded Manifest for MANIFEST (see
// Manifest.MarshalBinary: it starts with the byte 1 for a SHA-256
// manifest, as before manifests named their algorithm, and with 2 and the
// algorithm for any other; a client refuses an algorithm it does not know
// with ErrBadRequest). LIST and MANIFEST bodies are preceded by an
// encoding byte: 0 raw, 1 a zstd frame (used when the body is large and
// shrinks).
//
// # READ replies and the offset contract
//
// The OK reply to READ(path, version, first, count) is the status byte 0
// followed by the raw bytes of chunks first to first+count-1, concatenated,
// and nothing else. Byte k of chunk j therefore sits at stream offset
//
//	1 + (j-first)*ChunkSize + k
//
// This rule is a contract of the protocol: a later protocol version lets a
// primary delegate chunk ranges of one READ stream to secondaries, which
// write those bytes straight into these offsets of the client's logical
// stream. A server that fails after the status byte was sent cannot send an
// error reply any more; it resets the stream (kwik CancelWrite) instead, and
// the client sees a failed read.
//
// # Bounds
//
// Every decoder checks every length against a bound (MaxPathLen,
// MaxNameLen, MaxTargetLen, MaxEntries, MaxChunks, MaxListLen,
// MaxManifestLen, MaxErrorLen, MaxRequestLen) before it allocates, and
// fails with an error wrapping ErrTooLarge, or ErrBadRequest for any other
// malformation. zstd bodies are decompressed by a shared decoder whose
// output is bounded by the same limits. Every decoder has a fuzz target.
//
// # Client
//
// A Client dials its server lazily and redials with jittered backoff
// (RedialBackoff) after the session dies. A session that receives not one
// packet for the liveness timeout after a request is taken for dead (a
// stopped or restarted server: QUIC alone would notice only when its
// backed-off retransmission timer fires) and closed; its waiting requests
// are retried on a new session, whose dial starts a fresh attempt every
// liveness timeout until one connects. Every operation honours its
// context: an operation that cannot reach the server fails with an error
// wrapping ErrUnavailable (and the context's error) once the context ends;
// it never blocks past it.
// ReadChunks verifies every chunk against the manifest before delivering
// it (ErrCorrupt otherwise), in a buffer of its own that the caller may
// keep, so a caller that holds on to chunks (the filesystem's cache) needs
// neither a copy nor a second hash (Client.VerifiesChunks); DownloadFile
// writes a ".kwikpart" file, keeps
// the chunks of an earlier attempt that still verify, and renames it into
// place when complete. ReadChunks and DownloadFileWith return which
// servers delivered the chunks they handed over (Sources), counted from
// the paths of the session that carried the replies.
package transfer
