// Package fusefs is the read-only FUSE filesystem of kwikfs (layer 5 of
// docs/architecture.md): a go-fuse v2 node tree over a Remote (the file protocol client) and a
// local chunk Store.
//
// # Tree and metadata
//
// The tree has directories, regular files and symlinks. A directory's
// children come from one List of that directory, which serves Lookup, Readdir
// (including READDIRPLUS), Getattr and Readlink of every entry, so `ls -l`,
// `find` or `cp -r` cost one round trip per directory, not per file. Listings
// and file manifests are kept in memory for Options.AttrTimeout and persisted
// in the Store's meta records. When the Remote fails with
// transfer.ErrUnavailable (or does not answer within Options.FetchTimeout),
// the last known copy (memory, then Store) is served and trusted for another
// AttrTimeout, so everything cached stays readable while the server is down.
// Files show the exported mode bits, size and mtime, owned by the uid and gid
// of the mounting process. The mount is read-only: writes fail with EROFS.
// The kernel keeps names and attributes only for what is left of the
// cached listing's AttrTimeout, so a change on the server shows within
// AttrTimeout. Options.RemoteDown starts the FS as if the server had just
// failed to answer (the daemon sets it when its first contact failed), so
// a cached tree is walked at once after a remount with the server down.
//
// A file node stands for one version of the file (size and mtime, and its
// manifest's version): when a listing shows a new version, the name gets a
// new inode, and descriptors opened before keep the old one, with its own
// kernel page cache, size and attributes, so two versions never mix. Open
// checks the manifest against the inode's version; an inode that turns out
// out of date fails with ESTALE, and the kernel looks the name up again and
// retries the open.
//
// # Data path
//
// Open takes the file's manifest (fresh within AttrTimeout) and pins it in
// the file handle, so an open file keeps reading the version it opened:
// from memory or the Store, and from the Remote while the server still has
// that version. Once it has changed, a chunk of the old version that is not
// held locally fails with ESTALE (the server refuses a READ at an old
// version), never with bytes of the new one.
// When the Store is a Pinner (chunkstore.Store is), Open also pins the
// version's chunks in the Store until the handle's Release, so that reads
// of other files that take the Store past its size limit never evict the
// chunks of an open file. Read
// maps the byte range to chunks and takes each from the memory cache, else
// from the Store, else from the Remote. A chunk being loaded has one flight,
// keyed by its hash, that every reader of it waits for: one fetch per chunk
// however many readers want it. Missing consecutive chunks are fetched with
// one ReadChunks call. Sequential access (a read starting where the previous
// one ended, give or take half a MiB or one chunk, whichever is less, for
// kernel requests that arrive out of order) grows a read-ahead window,
// doubling up to Options.ReadAheadMax chunks; any other read resets it. The
// window is fetched in batches of at least a quarter of it, so each
// ReadChunks call carries several chunks and a few are under way at once.
//
// Every chunk is hashed once on its way in, with its manifest's algorithm
// (SHA-256 or BLAKE3, as the primary chose): by the Remote when it declares
// that it verifies what it delivers (transfer.Client does), else by the FS.
// A fetched chunk goes to its readers and the memory cache at once, and to
// the Store through a writer goroutine that writes batches of chunks with
// Store.PutVerified, each with its algorithm (no second hash; Store.Get
// verifies on the way out, with the algorithm the chunk was stored under).
// Until the Store has it, a chunk stays findable in the writer, so it is
// never fetched twice; at most Options.StoreQueueBytes wait, after which
// fetches pause. Close writes every waiting chunk before it returns, and
// FS.Flush waits for them.
//
// # Background fetches
//
// FS.FetchBackground (background.go) brings chunks of a file into the
// Store for background work such as prefetch: it skips the chunks the Store
// holds without reading them, joins loads under way, and fetches the rest
// through the same flights and store writer as reads, so a read of a chunk
// being prefetched waits for that fetch instead of starting its own; these
// chunks stay out of the memory cache. Foreground reads come first: a
// reader waiting for a chunk being loaded, and every fetch a read (or its
// read-ahead) started, count as foreground activity, and FetchBackground
// starts no fetch while there is any, nor within ForegroundQuiet of the
// last. The fetches it starts are marked background
// (transfer.WithBackgroundPriority), so the server too holds them back
// while it serves this client's foreground reads; held back, they wait as
// long as other fetches make progress. FS.Stat, FS.List and FS.Manifest
// serve background work the same
// cached (and persisted) metadata as the mounted tree.
//
// # Errors and cancellation
//
// Errors reach the kernel through toErrno: transfer.ErrNotFound is ENOENT,
// ErrNotDir ENOTDIR, ErrPermission and ErrOutsideRoot EACCES, ErrStale
// ESTALE, an interrupted request EINTR, anything else EIO (logged). Remote calls run in goroutines
// owned by the FS (the Remote must return once their ctx is done), and
// waiting for them always ends: a metadata call gives way to the kept
// copy (or fails) once Options.FetchTimeout has passed, and a chunk fetch
// fails once FetchTimeout passes without a chunk arriving, so a reader of
// data that is not cached gets EIO instead of hanging when the server is
// gone, while a slow but steady transfer is not cut. An interrupted reader
// stops waiting at once (EINTR); the load it started goes on for the
// others and for the cache. Close stops these goroutines and waits for
// them.
//
// # Locking
//
// FS.mu guards the chunk flight table and the closed flag. The metadata
// cache's mutex guards its calls in flight and is taken before FS.mu; the
// LRU caches, the store writer and the foreground-activity tracker have
// their own mutexes, taken last. A file handle's mutex guards its
// sequential-access state only.
package fusefs
