package daemon

// Prometheus metrics of a mount (`kwikfs mount --metrics HOST:PORT`).
//
// # Exposition
//
// GET /metrics answers through client_golang's promhttp (package
// internal/metrics): the text exposition format unless the scraper asks
// for another. Every family of the mount starts with kwikfs_; the Go
// runtime's (go_...) and the process's (process_...: CPU, memory) follow.
// Families without samples (no session, no prefetch job) are left out.
//
// # Source
//
// A scrape takes the figures of GET /status (statusSource.status), so both
// agree, but waits at most MetricsScrapeTimeout for the primary's account
// of the paths: when the primary is slow or gone, the coordinator figures
// (rate, chunks, data bytes, strikes, in flight) are left out of that
// scrape and kwikfs_path_report_ok is 0.
//
// # Finding the address
//
// With --metrics 127.0.0.1:0 the kernel picks the port: the bound address
// is in GET /status as "metrics_addr" (`kwikfs status --json`) and in the
// daemon's info log line "metrics" (addr=...).

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kwikfs/kwikfs/internal/metrics"
)

// MetricsScrapeTimeout bounds how long a scrape of /metrics waits for the
// primary's PATH_REPORT answer (much less than PathReportTimeout: a scrape
// must not block on a slow primary).
const MetricsScrapeTimeout = 500 * time.Millisecond

const readWaitHelp = "Wait of received data frames in reassembly before a read returned them, in the current session; frames=ready counts only frames readable on arrival. Quantiles are bucket upper bounds (at most 25% high); quantile 1 is the maximum."

