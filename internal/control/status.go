package control

import "time"

// Version is the version of the JSON of GET /status and of the prefetch
// endpoints, in Status.Version. Fields may be added within a version;
// none is removed, renamed or given another meaning without a new one.
const Version = 1

// Status is what GET /status returns and `kwikfs status --json` prints: the
// state of one mount daemon. Every figure counts from the daemon's start
// unless its doc says otherwise; counters (names ending in _total) only
// grow within that span. The README's "Status JSON" section documents
// every field.
type Status struct {
	// Version is the Version of this JSON, 1.
	Version int `json:"version"`
	// Mountpoint is the absolute path the daemon mounted; Primary the
	// primary's HOST:PORT as given to the mount; CacheDir the absolute
	// cache directory (which holds the control socket).
	Mountpoint string `json:"mountpoint"`
	Primary    string `json:"primary"`
	CacheDir   string `json:"cache_dir"`
	// Started is when the daemon started (RFC 3339 in the JSON);
	// UptimeSeconds the time since then.
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// Connected is set while the daemon holds a live session with the
	// primary.
	Connected bool `json:"connected"`
	// MetricsAddr is the HOST:PORT the Prometheus metrics are served on
	// (the port bound when --metrics asked for port 0); "" (absent from
	// the JSON) without --metrics.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// Paths describes each path of the current session, the primary's
	// first; empty while not connected.
	Paths []Path `json:"paths"`
	// PathReportError says why the primary's per-path figures (Path's
	// pointer fields) are absent: the primary did not answer PATH_REPORT
	// in time, refused it, or the daemon holds no session. "" (absent
	// from the JSON) when it answered.
	PathReportError string       `json:"path_report_error,omitempty"`
	Transfer        Transfer     `json:"transfer"`
	FS              FS           `json:"fs"`
	Store           Store        `json:"store"`
	ReadLatency     *ReadLatency `json:"read_latency,omitempty"`
	Foreground      Foreground   `json:"foreground"`
	// Prefetch lists the prefetch jobs the daemon knows, by ID; empty
	// without any.
	Prefetch []PrefetchJob `json:"prefetch"`
}

// Path is one path of the mount's multipath session. The client's own
// figures are always present and count from the start of the session. The
// primary's figures (pointers) come from its PATH_REPORT answer and are nil
// (absent from the JSON) when it did not answer (see
// Status.PathReportError) or does not know the path.
type Path struct {
	// ID is the kwik path ID: 0 for the primary, then the secondaries.
	ID int `json:"id"`
	// Remote is the peer's address as the client dialled it.
	Remote string `json:"remote"`
	// State is the path's state on the client: "pending", "up", "failed"
	// or "closed".
	State string `json:"state"`
	// Stalled is set when the client closed the path (State "failed")
	// because it received no data for the path stall timeout after it
	// was given work.
	Stalled bool `json:"stalled"`
	// AwaitingDataMillis is, for a secondary path that is up, the age of
	// the oldest command relayed to it since its last data; 0 when it
	// owes none.
	AwaitingDataMillis float64 `json:"awaiting_data_ms"`
	// RTTMillis is the client's smoothed RTT of the path.
	RTTMillis float64 `json:"rtt_ms"`
	// BytesDelivered counts the bytes the path delivered first (accepted
	// into a stream for the first time), metadata replies included.
	BytesDelivered uint64 `json:"delivered_bytes_total"`
	// BytesReceived counts the payload bytes received on the path,
	// duplicates included; Duplicates those that had arrived before by
	// another path.
	BytesReceived uint64 `json:"received_bytes_total"`
	Duplicates    uint64 `json:"duplicate_bytes_total"`

	// RateBytesPerSec is the primary's estimate of the path's goodput;
	// nil also when it has none (a path not up).
	RateBytesPerSec *uint64 `json:"rate_bytes_per_second,omitempty"`
	// ChunksDelivered counts the file chunks of READ replies the primary
	// credits to the path (each chunk of a reply to exactly one path);
	// DataBytesDelivered their bytes.
	ChunksDelivered    *uint64 `json:"delivered_chunks_total,omitempty"`
	DataBytesDelivered *uint64 `json:"delivered_data_bytes_total,omitempty"`
	// Strikes counts the corrupt chunks the path was blamed for.
	Strikes *uint64 `json:"strikes_total,omitempty"`
	// InFlightBytes counts READ reply bytes the primary assigned to the
	// path that the client has not reported delivered yet.
	InFlightBytes *uint64 `json:"in_flight_bytes,omitempty"`
}

