// Package download copies files and directory trees of a kwikfs export to
// local disk without FUSE: it is what `kwikfs get` runs. Every regular
// file comes through transfer.Client.DownloadFileWith, so every chunk is
// verified against its manifest, over the multipath session of the client
// it is given.
//
// # What goes where
//
// Job.Run takes remote paths (relative to the exported root, "" for the
// root) and a local destination, with the semantics of `cp -r`: one
// remote path and a destination that does not exist make the destination
// the copy; several paths, or a destination that is an existing
// directory, put each path inside it under its base name (the root, which
// has no name of its own, is merged into the destination itself).
// Missing parent directories of the destination are created. While a copy
// of a directory to a new destination is under way it is built in the
// destination's name with transfer.PartSuffix appended, renamed into place
// when every entry arrived; so running the same command again after an
// interruption continues that copy (instead of nesting a second one
// inside the first, as the rule above would), and the destination
// appears only complete, like a file DownloadFile writes. If some entry
// failed, the part directory is left for the next run.
//
// Directories are listed recursively, several at once. Symbolic links are
// kept as links with their targets (never followed), regular files with
// their content, permission bits (setuid, setgid and sticky included) and
// modification times; directories get their permission bits and
// modification times once their contents are written, deepest first.
// Owners are not kept. Other entries the server skips (devices, sockets,
// FIFOs) are not copied.
//
// # Resume
//
// A run fetches only what the destination lacks:
//
//   - A regular file already at the destination with the remote file's
//     size and modification time (to the nanosecond, as DownloadFile sets
//     it) is taken as complete and skipped: its permission bits are
//     corrected if they differ, its content is neither read nor fetched.
//     This is rsync's quick check: a local file changed without changing
//     its size and mtime is not noticed. A destination on a filesystem
//     that cannot store nanosecond mtimes fetches every file again.
//   - Any other file is downloaded with DownloadFileWith, which keeps
//     every chunk of an interrupted attempt's part file (the local name
//     with transfer.PartSuffix) that still verifies, and fetches the rest.
//   - With Options.Store, a chunk the part file lacks is taken from the
//     store when it holds it (keyed by chunk hash, verified against the
//     manifest), and every chunk fetched is added to it.
//
// A file that changes on the server during its download is fetched again
// at its new version (DownloadFile starts over a few times) or fails: a
// file is never written with chunks of two versions.
//
// Files whose names differ only by trailing copies of transfer.PartSuffix
// ("f" and "f.kwikpart") would share a part file if downloaded at once:
// they go in waves, fewer suffixes first.
//
// # Progress and errors
//
// Job.Stats returns the counters of a run in progress (files and bytes
// done of the totals, bytes fetched, and the bytes each server delivered,
// which each file's download returns as transfer.Sources); the caller
// polls it. A file or
// directory that cannot be copied is recorded in Result.Failures, named
// by its remote path, and the run goes on with the others. Run returns an
// error only when it cannot go on: a destination it cannot use, a primary
// that does not answer within Options.ConnectTimeout or whose certificate
// is not trusted, or ctx's end (the error then wraps ctx.Err()).
//
// # Concurrency
//
// Run lists directories and downloads files with Options.Workers
// goroutines at most, all ended before it returns. Stats is safe to call
// at any time, from any goroutine.
package download
