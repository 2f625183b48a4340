// Package chunkstore is kwikfs's local cache (DESIGN.md layer 4): verified
// file chunks keyed by their SHA-256, plus opaque metadata records
// (manifests, directory listings, resume state) that other packages encode.
// Chunk bytes live in append-only segment files; Badger v4, in the same
// directory, holds the index (where each chunk is) and the metadata.
//
// # Concepts
//
// A chunk is stored under its SHA-256, so identical chunks are stored once.
// [Store.Put] verifies sha256(data) before it writes anything and
// [Store.Get] verifies the bytes it is about to return, so a corrupt byte
// never leaves the store: a chunk that fails verification is deleted,
// counted in [Stats].Corrupt and reported as [ErrCorrupt], and the caller
// fetches it again. [Store.PutVerified] is for chunks the caller has just
// verified itself (the file protocol client checks every chunk against its
// manifest): it skips the hash on the way in and writes a batch of chunks
// with one write and one index transaction; Get still verifies them on the
// way out. Metadata records carry a CRC-32C that [Store.GetMeta] and
// [Store.ScanMeta] check in the same spirit.
//
// # Layout
//
//	dir/                  Badger: index and metadata (formatMagic 2)
//	dir/segments/000001.seg, 000002.seg, ...
//	                      chunk bytes, back to back, nothing else
//
// A segment file is plain concatenated chunk bytes, written with pwritev
// (never memory-mapped, so the kernel zero-fills no pages and Badger makes
// no copy of its own) and read with pread straight into the caller's
// buffer. A batch that would take the active segment past 256 MiB starts
// the next segment. Every Badger key starts with a one-byte namespace, so
// a metadata key can never collide with a chunk:
//
//	'i' sum[32]  chunk record: format byte 2, length, segment, offset
//	             (21 bytes). It is the place for per-chunk access times
//	             when eviction arrives, so touching a chunk never rewrites
//	             its data.
//	'm' key      metadata record: format byte, CRC-32C, caller's bytes
//
// # Crash safety
//
// A writer appends a batch's bytes to the segment first and commits the
// batch's chunk records in one Badger transaction after (with
// [Options].SyncWrites, the segment is fdatasynced in between). Writers
// are serialized from the duplicate check to the commit, so a crash
// leaves at most one batch of unindexed bytes, at the end of the last
// segment; [Open] cuts them off, never indexes them. Badger replays only
// whole transactions, so a batch is indexed whole or not at all. With
// SyncWrites false a machine crash (not a mere process kill) may lose
// bytes whose record survived: Open drops records pointing past a
// segment's end or into a missing segment, and Get hashes every chunk
// anyway, so no torn or lost chunk is ever served.
//
// # Space
//
// Delete and the removal of a corrupt chunk drop its chunk record at once;
// its bytes stay in their segment. Open truncates unreferenced bytes at a
// segment's end and removes segments left without chunks; reclaiming the
// space of deleted chunks inside a segment (compaction) belongs with the
// size limit and eviction.
//
// # Concurrency
//
// A [Store] is safe for concurrent use. Put and PutVerified run one at a
// time from the duplicate check to the index commit, so concurrent Puts
// of the same chunk store it once. Delete and the removal of a corrupt
// chunk read and delete the record in one conflict-checked transaction
// (retried on conflict), which keeps [Stats].Chunks and [Stats].ChunkBytes
// exact under any interleaving. Gets run in parallel with everything,
// through a bounded cache of read-only segment descriptors. [Store.Close]
// waits for operations in flight; later calls fail with [ErrClosed].
//
// # Errors
//
// Sentinels are [ErrNotFound], [ErrCorrupt], [ErrClosed] and
// [ErrInvalidKey]; returned errors wrap them (compare with errors.Is).
// The store starts no goroutines of its own; Badger's are stopped by Close.
package chunkstore