// Transfer is the daemon's client of the file protocol: its requests to
// the primary and the sessions it dialled.
type Transfer struct {
	// Requests counts request streams sent.
	Requests int64 `json:"requests_total"`
	// Chunks counts chunks received and verified; DataBytes their bytes
	// (file data only).
	Chunks    int64 `json:"chunks_total"`
	DataBytes int64 `json:"data_bytes_total"`
	// CorruptChunks counts received chunks that failed verification.
	CorruptChunks int64 `json:"corrupt_chunks_total"`
	// Dials counts sessions established; Redials those after the first.
	Dials   int64 `json:"dials_total"`
	Redials int64 `json:"redials_total"`
	// SilentSessions counts sessions closed because they stayed silent
	// for the liveness timeout after a request.
	SilentSessions int64 `json:"silent_sessions_total"`
}

// FS is the filesystem: file data fetched, reads served from memory and
// from the store, metadata asked of the primary.
type FS struct {
	// ChunksFetched and BytesFetched count file data received, verified
	// and accepted (FILES replies' first chunks included).
	ChunksFetched int64 `json:"fetched_chunks_total"`
	BytesFetched  int64 `json:"fetched_bytes_total"`
	// FetchCalls counts chunk fetches asked of the primary; FetchErrors
	// the fetches that failed (their readers got an error);
	// CorruptRefetches the fetches repeated because a chunk failed its
	// hash.
	FetchCalls       int64 `json:"fetch_calls_total"`
	FetchErrors      int64 `json:"fetch_errors_total"`
	CorruptRefetches int64 `json:"corrupt_refetches_total"`
	// StoreHits counts chunks loaded from the store on disk; MemoryHits
	// chunks found in the memory cache; FlightJoins chunk requests that
	// joined a load already under way; ReadAheadChunks chunks that
	// read-ahead loaded.
	StoreHits       int64 `json:"store_loads_total"`
	MemoryHits      int64 `json:"memory_hits_total"`
	FlightJoins     int64 `json:"flight_joins_total"`
	ReadAheadChunks int64 `json:"read_ahead_chunks_total"`
	// ChunksStored counts fetched chunks written to the store;
	// StoreErrors those it refused; StoreWrites the batches they were
	// written in.
	ChunksStored int64 `json:"stored_chunks_total"`
	StoreErrors  int64 `json:"store_errors_total"`
	StoreWrites  int64 `json:"store_writes_total"`
	// PendingChunks and PendingBytes are the fetched chunks waiting to be
	// written to the store now.
	PendingChunks int64 `json:"store_queue_chunks"`
	PendingBytes  int64 `json:"store_queue_bytes"`
	// ListCalls, ManifestCalls and StatCalls count metadata calls made to
	// the primary.
	ListCalls     int64 `json:"list_calls_total"`
	ManifestCalls int64 `json:"manifest_calls_total"`
	StatCalls     int64 `json:"stat_calls_total"`
	// FilesCalls counts FILES calls (manifests and first chunks of files
	// ahead of their opens); FilesManifests, FilesChunks and FilesBytes
	// what they brought (FilesChunks and FilesBytes are part of
	// ChunksFetched and BytesFetched).
	FilesCalls     int64 `json:"files_calls_total"`
	FilesManifests int64 `json:"files_manifests_total"`
	FilesChunks    int64 `json:"files_chunks_total"`
	FilesBytes     int64 `json:"files_bytes_total"`
	// StaleMeta counts listings, manifests and stats served from a kept
	// copy because the primary was unavailable.
	StaleMeta int64 `json:"stale_metadata_total"`
	// MemoryBytes and MemoryChunks are the memory chunk cache now.
	MemoryBytes  int64 `json:"memory_cache_bytes"`
	MemoryChunks int64 `json:"memory_cache_chunks"`
}

