package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/internal/metrics/metricstest"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// evilServer is a server address that needs escaping in a label value.
const evilServer = `10.0.0.2:4433 "mirror" \ back` + "\nslash"

// testStatus is a status with every figure set.
func testStatus() snapshot {
	return snapshot{
		Uptime:    12.5,
		Connected: true,
		Paths: []control.Path{
			{ID: 0, Remote: "127.0.0.1:4433", State: "up", RTTMillis: 10.25, BytesDelivered: 5 << 20, BytesReceived: 5<<20 + 100, Duplicates: 100,
				RateBytesPerSec: ptr[uint64](12_500_000), ChunksDelivered: ptr[uint64](5), DataBytesDelivered: ptr[uint64](5<<20 - 7), Strikes: ptr[uint64](2), InFlightBytes: ptr[uint64](0)},
			{ID: 1, Remote: evilServer, State: "failed", RTTMillis: 0.5, BytesDelivered: 3, BytesReceived: 4, Duplicates: 1},
		},
		Client: transfer.ClientStats{Requests: 9, Chunks: 5, DataBytes: 5 << 20, CorruptChunks: 1, Dials: 2},
		FS: fusefs.Stats{ChunksFetched: 5, BytesFetched: 5<<20 - 7, FetchCalls: 3, FetchErrors: 1, CorruptRefetches: 1, StoreHits: 4, MemoryHits: 11,
			ReadAheadChunks: 3, ListCalls: 6, ManifestCalls: 7, StatCalls: 8, StaleMeta: 2, MemoryBytes: 3 << 20, PendingBytes: 1 << 20},
		Store: chunkstore.Stats{Chunks: 5, ChunkBytes: 5<<20 - 7, DiskBytes: 5 << 20, Limit: 1 << 30, PinnedBytes: 1 << 20, Evicted: 3, EvictedBytes: 3 << 20,
			Hits: 4, Misses: 6, Corrupt: 1, PutBytes: 8<<20 - 7},
		ReadLatency: &control.ReadLatency{Frames: 100, P50Millis: 1.5, P99Millis: 20, MaxMillis: 31.25, ReadyFrames: 40, ReadyP50: 0.125, ReadyP99: 0.5},
		Foreground:  fusefs.ForegroundStats{Active: 1, BackgroundWaits: 4, BackgroundWaited: 1500 * time.Millisecond},
		Prefetch: []prefetch.Progress{
			{ID: 3, State: prefetch.StateRunning, Scanning: true, FilesDone: 2, FilesFailed: 1, FilesTotal: 10, BytesDone: 100, BytesTotal: 1000, BytesFetched: 60, Rate: 2.5, ETASeconds: 360},
			{ID: 4, State: prefetch.StateDone, FilesDone: 1, FilesTotal: 1, BytesDone: 7, BytesTotal: 7, BytesFetched: 7, Rate: 7},
		},
	}
}

// fixedStatus returns a status function that answers st.
func fixedStatus(st snapshot) func(context.Context) snapshot {
	return func(context.Context) snapshot { return st }
}

// compareStatus checks that c collects exactly the samples given of the
// families they name (see metricstest.Compare).
func compareStatus(t *testing.T, c *statusCollector, samples string) {
	t.Helper()
	if err := metricstest.Compare(c, statusFamilies, samples); err != nil {
		t.Error(err)
	}
}

