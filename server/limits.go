package server

import "time"

// Defaults of the PrimaryOptions that bound what one client can hold on a
// primary. With the kwik listener's own limits (kwik.Config: MaxSessions
// sessions per listener, MaxIncomingStreams open streams and the receive
// windows per session, FrameTimeout for frames that never end), they bound
// a session's footprint on the primary: at most MaxConcurrentRequests
// requests served at once, each holding one chunk buffer (the catalog's
// chunk size) while its reply waits for the client's flow-control credit;
// the session's other streams wait in kwik, unread. A request that is not
// whole within RequestTimeout, or a reply that makes no progress for
// WriteTimeout (a client that never reads), has its stream reset, which
// frees its slot.
const (
	// DefaultMaxConcurrentRequests is PrimaryOptions.MaxConcurrentRequests'
	// default.
	DefaultMaxConcurrentRequests = 64
	// DefaultRequestTimeout is PrimaryOptions.RequestTimeout's default.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultWriteTimeout is PrimaryOptions.WriteTimeout's default.
	DefaultWriteTimeout = 30 * time.Second
)
