// Package server holds the primary's side of the kwikfs file protocol
// (DESIGN.md layer 3): the Catalog of the exported tree and the Primary that
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
// A Catalog computes a file's manifest (chunk size 1 MiB unless configured)
// by hashing it once, caches it in a bounded LRU keyed by path, and uses
// the cached one while the file's size and mtime are unchanged; a manifest
// whose file changed while it was hashed is computed again. Concurrent
// requests for the same file state share one computation (singleflight).
// READ names the manifest Version it expects; a file whose current manifest
// has another Version is answered with ErrStale. Chunks are read with pread
// into pooled buffers. A Catalog knows nothing of sessions, so a secondary
// can read chunks from its own root with it.
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
// # Locking
//
// The manifest cache's mutex guards its LRU list, map and byte count; the
// counters are atomics; everything else is immutable after construction.
package server
