// Package prefetch runs kwikfs's background prefetch jobs (layer 6 of
// docs/architecture.md): a job brings every chunk of the regular files under some paths of the
// mounted tree into the local store, so that they read later at local speed
// and without the server.
//
// # Jobs
//
// [Manager.Start] takes paths relative to the exported root (files, or
// directories walked recursively; symlinks are not followed) and returns at
// once; the job runs in a goroutine of the Manager. It walks its paths twice
// through the filesystem's listing cache ([FS.List], which also keeps the
// listings in the store): first to count files and bytes (Progress.Scanning
// is set meanwhile), then to fetch them, [Options].FileWorkers files at a
// time. As the second walk lists a directory, the manifests and content of
// its small files (one chunk at most) come first in batches, many files per
// request ([FS.FetchFilesBackground]: the FILES request), so that a tree of
// small files costs a request per directory rather than two per file.
// For each file it then takes the manifest ([FS.Manifest], kept in the
// store too, so the file opens later without the server) and asks
// [FS.FetchBackground] for its chunks in runs of about [Options].RunBytes.
// The filesystem skips chunks the store holds without reading them, joins
// loads already under way, and fetches the rest exactly as reads do, so a
// chunk is never fetched twice and a foreground read of a chunk being
// prefetched waits for that fetch instead of starting its own.
//
// # Foreground first, bounded memory
//
// Foreground reads pre-empt prefetch: the filesystem starts no background
// fetch while a read waits for the server, or a fetch that reads started is
// under way, nor within fusefs.ForegroundQuiet after; fetches already
// started finish. Jobs together keep at most [Options].InFlightBytes of
// chunks asked for and not yet handed to the store writer (whose own queue
// is bounded by the filesystem), whatever the size of the files: no file is
// ever held whole.
//
// # Resume
//
// Every job has a record in the store (metadata key "prefetch/job/" and
// its ID), written when it starts and when it ends. A job whose record
// says running when [New] loads the records (the daemon was stopped or
// killed under it) starts again by itself, with Progress.Resumed counting
// the restarts. As the store is keyed by chunk hash, the new run fetches
// only the chunks the store lacks; what it finds there counts as done.
// The last [Options].KeepFinished ended jobs are kept and listed.
//
// # Errors and cancellation
//
// A path that does not exist when Start is called fails Start; one that
// disappears later, or a file that cannot be fetched, is counted in
// Progress.FilesFailed (the first error in Progress.Error) and the job
// goes on, ending [StateFailed]. While the server is unavailable
// (transfer.ErrUnavailable) a file or directory is retried with jittered
// back-off for as long as it takes; a file that changed on the server
// during its fetch (transfer.ErrStale) is started again a few times.
// [Manager.Cancel] ends a job [StateCanceled]. [Manager.Close] stops every
// job and waits for its goroutines, leaving running jobs recorded as
// running.
//
// # Locking
//
// Manager.mu guards the job table, the next ID and the closed flag; a
// job's mu guards its state and error text. Counters are atomics. No lock
// is held while calling the FS or the Store, except that records are
// pruned under Manager.mu.
package prefetch
