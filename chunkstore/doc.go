// Package chunkstore is kwikfs's local cache (DESIGN.md layer 4): verified
// file chunks keyed by their SHA-256, plus opaque metadata records
// (manifests, directory listings, resume state) that other packages encode.
// It is a thin layer over Badger v4 in one directory.
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
// in one transaction; Get still verifies them on the way out. Metadata records carry a CRC-32C that [Store.GetMeta]
// and [Store.ScanMeta] check in the same spirit.
//
// # Layout
//
// Every Badger key starts with a one-byte namespace, so a metadata key can
// never collide with a chunk:
//
//	'c' sum[32]  chunk bytes, raw (large ones live in Badger's value log)
//	'i' sum[32]  chunk info: format byte and exact length, written and
//	             deleted in the same transaction as 'c'; Open counts these.
//	             It is the place for per-chunk access times when eviction
//	             arrives, so touching a chunk never rewrites its data.
//	'm' key      metadata record: format byte, CRC-32C, caller's bytes
//
// # Crash safety
//
// Each Put is one Badger transaction (PutVerified writes up to 64 chunks
// in one); Badger replays only whole
// transactions after a crash, and with [Options].SyncWrites false a crash
// may lose the last acknowledged writes (after a power loss, not after a
// mere process kill), never leave a torn one. Whatever the disk returns,
// Get still hashes the chunk before returning it. (Badger checks the last
// value log file when it opens and cuts it at the first damaged entry, so
// chunks written after a damaged one in that file also come back as
// ErrCorrupt and are refetched.)
//
// # Space
//
// Delete and the removal of a corrupt chunk drop its keys at once; the
// chunk's bytes in Badger's value log are reclaimed only by value-log
// garbage collection, which this package does not run yet (it belongs with
// the size limit and eviction).
//
// # Concurrency
//
// A [Store] is safe for concurrent use. Put, Delete and the removal of a
// corrupt chunk read and write the chunk in one conflict-checked
// transaction (retried on conflict), which keeps [Stats].Chunks and
// [Stats].ChunkBytes exact under any interleaving. [Store.Close] waits for
// operations in flight; later calls fail with [ErrClosed].
//
// # Errors
//
// Sentinels are [ErrNotFound], [ErrCorrupt], [ErrClosed] and
// [ErrInvalidKey]; returned errors wrap them (compare with errors.Is).
// The store starts no goroutines of its own; Badger's are stopped by Close.
package chunkstore