// TestStatusCollector collects a status with every figure set: every
// family, label set and value exactly, the server address escaped.
func TestStatusCollector(t *testing.T) {
	c := newStatusCollector(fixedStatus(testStatus()))
	want := metricstest.Exposition(statusFamilies, `
		kwikfs_uptime_seconds 12.5
		kwikfs_connected 1
		kwikfs_path_report_ok 1
		kwikfs_path_up{path="0",server="127.0.0.1:4433"} 1
		kwikfs_path_up{path="1",server="10.0.0.2:4433 \"mirror\" \\ back\nslash"} 0
		kwikfs_path_rtt_seconds{path="0",server="127.0.0.1:4433"} 0.01025
		kwikfs_path_rtt_seconds{path="1",server="10.0.0.2:4433 \"mirror\" \\ back\nslash"} 0.0005
		kwikfs_path_delivered_bytes_total{path="0",server="127.0.0.1:4433"} 5242880
		kwikfs_path_delivered_bytes_total{path="1",server="10.0.0.2:4433 \"mirror\" \\ back\nslash"} 3
		kwikfs_path_received_bytes_total{path="0",server="127.0.0.1:4433"} 5242980
		kwikfs_path_received_bytes_total{path="1",server="10.0.0.2:4433 \"mirror\" \\ back\nslash"} 4
		kwikfs_path_duplicate_bytes_total{path="0",server="127.0.0.1:4433"} 100
		kwikfs_path_duplicate_bytes_total{path="1",server="10.0.0.2:4433 \"mirror\" \\ back\nslash"} 1
		kwikfs_path_rate_bytes_per_second{path="0",server="127.0.0.1:4433"} 1.25e+07
		kwikfs_path_chunks_total{path="0",server="127.0.0.1:4433"} 5
		kwikfs_path_data_bytes_total{path="0",server="127.0.0.1:4433"} 5242873
		kwikfs_path_strikes_total{path="0",server="127.0.0.1:4433"} 2
		kwikfs_path_in_flight_bytes{path="0",server="127.0.0.1:4433"} 0
		kwikfs_cache_bytes 5242880
		kwikfs_cache_data_bytes 5242873
		kwikfs_cache_chunks 5
		kwikfs_cache_limit_bytes 1073741824
		kwikfs_cache_pinned_bytes 1048576
		kwikfs_cache_hits_total 4
		kwikfs_cache_misses_total 6
		kwikfs_cache_evictions_total 3
		kwikfs_cache_evicted_bytes_total 3145728
		kwikfs_cache_stored_bytes_total 8388601
		kwikfs_cache_corrupt_chunks_total 1
		kwikfs_memory_cache_bytes 3145728
		kwikfs_memory_cache_hits_total 11
		kwikfs_store_loads_total 4
		kwikfs_fetched_bytes_total 5242873
		kwikfs_fetched_chunks_total 5
		kwikfs_fetch_calls_total 3
		kwikfs_fetch_errors_total 1
		kwikfs_fetch_corrupt_refetches_total 1
		kwikfs_read_ahead_chunks_total 3
		kwikfs_store_queue_bytes 1048576
		kwikfs_metadata_calls_total{call="list"} 6
		kwikfs_metadata_calls_total{call="manifest"} 7
		kwikfs_metadata_calls_total{call="stat"} 8
		kwikfs_stale_metadata_total 2
		kwikfs_client_requests_total 9
		kwikfs_client_corrupt_chunks_total 1
		kwikfs_client_dials_total 2
		kwikfs_read_wait_seconds{frames="all",quantile="0.5"} 0.0015
		kwikfs_read_wait_seconds{frames="all",quantile="0.99"} 0.02
		kwikfs_read_wait_seconds{frames="all",quantile="1"} 0.03125
		kwikfs_read_wait_seconds{frames="ready",quantile="0.5"} 0.000125
		kwikfs_read_wait_seconds{frames="ready",quantile="0.99"} 0.0005
		kwikfs_read_wait_frames_total{frames="all"} 100
		kwikfs_read_wait_frames_total{frames="ready"} 40
		kwikfs_foreground_active 1
		kwikfs_background_waits_total 4
		kwikfs_background_wait_seconds_total 1.5
		kwikfs_prefetch_state{job_id="3",state="running"} 1
		kwikfs_prefetch_state{job_id="4",state="done"} 1
		kwikfs_prefetch_scanning{job_id="3"} 1
		kwikfs_prefetch_scanning{job_id="4"} 0
		kwikfs_prefetch_files{job_id="3",state="done"} 2
		kwikfs_prefetch_files{job_id="3",state="failed"} 1
		kwikfs_prefetch_files{job_id="3",state="total"} 10
		kwikfs_prefetch_files{job_id="4",state="done"} 1
		kwikfs_prefetch_files{job_id="4",state="failed"} 0
		kwikfs_prefetch_files{job_id="4",state="total"} 1
		kwikfs_prefetch_done_bytes{job_id="3"} 100
		kwikfs_prefetch_done_bytes{job_id="4"} 7
		kwikfs_prefetch_total_bytes{job_id="3"} 1000
		kwikfs_prefetch_total_bytes{job_id="4"} 7
		kwikfs_prefetch_fetched_bytes_total{job_id="3"} 60
		kwikfs_prefetch_fetched_bytes_total{job_id="4"} 7
		kwikfs_prefetch_rate_bytes_per_second{job_id="3"} 2.5
		kwikfs_prefetch_rate_bytes_per_second{job_id="4"} 7
		kwikfs_prefetch_eta_seconds{job_id="3"} 360
		kwikfs_prefetch_eta_seconds{job_id="4"} 0
	`)
	// Every family, not only those named.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestStatusCollectorWithoutSession collects a status without a session
// or prefetch jobs: no path, read-wait or prefetch family, no
// path_report_ok, the rest at zero.
func TestStatusCollectorWithoutSession(t *testing.T) {
	c := newStatusCollector(fixedStatus(snapshot{Prefetch: []prefetch.Progress{}}))
	for _, name := range []string{"kwikfs_path_report_ok", "kwikfs_path_up", "kwikfs_path_chunks_total", "kwikfs_read_wait_seconds", "kwikfs_prefetch_state"} {
		if n := testutil.CollectAndCount(c, name); n != 0 {
			t.Errorf("%d samples of %s without a session or jobs, want none", n, name)
		}
	}
	// The families always present: 3 overall, 11 of the store, 14 of the
	// filesystem (metadata calls by 3 calls), 3 of the client, 3 of
	// foreground and background.
	if n := testutil.CollectAndCount(c); n != 2+11+14+3+3 {
		t.Errorf("%d samples without a session, want %d", n, 2+11+14+3+3)
	}
	compareStatus(t, c, `
		kwikfs_connected 0
		kwikfs_fetched_bytes_total 0
		kwikfs_metadata_calls_total{call="list"} 0
		kwikfs_metadata_calls_total{call="manifest"} 0
		kwikfs_metadata_calls_total{call="stat"} 0
	`)
}

// TestStatusCollectorDeadline checks that a scrape asks for the status
// with a deadline at most MetricsScrapeTimeout away.
func TestStatusCollectorDeadline(t *testing.T) {
	left := make(chan time.Duration, 1)
	c := newStatusCollector(func(ctx context.Context) snapshot {
		d, ok := ctx.Deadline()
		if !ok {
			left <- -1
		} else {
			left <- time.Until(d)
		}
		return testStatus()
	})
	compareStatus(t, c, "kwikfs_uptime_seconds 12.5")
	if d := <-left; d <= 0 || d > MetricsScrapeTimeout {
		t.Errorf("status asked with %v left, want a deadline within MetricsScrapeTimeout (%v)", d, MetricsScrapeTimeout)
	}
}

// realSource returns a statusSource over a real client, store and FS (not
// mounted).
func realSource(t *testing.T, c *transfer.Client) *statusSource {
	t.Helper()
	store, err := chunkstore.Open(filepath.Join(t.TempDir(), "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fusefs.New(c, store, nil)
	t.Cleanup(func() {
		fsys.Close()
		store.Close()
	})
	return &statusSource{client: c, store: store, fs: fsys, started: time.Now()}
}

// TestMetricsFromPrimary collects a daemon's figures after a read from a
// real primary: the primary's account of path 0 is in them.
func TestMetricsFromPrimary(t *testing.T) {
	root := t.TempDir()
	const cs = transfer.MinChunkSize
	if err := os.WriteFile(filepath.Join(root, "f"), make([]byte, 5*cs-3), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}})
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { c.Close() })
	src := realSource(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mf, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", mf, 0, mf.NumChunks(), func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	col := newStatusCollector(src.status)
	// 5 chunks of 4 KiB (transfer.MinChunkSize), the last 3 bytes short.
	compareStatus(t, col, strings.ReplaceAll(`
		kwikfs_connected 1
		kwikfs_path_report_ok 1
		kwikfs_path_up{path="0",server="ADDR"} 1
		kwikfs_path_chunks_total{path="0",server="ADDR"} 5
		kwikfs_path_data_bytes_total{path="0",server="ADDR"} 20477
		kwikfs_path_strikes_total{path="0",server="ADDR"} 0
		kwikfs_path_in_flight_bytes{path="0",server="ADDR"} 0
		kwikfs_client_dials_total 1
	`, "ADDR", srv.Addr))
}

// TestMetricsPrimarySilent checks that a scrape does not wait for a primary
// that does not answer PATH_REPORT beyond MetricsScrapeTimeout: it reports
// the client's figures and kwikfs_path_report_ok 0.
func TestMetricsPrimarySilent(t *testing.T) {
	addr, b := silentPrimary(t)
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := transfer.NewClient(addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: cliTLS}})
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.Stat(ctx, "")
	cancel()
	if !errors.Is(err, transfer.ErrUnavailable) {
		t.Fatalf("Stat of a silent primary: %v, want ErrUnavailable", err)
	}
	col := newStatusCollector(realSource(t, c).status)
	start := time.Now()
	n := testutil.CollectAndCount(col, "kwikfs_path_chunks_total", "kwikfs_path_strikes_total", "kwikfs_path_rate_bytes_per_second")
	took := time.Since(start)
	if took < MetricsScrapeTimeout || took >= PathReportTimeout {
		t.Errorf("scrape took %v, want about MetricsScrapeTimeout (%v), well under PathReportTimeout (%v)", took, MetricsScrapeTimeout, PathReportTimeout)
	}
	if n != 0 {
		t.Errorf("%d coordinator samples without the primary's answer, want none", n)
	}
	compareStatus(t, col, strings.ReplaceAll(`
		kwikfs_connected 1
		kwikfs_path_report_ok 0
		kwikfs_path_up{path="0",server="ADDR"} 1
	`, "ADDR", addr))
}
