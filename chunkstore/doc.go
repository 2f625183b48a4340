// Package chunkstore is kwikfs's local cache (layer 4 of docs/architecture.md): verified
// file chunks keyed by their 256-bit hash (SHA-256 or BLAKE3, as the
// chunk's manifest says), plus opaque metadata records (manifests,
// directory listings, resume state) that other packages encode. Chunk
// bytes live in append-only segment files; Badger v4, in the same
// directory, holds the index (where each chunk is) and the metadata.
//
// # Concepts
//
// A chunk is stored under its hash, so identical chunks are stored once.
// The caller names the hash algorithm ([Chunk].Alg, zero value SHA-256);
// the chunk's record keeps it next to the chunk's location, and a record
// written before there was a choice reads as SHA-256. [Store.Put] verifies
// the hash of the data before it writes anything and [Store.Get] verifies
// the bytes it is about to return with the algorithm the chunk was stored
// under, so a corrupt byte never leaves the store: a chunk that fails verification is deleted,
// counted in [Stats].Corrupt and reported as [ErrCorrupt], and the caller
// fetches it again. [Store.PutVerified] is for chunks the caller has just
// verified itself (the file protocol client checks every chunk against its
// manifest): it skips the hash on the way in and writes a batch of chunks
// with one write and one index transaction; Get still verifies them on the
// way out. Metadata records carry a CRC-32C that [Store.GetMeta] and
// [Store.ScanMeta] check in the same spirit.
//
// The key is the 32-byte hash alone, not the algorithm with it: the two
// algorithms share one key space. A SHA-256 key could name a BLAKE3 chunk
// only for bytes x and y with SHA-256(x) = BLAKE3(y), which takes as much
// work to find (2^128) as the SHA-256 collision that content addressing
// already rules out, and Get would still return only bytes that hash to
// the key under their recorded algorithm. Keeping the key as it was leaves
// old stores, [Store.Has], [Store.Pin], [Store.Delete] and the stamps
// unchanged; the same bytes under both algorithms are stored twice, once
// under each hash (a cache filled from SHA-256 manifests is not reused by
// BLAKE3 ones).
//
// # Layout
//
//	dir/                  Badger: index and metadata (formatMagic 2)
//	dir/segments/000001.seg, 000002.seg, ...
//	                      chunk bytes, each from a 4 KiB boundary
//
// A segment file holds chunk bytes and nothing else, written with pwritev
// (never memory-mapped, so the kernel zero-fills no pages and Badger makes
// no copy of its own) and read with pread straight into the caller's
// buffer. Every non-empty chunk starts at a multiple of 4 KiB (zeros pad
// the gap), so each chunk owns whole filesystem blocks. A batch that
// would take the active segment past 256 MiB (Limit/8, at least 1 MiB,
// under a Limit) starts the next segment. Every Badger key starts with a
// one-byte namespace, so a metadata key can never collide with a chunk:
//
//	'i' sum[32]  chunk record: format byte (2: back to back, as stores
//	             written before alignment; 3: aligned), length, segment,
//	             offset (21 bytes), then for a chunk not under SHA-256
//	             its hash algorithm (1 byte)
//	'a' sum[32]  the chunk's last use: a logical clock value (8 bytes)
//	'm' key      metadata record: format byte, CRC-32C, caller's bytes
//
// # Space, eviction and pinning
//
// [Options].Limit bounds [Stats].DiskBytes: the chunks' disk space, each
// counted in whole 4 KiB blocks (Badger's own files are not included).
// [AutoLimit] lets [Open] choose it: half of the free space of the
// store's filesystem, counting the segment files' space as free. Only this
// package knows where the chunks' bytes are, so the policy lives here.
// Every Put and Get of a chunk stamps it with the next value of a logical
// clock, in memory (a Get writes nothing to Badger); the stamps are saved
// in the 'a' records when an eviction starts and at Close, so a reopened
// store evicts in the same order (a killed process loses only the uses
// since the last save). A write that would take DiskBytes past Limit
// first evicts the least recently used chunks, never a pinned one (see
// [Store.Pin]), until DiskBytes is at most 90% of Limit minus the write.
// Evicted bytes are released at once: a segment without chunks left is
// deleted, and otherwise each evicted chunk's blocks are punched out of
// its segment (fallocate PUNCH_HOLE, which keeps every other chunk where
// it is, so nothing is ever copied or moved). On a filesystem that
// cannot punch holes, eviction works a whole segment at a time instead,
// segments in the order of their most recent use, and a deleted chunk's
// space comes back with its segment. If pinned chunks alone exceed the
// limit, the store goes over it, counts that in [Stats].OverLimit and
// logs a warning; it never refuses a write or evicts a pinned chunk.
// Delete and the removal of a corrupt chunk release space the same way.
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
// Removal is the mirror image: records first (one transaction per
// thousand evicted chunks), space second. A crash in between leaves
// bytes no record points to; Open removes segments without records,
// truncates unreferenced bytes at a segment's end and punches a hole in
// every unreferenced range that still holds data. A Get that read a
// chunk's location just before its eviction may read released (zeroed)
// bytes: they fail the hash, the record is found gone, and the Get
// reports ErrNotFound, never the bytes.
//
// # Concurrency
//
// A [Store] is safe for concurrent use. An in-memory index of the stored
// chunks (location, last use; about 150 bytes a chunk) mirrors the chunk
// records. Everything that writes chunk records (Put, PutVerified,
// eviction, Delete, the removal of a corrupt chunk) runs under one
// writer mutex, from the duplicate check to the release of space, so
// concurrent Puts of the same chunk store it once and the counters stay
// exact under any interleaving. Gets run in parallel with everything,
// through a bounded cache of read-only segment descriptors; Pin takes
// only the index's lock. [Store.Close] waits for operations in flight;
// later calls fail with [ErrClosed].
//
// # Errors
//
// Sentinels are [ErrNotFound], [ErrCorrupt], [ErrClosed] and
// [ErrInvalidKey]; returned errors wrap them (compare with errors.Is).
// The store starts no goroutines of its own; Badger's are stopped by Close.
//
// # Testing
//
// Package chunkstoretest holds the conformance suite of what the users of
// a store rely on (its Run), which the Store passes in this package's
// tests, and MemStore, an in-memory store that passes it too, for tests
// that cannot run Badger.
package chunkstore
