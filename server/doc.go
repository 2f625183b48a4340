// Package server holds the primary's side of the kwikfs file protocol
// (layer 3 of docs/architecture.md): the Catalog of the exported tree and the Primary that
// serves it over kwik sessions.
//
// # Confinement
//
// Every file system access goes through an os.Root opened on the exported
// directory. Request paths are first checked lexically (transfer.CheckPath:
// no absolute paths, ".." elements or NUL bytes); os.Root then refuses any
// symlink that leads out of the root. Both are reported as
// transfer.ErrOutsideRoot, which the Primary logs with the peer's address.
// Only regular files, directories and symlinks are exported: LIST skips
// other types and STAT, MANIFEST and READ refuse them with ErrNotFound.
// STAT and LIST use lstat semantics (a symlink is reported as a symlink
// with its target); LIST, MANIFEST and READ follow symlinks that stay
// within the root.
//
// # Manifests
//
// A Catalog computes a file's manifest (chunk size 1 MiB and BLAKE3 chunk
// hashes unless configured; CatalogOptions.Hash "sha256" serves clients
// that predate BLAKE3) by hashing it once, caches it in a bounded LRU keyed by path, and uses
// the cached one while the file's size and mtime are unchanged; a manifest
// whose file changed while it was hashed is computed again. Concurrent
// requests for the same file state share one computation (singleflight),
// and at most CatalogOptions.MaxConcurrentHashes files (default GOMAXPROCS)
// are hashed at once; the others wait. The encoded MANIFEST reply is
// cached with its manifest (the cache's byte bound counts both), so the
// requests for a file state share one encoding. READ names the manifest Version it expects; a file whose current manifest
// has another Version is answered with ErrStale. Chunks are read with pread
// into pooled buffers. A Catalog knows nothing of sessions, so a secondary
// can read chunks from its own root with it. A secondary never hashes: it
// sends the byte ranges the primary delegates, and the client verifies
// them against the primary's manifest, with its algorithm.
//
// # Serving
//
// Primary.Serve accepts sessions and, for each, accepts streams; each
// stream carries one request (see package transfer) and is served by a
// goroutine of a per-session errgroup limited to MaxConcurrentRequests.
// A malformed request gets an error reply and the session carries on. A
// client that sends no whole request within RequestTimeout, or stops reading
// a reply for WriteTimeout, has that stream reset. Serve returns when its
// context ends or the listener closes, after closing its sessions and
// waiting for every goroutine it started.
//
// What every session shares is bounded as well (limits.go). LIST, MANIFEST
// and FILES replies, which may take tens of MiB, hold at most ReplyBudget
// bytes (default 64 MiB) at once over all sessions while they are built
// and sent: a request waits for its share, in order of arrival, until it
// has it or its session ends (PrimaryStats.BudgetWaits). A directory is
// read twice, listBatch entries at a time: first to measure its listing
// without keeping it, refusing one beyond transfer.MaxEntries or
// transfer.MaxListLen with ErrTooLarge as soon as that is seen, then,
// with its share of the budget, to build it. A reply held in memory (any
// but READ) must be sent whole within ReplyTimeout (default 2 min) of its
// first byte, however steadily the client reads, or it is reset with
// ErrUnavailable (PrimaryStats.ReplyTimeouts).
//
// # Coordinator (multipath READ)
//
// A Primary with PrimaryOptions.Secondaries (and a kwik listener holding the
// signing key) keeps, for every session, a path to each secondary: AddPath
// in the background, added again with jittered backoff (PathRetryInitial
// doubling to PathRetryMax) when it cannot be added or fails. A READ
// arriving while a secondary path is up is divided between the paths;
// otherwise, and always without secondaries, the primary writes the reply
// itself exactly as before.
//
// The reply's status byte is written first; the body is reserved (kwik
// Stream.Reserve) as the client's windows allow and cut into units: runs of
// whole chunks sized to the path, rate x UnitTime, between one chunk and
// MaxUnitChunks, smaller near the end of the reply. Each unit goes to the
// path with the earliest expected completion, (queued bytes + unit) / rate
// + RTT/2, provided that path holds less than rate x (RTT + FeedbackDelay)
// plus one unit assigned and not yet reported delivered; otherwise the unit
// waits for it (a slow path gets work only when it would finish first). A
// path's RTT and rate come from the client's reports (kwik PathStats and
// PathReport): rate samples from report intervals in which the path was
// busy throughout are averaged, others only raise the estimate. Units of
// the primary are written by a sender goroutine with WriteAt; units of a
// secondary are SEND_CHUNK commands (transfer.SendChunk) relayed by
// SendRawData with a write grant for exactly the unit's range. The write
// side is closed once every byte is assigned and the primary's units are
// written.
//
// The client's delivery reports (Stream.Delivered) retire units. A unit of
// a secondary whose path fails, whose command the session refuses, or that
// is not delivered by its deadline (LateFactor x its expected time +
// LateSlack) is taken back: the part not yet delivered is assigned again,
// to another path if there is one. When every byte is assigned, an idle
// path is given a copy of the missing part of the unit expected to arrive
// last, if it would arrive sooner from there (tail hedging); the client
// keeps the first copy. Path 0 units are never reassigned (QUIC retransmits
// them) but may be hedged. A READ ends when the client reports every byte,
// fails when the stream or session ends or nothing arrives for
// WriteTimeout, and is abandoned when the client stops reporting on a
// closed reply for AbandonAfter.
//
// A client that finds a chunk corrupt sends REPORT_CORRUPT
// (transfer.CorruptReport); each secondary recently given that chunk (a
// per-session record of the last 1024 assignments) gets a strike. A
// secondary that delivered nothing of a READ it was given work in, or whose
// late unit brought nothing, misses once; delivering resets the misses.
// After MaxStrikes strikes it gets no more work for that file in that
// session; after MaxStrikes misses in a row, none for MissCooldown. Primary.CoordinatorStats counts, per
// server address, assigned, delivered, reassigned and hedged bytes, late
// units, strikes, misses, paths added and lost, and paths up now.
//
// # Path report
//
// PATH_REPORT (transfer.OpPathReport) answers a client with the primary's
// account of every path of its session (pathreport.go): kwik's state and
// RTT, the coordinator's rate estimate and bytes in flight while the path
// is up, and the session's tally of delivered bytes, chunks and strikes.
// A divided READ is credited once the client has every byte: each path
// gets the body bytes it delivered first (kwik Delivery.ByPath) and its
// share of the reply's chunks, those bytes in whole chunks with the chunks
// left over (a short last chunk, one split by a hedge or a sub-chunk unit)
// going to the largest remainders, so that each chunk of the reply counts
// for exactly one path. A READ the primary sends alone counts for path 0
// once written whole. A READ that fails credits nothing, and a chunk found
// corrupt after its reply completed counts again when fetched anew. Strikes
// go to the path named in the assignment history. The tally has its own
// mutex, taken after sessionCoord.mu when both are held.
//
// # Locking
//
// The manifest cache's mutex guards its LRU list, map, byte count and the
// cached replies; the counters are atomics; the reply budget and the
// hashing slots are semaphores; everything else is immutable after
// construction. A hold of the reply budget belongs to the goroutine
// serving its request.
// A session's coordinator mutex (sessionCoord.mu) guards its path table,
// the paths' estimates and queues, the strike records and the assignment
// history; a READ's job state belongs to the goroutine serving it, and its
// sender's queue to the sender's mutex. No kwik call that blocks is made
// with sessionCoord.mu held.
package server