// Store is the chunk store on disk (the cache).
type Store struct {
	// Chunks and ChunkBytes are the chunks stored now and their length.
	Chunks     int64 `json:"chunks"`
	ChunkBytes int64 `json:"chunk_bytes"`
	// DiskBytes is the disk space the chunks take, what Limit bounds.
	DiskBytes int64 `json:"disk_bytes"`
	// Limit is the store's size limit (--cache-size); 0 means none.
	Limit int64 `json:"limit_bytes"`
	// PinnedChunks and PinnedBytes (disk space) are the stored chunks
	// pinned by open files and prefetch jobs, never evicted.
	PinnedChunks int64 `json:"pinned_chunks"`
	PinnedBytes  int64 `json:"pinned_bytes"`
	// Evicted and EvictedBytes count the chunks (and their length)
	// removed to keep DiskBytes under Limit.
	Evicted      int64 `json:"evicted_chunks_total"`
	EvictedBytes int64 `json:"evicted_bytes_total"`
	// OverLimit counts writes after which DiskBytes stayed above Limit
	// because every chunk left was pinned.
	OverLimit int64 `json:"over_limit_total"`
	// HolesPunched and PunchedBytes count releases of removed chunks'
	// space by punching holes; SegmentsRemoved segment files deleted.
	HolesPunched    int64 `json:"holes_punched_total"`
	PunchedBytes    int64 `json:"punched_bytes_total"`
	SegmentsRemoved int64 `json:"segments_removed_total"`
	// Hits and Misses count chunk lookups that found a verified chunk and
	// that found none; Corrupt stored chunks that failed verification and
	// were removed.
	Hits    int64 `json:"hits_total"`
	Misses  int64 `json:"misses_total"`
	Corrupt int64 `json:"corrupt_chunks_total"`
	// Puts counts new chunks stored, PutBytes their bytes, PutDups writes
	// of chunks already stored (nothing written).
	Puts     int64 `json:"puts_total"`
	PutBytes int64 `json:"put_bytes_total"`
	PutDups  int64 `json:"duplicate_puts_total"`
	// MetaCorrupt counts metadata records that failed their checksum and
	// were removed.
	MetaCorrupt int64 `json:"corrupt_metadata_total"`
}

// ReadLatency is how long received data frames of the current session
// waited in reassembly before a read returned them: over all frames, and
// over the frames readable on arrival. Quantiles are bucket upper bounds,
// at most 5% above the true value. Status.ReadLatency is nil (absent from
// the JSON) without a session.
type ReadLatency struct {
	Frames      uint64  `json:"frames_total"`
	P50Millis   float64 `json:"p50_ms"`
	P99Millis   float64 `json:"p99_ms"`
	MaxMillis   float64 `json:"max_ms"`
	ReadyFrames uint64  `json:"ready_frames_total"`
	ReadyP50    float64 `json:"ready_p50_ms"`
	ReadyP99    float64 `json:"ready_p99_ms"`
}

// Foreground tells how background (prefetch) fetches gave way to reads.
type Foreground struct {
	// Active is the number of foreground activities now: readers waiting
	// for chunks plus fetches they started.
	Active int64 `json:"active"`
	// BackgroundWaits counts background fetches that waited for
	// foreground activity to end; BackgroundWaitSeconds the time they
	// waited in all.
	BackgroundWaits       int64   `json:"background_waits_total"`
	BackgroundWaitSeconds float64 `json:"background_wait_seconds_total"`
}

// JobState is the state of a prefetch job.
type JobState string

// The states of a prefetch job: running until it ends done (every file in
// the cache), failed (some file could not be fetched) or canceled.
const (
	JobRunning  JobState = "running"
	JobDone     JobState = "done"
	JobFailed   JobState = "failed"
	JobCanceled JobState = "canceled"
)

// PrefetchJob is the progress of one prefetch job: what the prefetch
// endpoints return and Status.Prefetch lists.
type PrefetchJob struct {
	ID uint64 `json:"id"`
	// Paths are the job's paths, relative to the exported root ("" is
	// the root).
	Paths []string `json:"paths"`
	State JobState `json:"state"`
	// Error is the first error of a failed job (or of a running job that
	// failed to fetch some file so far); "" (absent) without one.
	Error string `json:"error,omitempty"`
	// Scanning is set while the job still lists its directories: the
	// totals grow until it ends.
	Scanning bool `json:"scanning"`
	// FilesDone counts files in the cache, FilesFailed files that could
	// not be fetched, FilesTotal all the job's files.
	FilesDone   int64 `json:"done_files"`
	FilesFailed int64 `json:"failed_files"`
	FilesTotal  int64 `json:"total_files"`
	// BytesDone counts the bytes of the files' chunks known to be in the
	// cache; BytesTotal is the size of all files; BytesFetched the bytes
	// the job fetched since it was last started.
	BytesDone    int64 `json:"done_bytes"`
	BytesTotal   int64 `json:"total_bytes"`
	BytesFetched int64 `json:"fetched_bytes"`
	// Rate is the recent rate of BytesDone (the average over the run once
	// ended); ETASeconds the time left at that rate, 0 when unknown or
	// ended.
	Rate       float64 `json:"rate_bytes_per_second"`
	ETASeconds float64 `json:"eta_seconds"`
	// Created is when the job was started; Finished when it ended (zero,
	// absent from the JSON, while it runs). RFC 3339 in the JSON.
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	// Resumed counts the times the job was started again after the daemon
	// stopped with the job unfinished.
	Resumed int64 `json:"resumes"`
}

// Ended reports whether the job has ended.
func (j PrefetchJob) Ended() bool { return j.State != JobRunning }