// statusFamilies are the families of a statusCollector. Labels: path is
// the path's ID, server the address of its server; job_id a prefetch
// job's ID.
var statusFamilies = []metrics.Family{
	metrics.Gauge("kwikfs_uptime_seconds", "Time since the mount daemon started."),
	metrics.Gauge("kwikfs_connected", "1 while the daemon holds a live session with the primary, else 0."),
	metrics.Gauge("kwikfs_path_report_ok", "1 if the primary answered PATH_REPORT within the scrape timeout (the path_rate, path_chunks, path_data, path_strikes and path_in_flight families are present), else 0."),

	metrics.Gauge("kwikfs_path_up", "1 while the path is up, else 0 (pending, failed or closed).", "path", "server"),
	metrics.Gauge("kwikfs_path_rtt_seconds", "Smoothed RTT of the path as the client measures it.", "path", "server"),
	metrics.Counter("kwikfs_path_delivered_bytes_total", "Bytes the path delivered first (accepted into a stream for the first time), metadata replies included.", "path", "server"),
	metrics.Counter("kwikfs_path_received_bytes_total", "Payload bytes received on the path, duplicates included.", "path", "server"),
	metrics.Counter("kwikfs_path_duplicate_bytes_total", "Received bytes that had arrived before by another path.", "path", "server"),
	metrics.Gauge("kwikfs_path_rate_bytes_per_second", "The primary coordinator's estimate of the path's goodput.", "path", "server"),
	metrics.Counter("kwikfs_path_chunks_total", "File chunks of READ replies the primary credits to the path in this session.", "path", "server"),
	metrics.Counter("kwikfs_path_data_bytes_total", "Bytes of the file chunks the primary credits to the path in this session.", "path", "server"),
	metrics.Counter("kwikfs_path_strikes_total", "Corrupt chunks the path was blamed for in this session.", "path", "server"),
	metrics.Gauge("kwikfs_path_in_flight_bytes", "READ reply bytes assigned to the path not yet reported delivered.", "path", "server"),

	metrics.Gauge("kwikfs_cache_bytes", "Disk space the cached chunks take (what --cache-size bounds)."),
	metrics.Gauge("kwikfs_cache_data_bytes", "Total length of the cached chunks."),
	metrics.Gauge("kwikfs_cache_chunks", "Chunks in the cache."),
	metrics.Gauge("kwikfs_cache_limit_bytes", "The cache's size limit; 0 means no limit."),
	metrics.Gauge("kwikfs_cache_pinned_bytes", "Disk space of cached chunks pinned by open files and prefetch jobs (never evicted)."),
	metrics.Counter("kwikfs_cache_hits_total", "Chunk lookups in the cache that found a verified chunk."),
	metrics.Counter("kwikfs_cache_misses_total", "Chunk lookups in the cache that found nothing."),
	metrics.Counter("kwikfs_cache_evictions_total", "Chunks evicted to keep the cache under its limit."),
	metrics.Counter("kwikfs_cache_evicted_bytes_total", "Length of the chunks evicted to keep the cache under its limit."),
	metrics.Counter("kwikfs_cache_stored_bytes_total", "Bytes of new chunks written to the cache."),
	metrics.Counter("kwikfs_cache_corrupt_chunks_total", "Cached chunks that failed verification and were removed."),

	metrics.Gauge("kwikfs_memory_cache_bytes", "Bytes of verified chunks held in memory."),
	metrics.Counter("kwikfs_memory_cache_hits_total", "Chunks read from the memory cache."),
	metrics.Counter("kwikfs_store_loads_total", "Chunks the filesystem loaded from the cache on disk."),
	metrics.Counter("kwikfs_fetched_bytes_total", "File data bytes fetched from the servers, verified and accepted."),
	metrics.Counter("kwikfs_fetched_chunks_total", "File chunks fetched from the servers, verified and accepted."),
	metrics.Counter("kwikfs_fetch_calls_total", "Chunk fetch requests made to the primary."),
	metrics.Counter("kwikfs_fetch_errors_total", "Chunk fetches that failed (their readers got an error)."),
	metrics.Counter("kwikfs_fetch_corrupt_refetches_total", "Fetches repeated because a chunk failed its hash."),
	metrics.Counter("kwikfs_read_ahead_chunks_total", "Chunks loaded by read-ahead."),
	metrics.Gauge("kwikfs_store_queue_bytes", "Fetched bytes waiting to be written to the cache."),
	metrics.Counter("kwikfs_metadata_calls_total", "Metadata calls made to the primary, by call.", "call"),
	metrics.Counter("kwikfs_stale_metadata_total", "Listings, manifests and stats served from a kept copy because the primary was unavailable."),

	metrics.Counter("kwikfs_client_requests_total", "Request streams sent to the primary."),
	metrics.Counter("kwikfs_client_corrupt_chunks_total", "Received chunks that failed verification."),
	metrics.Counter("kwikfs_client_dials_total", "Sessions established with the primary."),

	metrics.Gauge("kwikfs_read_wait_seconds", readWaitHelp, "frames", "quantile"),
	metrics.Counter("kwikfs_read_wait_frames_total", "Data frames counted by kwikfs_read_wait_seconds in the current session.", "frames"),

	metrics.Gauge("kwikfs_foreground_active", "Foreground activities now: readers waiting for chunks plus fetches they started."),
	metrics.Counter("kwikfs_background_waits_total", "Background (prefetch) fetches that waited for foreground reads to end."),
	metrics.Counter("kwikfs_background_wait_seconds_total", "Time background fetches waited for foreground reads."),

	metrics.Gauge("kwikfs_prefetch_state", "1 for the job's current state (running, done, failed or canceled).", "job_id", "state"),
	metrics.Gauge("kwikfs_prefetch_scanning", "1 while the job still lists its directories (its totals grow), else 0.", "job_id"),
	metrics.Gauge("kwikfs_prefetch_files", "Files of the job, by state: done (in the cache), failed, total.", "job_id", "state"),
	metrics.Gauge("kwikfs_prefetch_done_bytes", "Bytes of the job's files known to be in the cache.", "job_id"),
	metrics.Gauge("kwikfs_prefetch_total_bytes", "Size of all the job's files.", "job_id"),
	metrics.Counter("kwikfs_prefetch_fetched_bytes_total", "Bytes the job fetched from the servers since it was last started.", "job_id"),
	metrics.Gauge("kwikfs_prefetch_rate_bytes_per_second", "Recent rate of the job's done bytes (the average over the run once ended).", "job_id"),
	metrics.Gauge("kwikfs_prefetch_eta_seconds", "Time left at the job's rate; 0 when unknown or ended.", "job_id"),
}

