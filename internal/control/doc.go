// Package control is the control API of a kwikfs mount daemon: the JSON
// types it answers with, the HTTP server on its Unix socket, the one client
// that `kwikfs status`, `kwikfs prefetch`, the demo and the tests use, and
// how a client finds the daemon from a path inside its mount.
//
// # The contract
//
// Status (GET /status, `kwikfs status --json`) and PrefetchJob (the
// prefetch endpoints) are the API: their JSON names are snake_case, say
// their unit (_bytes, _ms, _seconds, _bytes_per_second) and end in _total
// for counters; times are RFC 3339. Status.Version is Version. Within a
// version fields may be added, never removed, renamed or given another
// meaning; so Client ignores fields it does not know. No type of another
// package is reachable from them: the daemon converts its components'
// figures explicitly. The README's "Status JSON" section documents every
// field, and a test checks that it does.
//
// # Server and daemon
//
// The daemon provides the figures and runs the jobs; the server only
// serves them. Listen takes a Source (the daemon's status) and a
// Prefetcher (its prefetch jobs) and never reaches back into the daemon.
//
// # Finding the daemon
//
// FindMount trusts only the kernel: the path's mount must be listed in
// /proc/self/mountinfo as a fuse.kwikfs mount of the caller (or the caller
// is root), and its root directory names the control socket when asked
// with fusefs.ControlIoctl. Dial and QueryStatus build on it.
//
// # Errors
//
// An error reply of the daemon reaches the client as an *Error with the
// HTTP status and the daemon's message; a daemon that is not there, as the
// dial's error. A Prefetcher chooses the status of its errors by wrapping
// ErrBadRequest, ErrNotFound or ErrUnavailable.
//
// # Cancellation
//
// Every client call honours its ctx. The server passes the request's
// context to Source.Status and Prefetcher.Start; Close waits at most 2 s
// for requests under way.
package control
