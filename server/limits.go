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
//
// What all sessions share is bounded too, so that no peer can make the
// primary allocate without limit for everyone: LIST, MANIFEST and FILES replies
// hold at most ReplyBudget bytes at once while they are built and sent
// (a listing is measured before it is built, and refused while it is read
// when it exceeds transfer.MaxEntries or transfer.MaxListLen), a reply
// other than READ must be sent whole within ReplyTimeout, encoded MANIFEST
// replies are cached with their manifests (CatalogOptions.ManifestCacheBytes)
// rather than encoded anew for every request, and at most
// CatalogOptions.MaxConcurrentHashes files are hashed at once.
const (
	// DefaultMaxConcurrentRequests is PrimaryOptions.MaxConcurrentRequests'
	// default.
	DefaultMaxConcurrentRequests = 64
	// DefaultRequestTimeout is PrimaryOptions.RequestTimeout's default.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultWriteTimeout is PrimaryOptions.WriteTimeout's default.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultReplyTimeout is PrimaryOptions.ReplyTimeout's default.
	DefaultReplyTimeout = 2 * time.Minute
	// DefaultReplyBudget is PrimaryOptions.ReplyBudget's default.
	DefaultReplyBudget = 64 << 20
	// DefaultManifestCacheEntries is CatalogOptions.ManifestCacheEntries'
	// default.
	DefaultManifestCacheEntries = 4096
	// DefaultManifestCacheBytes is CatalogOptions.ManifestCacheBytes'
	// default.
	DefaultManifestCacheBytes = 128 << 20
	// DefaultMaxConcurrentCommands is
	// SecondaryOptions.MaxConcurrentCommands' default.
	DefaultMaxConcurrentCommands = 64
	// DefaultPieceSize is SecondaryOptions.PieceSize's default.
	DefaultPieceSize = 256 << 10
)