// statusCollector collects a mount's figures from one status per scrape.
type statusCollector struct {
	// status returns the daemon's status; it gets a context that ends
	// after MetricsScrapeTimeout.
	status func(context.Context) snapshot
	set    *metrics.Set
}

var _ prometheus.Collector = (*statusCollector)(nil)

func newStatusCollector(status func(context.Context) snapshot) *statusCollector {
	return &statusCollector{status: status, set: metrics.NewSet(statusFamilies...)}
}

// Describe sends the descriptions of statusFamilies.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect sends the figures of one status, taken waiting at most
// MetricsScrapeTimeout for the primary.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), MetricsScrapeTimeout)
	defer cancel()
	st := c.status(ctx)
	emitStatus(c.set.Emitter(ch), &st)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// emitStatus sends the samples of st.
func emitStatus(e metrics.Emitter, st *snapshot) {
	e.Emit("kwikfs_uptime_seconds", st.Uptime)
	e.Emit("kwikfs_connected", b2f(st.Connected))
	if st.Connected {
		e.Emit("kwikfs_path_report_ok", b2f(st.PathReportError == ""))
	}

	// Per path: client-side figures always, the primary's when it answered.
	for _, p := range st.Paths {
		id, srv := strconv.Itoa(p.ID), p.Remote
		e.Emit("kwikfs_path_up", b2f(p.State == "up"), id, srv)
		e.Emit("kwikfs_path_rtt_seconds", p.RTTMillis/1000, id, srv)
		e.Emit("kwikfs_path_delivered_bytes_total", float64(p.BytesDelivered), id, srv)
		e.Emit("kwikfs_path_received_bytes_total", float64(p.BytesReceived), id, srv)
		e.Emit("kwikfs_path_duplicate_bytes_total", float64(p.Duplicates), id, srv)
		for _, f := range []struct {
			name string
			v    *uint64
		}{
			{"kwikfs_path_rate_bytes_per_second", p.RateBytesPerSec},
			{"kwikfs_path_chunks_total", p.ChunksDelivered},
			{"kwikfs_path_data_bytes_total", p.DataBytesDelivered},
			{"kwikfs_path_strikes_total", p.Strikes},
			{"kwikfs_path_in_flight_bytes", p.InFlightBytes},
		} {
			if f.v != nil {
				e.Emit(f.name, float64(*f.v), id, srv)
			}
		}
	}

	// The chunk store on disk.
	sto := st.Store
	e.Emit("kwikfs_cache_bytes", float64(sto.DiskBytes))
	e.Emit("kwikfs_cache_data_bytes", float64(sto.ChunkBytes))
	e.Emit("kwikfs_cache_chunks", float64(sto.Chunks))
	e.Emit("kwikfs_cache_limit_bytes", float64(sto.Limit))
	e.Emit("kwikfs_cache_pinned_bytes", float64(sto.PinnedBytes))
	e.Emit("kwikfs_cache_hits_total", float64(sto.Hits))
	e.Emit("kwikfs_cache_misses_total", float64(sto.Misses))
	e.Emit("kwikfs_cache_evictions_total", float64(sto.Evicted))
	e.Emit("kwikfs_cache_evicted_bytes_total", float64(sto.EvictedBytes))
	e.Emit("kwikfs_cache_stored_bytes_total", float64(sto.PutBytes))
	e.Emit("kwikfs_cache_corrupt_chunks_total", float64(sto.Corrupt))

	// The filesystem: memory cache, fetches, metadata.
	fs := st.FS
	e.Emit("kwikfs_memory_cache_bytes", float64(fs.MemoryBytes))
	e.Emit("kwikfs_memory_cache_hits_total", float64(fs.MemoryHits))
	e.Emit("kwikfs_store_loads_total", float64(fs.StoreHits))
	e.Emit("kwikfs_fetched_bytes_total", float64(fs.BytesFetched))
	e.Emit("kwikfs_fetched_chunks_total", float64(fs.ChunksFetched))
	e.Emit("kwikfs_fetch_calls_total", float64(fs.FetchCalls))
	e.Emit("kwikfs_fetch_errors_total", float64(fs.FetchErrors))
	e.Emit("kwikfs_fetch_corrupt_refetches_total", float64(fs.CorruptRefetches))
	e.Emit("kwikfs_read_ahead_chunks_total", float64(fs.ReadAheadChunks))
	e.Emit("kwikfs_store_queue_bytes", float64(fs.PendingBytes))
	e.Emit("kwikfs_metadata_calls_total", float64(fs.ListCalls), "list")
	e.Emit("kwikfs_metadata_calls_total", float64(fs.ManifestCalls), "manifest")
	e.Emit("kwikfs_metadata_calls_total", float64(fs.StatCalls), "stat")
	e.Emit("kwikfs_stale_metadata_total", float64(fs.StaleMeta))

	// The transfer client.
	cl := st.Client
	e.Emit("kwikfs_client_requests_total", float64(cl.Requests))
	e.Emit("kwikfs_client_corrupt_chunks_total", float64(cl.CorruptChunks))
	e.Emit("kwikfs_client_dials_total", float64(cl.Dials))

	// Read latency of the current session (absent without one).
	if l := st.ReadLatency; l != nil {
		for _, q := range []struct {
			frames, quantile string
			ms               float64
		}{
			{"all", "0.5", l.P50Millis}, {"all", "0.99", l.P99Millis}, {"all", "1", l.MaxMillis},
			{"ready", "0.5", l.ReadyP50}, {"ready", "0.99", l.ReadyP99},
		} {
			e.Emit("kwikfs_read_wait_seconds", q.ms/1000, q.frames, q.quantile)
		}
		e.Emit("kwikfs_read_wait_frames_total", float64(l.Frames), "all")
		e.Emit("kwikfs_read_wait_frames_total", float64(l.ReadyFrames), "ready")
	}

	// Foreground reads against background fetches.
	fg := st.Foreground
	e.Emit("kwikfs_foreground_active", float64(fg.Active))
	e.Emit("kwikfs_background_waits_total", float64(fg.BackgroundWaits))
	e.Emit("kwikfs_background_wait_seconds_total", fg.BackgroundWaited.Seconds())

	// Prefetch jobs, one label set per job.
	for _, j := range st.Prefetch {
		id := strconv.FormatUint(j.ID, 10)
		e.Emit("kwikfs_prefetch_state", 1, id, string(j.State))
		e.Emit("kwikfs_prefetch_scanning", b2f(j.Scanning), id)
		e.Emit("kwikfs_prefetch_files", float64(j.FilesDone), id, "done")
		e.Emit("kwikfs_prefetch_files", float64(j.FilesFailed), id, "failed")
		e.Emit("kwikfs_prefetch_files", float64(j.FilesTotal), id, "total")
		e.Emit("kwikfs_prefetch_done_bytes", float64(j.BytesDone), id)
		e.Emit("kwikfs_prefetch_total_bytes", float64(j.BytesTotal), id)
		e.Emit("kwikfs_prefetch_fetched_bytes_total", float64(j.BytesFetched), id)
		e.Emit("kwikfs_prefetch_rate_bytes_per_second", j.Rate, id)
		e.Emit("kwikfs_prefetch_eta_seconds", j.ETASeconds, id)
	}
}
