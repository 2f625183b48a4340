package daemon

// Prometheus metrics of a mount (`kwikfs mount --metrics HOST:PORT`).
//
// # Exposition
//
// GET /metrics answers in the Prometheus text exposition format 0.0.4
// (Content-Type "text/plain; version=0.0.4; charset=utf-8"): for each
// family a "# HELP" and a "# TYPE" line, then its samples. Every name starts
// with kwikfs_, says its unit (_bytes, _seconds, _bytes_per_second) and
// counters end in _total. Label values are escaped (backslash, double quote,
// newline) and made valid UTF-8. Families without samples (no session, no
// prefetch job) are left out.
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
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// MetricsScrapeTimeout bounds how long a scrape of /metrics waits for the
// primary's PATH_REPORT answer (much less than PathReportTimeout: a scrape
// must not block on a slow primary).
const MetricsScrapeTimeout = 500 * time.Millisecond

// metricsContentType is the Content-Type of the text exposition format.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// metricType is the TYPE of a metric family. Only the two kwikfs uses are
// defined.
type metricType string

const (
	counterType metricType = "counter"
	gaugeType   metricType = "gauge"
)

// label is one label of a sample.
type label struct{ name, value string }

type metricSample struct {
	labels []label
	value  float64
}

// metricFamily is the samples of one metric name.
type metricFamily struct {
	name, help string
	typ        metricType
	samples    []metricSample
}

// metricSet collects families in the order they are first added.
type metricSet struct {
	fams   []*metricFamily
	byName map[string]*metricFamily
	err    error // first inconsistent add (same name, other type or help)
}

// add appends a sample to the family name, creating it with typ and help.
// Adding to an existing family with another type or help is an error that
// writeTo reports.
func (s *metricSet) add(name string, typ metricType, help string, v float64, labels ...label) {
	if s.byName == nil {
		s.byName = make(map[string]*metricFamily)
	}
	f := s.byName[name]
	if f == nil {
		f = &metricFamily{name: name, help: help, typ: typ}
		s.byName[name] = f
		s.fams = append(s.fams, f)
	} else if f.typ != typ || f.help != help {
		if s.err == nil {
			s.err = fmt.Errorf("metric %s added as %s and as %s", name, f.typ, typ)
		}
		return
	}
	f.samples = append(f.samples, metricSample{labels: labels, value: v})
}

func (s *metricSet) counter(name, help string, v float64, labels ...label) {
	s.add(name, counterType, help, v, labels...)
}

func (s *metricSet) gauge(name, help string, v float64, labels ...label) {
	s.add(name, gaugeType, help, v, labels...)
}

// writeTo writes the set in the text exposition format. It checks what it
// writes: valid metric and label names, counters named _total, no label
// name twice in a sample, no two samples of a family with the same labels;
// on any violation it returns an error and w may hold a partial output.
func (s *metricSet) writeTo(w io.Writer) error {
	if s.err != nil {
		return s.err
	}
	var b bytes.Buffer
	for _, f := range s.fams {
		if len(f.samples) == 0 {
			continue
		}
		if err := f.check(); err != nil {
			return err
		}
		b.WriteString("# HELP ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		b.WriteString(escapeHelp(f.help))
		b.WriteString("\n# TYPE ")
		b.WriteString(f.name)
		b.WriteByte(' ')
		b.WriteString(string(f.typ))
		b.WriteByte('\n')
		for _, smp := range f.samples {
			b.WriteString(f.name)
			if len(smp.labels) > 0 {
				b.WriteByte('{')
				for i, l := range smp.labels {
					if i > 0 {
						b.WriteByte(',')
					}
					b.WriteString(l.name)
					b.WriteString(`="`)
					b.WriteString(escapeLabelValue(l.value))
					b.WriteByte('"')
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(formatMetricValue(smp.value))
			b.WriteByte('\n')
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// check validates a family before it is written.
func (f *metricFamily) check() error {
	if !validMetricName(f.name) {
		return fmt.Errorf("invalid metric name %q", f.name)
	}
	switch f.typ {
	case counterType:
		if !strings.HasSuffix(f.name, "_total") {
			return fmt.Errorf("counter %s: name does not end in _total", f.name)
		}
	case gaugeType:
	default:
		return fmt.Errorf("metric %s: unknown type %q", f.name, f.typ)
	}
	seen := make(map[string]bool, len(f.samples))
	for _, smp := range f.samples {
		names := make([]string, 0, len(smp.labels))
		for _, l := range smp.labels {
			if !validLabelName(l.name) {
				return fmt.Errorf("metric %s: invalid label name %q", f.name, l.name)
			}
			if slices.Contains(names, l.name) {
				return fmt.Errorf("metric %s: label %s twice", f.name, l.name)
			}
			names = append(names, l.name)
		}
		key := labelKey(smp.labels)
		if seen[key] {
			return fmt.Errorf("metric %s: two samples with labels {%s}", f.name, key)
		}
		seen[key] = true
	}
	return nil
}

// labelKey identifies a label set whatever the order of its labels.
func labelKey(labels []label) string {
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = l.name + `="` + escapeLabelValue(l.value) + `"`
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// validMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// validLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]* and does
// not start with "__" (reserved for Prometheus itself).
func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

// escapeLabelValue escapes a label value for use between double quotes;
// invalid UTF-8 becomes U+FFFD.
func escapeLabelValue(v string) string {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	return labelEscaper.Replace(v)
}

// escapeHelp escapes a HELP docstring.
func escapeHelp(v string) string {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	return helpEscaper.Replace(v)
}

// formatMetricValue formats v as the format's float: integers exactly
// (up to 2^53), NaN, +Inf and -Inf by name, others in the shortest form
// that reads back the same.
func formatMetricValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == math.Trunc(v) && math.Abs(v) < 1<<53:
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// statusMetrics turns a status into metric families.
func statusMetrics(st *snapshot) *metricSet {
	s := &metricSet{}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	s.gauge("kwikfs_uptime_seconds", "Time since the mount daemon started.", st.Uptime)
	s.gauge("kwikfs_connected", "1 while the daemon holds a live session with the primary, else 0.", b2f(st.Connected))
	if st.Connected {
		s.gauge("kwikfs_path_report_ok", "1 if the primary answered PATH_REPORT within the scrape timeout (the path_rate, path_chunks, path_data, path_strikes and path_in_flight families are present), else 0.", b2f(st.PathReportError == ""))
	}

	// Per path: client-side figures always, the primary's when it answered.
	for _, p := range st.Paths {
		ls := []label{{"path", strconv.Itoa(p.ID)}, {"server", p.Remote}}
		s.gauge("kwikfs_path_up", "1 while the path is up, else 0 (pending, failed or closed).", b2f(p.State == "up"), ls...)
		s.gauge("kwikfs_path_rtt_seconds", "Smoothed RTT of the path as the client measures it.", p.RTTMillis/1000, ls...)
		s.counter("kwikfs_path_delivered_bytes_total", "Bytes the path delivered first (accepted into a stream for the first time), metadata replies included.", float64(p.BytesDelivered), ls...)
		s.counter("kwikfs_path_received_bytes_total", "Payload bytes received on the path, duplicates included.", float64(p.BytesReceived), ls...)
		s.counter("kwikfs_path_duplicate_bytes_total", "Received bytes that had arrived before by another path.", float64(p.Duplicates), ls...)
		if p.RateBytesPerSec != nil {
			s.gauge("kwikfs_path_rate_bytes_per_second", "The primary coordinator's estimate of the path's goodput.", float64(*p.RateBytesPerSec), ls...)
		}
		if p.ChunksDelivered != nil {
			s.counter("kwikfs_path_chunks_total", "File chunks of READ replies the primary credits to the path in this session.", float64(*p.ChunksDelivered), ls...)
		}
		if p.DataBytesDelivered != nil {
			s.counter("kwikfs_path_data_bytes_total", "Bytes of the file chunks the primary credits to the path in this session.", float64(*p.DataBytesDelivered), ls...)
		}
		if p.Strikes != nil {
			s.counter("kwikfs_path_strikes_total", "Corrupt chunks the path was blamed for in this session.", float64(*p.Strikes), ls...)
		}
		if p.InFlightBytes != nil {
			s.gauge("kwikfs_path_in_flight_bytes", "READ reply bytes assigned to the path not yet reported delivered.", float64(*p.InFlightBytes), ls...)
		}
	}

	// The chunk store on disk.
	sto := st.Store
	s.gauge("kwikfs_cache_bytes", "Disk space the cached chunks take (what --cache-size bounds).", float64(sto.DiskBytes))
	s.gauge("kwikfs_cache_data_bytes", "Total length of the cached chunks.", float64(sto.ChunkBytes))
	s.gauge("kwikfs_cache_chunks", "Chunks in the cache.", float64(sto.Chunks))
	s.gauge("kwikfs_cache_limit_bytes", "The cache's size limit; 0 means no limit.", float64(sto.Limit))
	s.gauge("kwikfs_cache_pinned_bytes", "Disk space of cached chunks pinned by open files and prefetch jobs (never evicted).", float64(sto.PinnedBytes))
	s.counter("kwikfs_cache_hits_total", "Chunk lookups in the cache that found a verified chunk.", float64(sto.Hits))
	s.counter("kwikfs_cache_misses_total", "Chunk lookups in the cache that found nothing.", float64(sto.Misses))
	s.counter("kwikfs_cache_evictions_total", "Chunks evicted to keep the cache under its limit.", float64(sto.Evicted))
	s.counter("kwikfs_cache_evicted_bytes_total", "Length of the chunks evicted to keep the cache under its limit.", float64(sto.EvictedBytes))
	s.counter("kwikfs_cache_stored_bytes_total", "Bytes of new chunks written to the cache.", float64(sto.PutBytes))
	s.counter("kwikfs_cache_corrupt_chunks_total", "Cached chunks that failed verification and were removed.", float64(sto.Corrupt))

	// The filesystem: memory cache, fetches, metadata.
	fs := st.FS
	s.gauge("kwikfs_memory_cache_bytes", "Bytes of verified chunks held in memory.", float64(fs.MemoryBytes))
	s.counter("kwikfs_memory_cache_hits_total", "Chunks read from the memory cache.", float64(fs.MemoryHits))
	s.counter("kwikfs_store_loads_total", "Chunks the filesystem loaded from the cache on disk.", float64(fs.StoreHits))
	s.counter("kwikfs_fetched_bytes_total", "File data bytes fetched from the servers, verified and accepted.", float64(fs.BytesFetched))
	s.counter("kwikfs_fetched_chunks_total", "File chunks fetched from the servers, verified and accepted.", float64(fs.ChunksFetched))
	s.counter("kwikfs_fetch_calls_total", "Chunk fetch requests made to the primary.", float64(fs.FetchCalls))
	s.counter("kwikfs_fetch_errors_total", "Chunk fetches that failed (their readers got an error).", float64(fs.FetchErrors))
	s.counter("kwikfs_fetch_corrupt_refetches_total", "Fetches repeated because a chunk failed its hash.", float64(fs.CorruptRefetches))
	s.counter("kwikfs_read_ahead_chunks_total", "Chunks loaded by read-ahead.", float64(fs.ReadAheadChunks))
	s.gauge("kwikfs_store_queue_bytes", "Fetched bytes waiting to be written to the cache.", float64(fs.PendingBytes))
	for _, m := range []struct {
		call string
		n    int64
	}{{"list", fs.ListCalls}, {"manifest", fs.ManifestCalls}, {"stat", fs.StatCalls}} {
		s.counter("kwikfs_metadata_calls_total", "Metadata calls made to the primary, by call.", float64(m.n), label{"call", m.call})
	}
	s.counter("kwikfs_stale_metadata_total", "Listings, manifests and stats served from a kept copy because the primary was unavailable.", float64(fs.StaleMeta))

	// The transfer client.
	cl := st.Client
	s.counter("kwikfs_client_requests_total", "Request streams sent to the primary.", float64(cl.Requests))
	s.counter("kwikfs_client_corrupt_chunks_total", "Received chunks that failed verification.", float64(cl.CorruptChunks))
	s.counter("kwikfs_client_dials_total", "Sessions established with the primary.", float64(cl.Dials))

	// Read latency of the current session (absent without one).
	if l := st.ReadLatency; l != nil {
		const help = "Wait of received data frames in reassembly before a read returned them, in the current session; frames=ready counts only frames readable on arrival. Quantiles are bucket upper bounds (at most 25% high); quantile 1 is the maximum."
		for _, q := range []struct {
			frames, quantile string
			ms               float64
		}{
			{"all", "0.5", l.P50Millis}, {"all", "0.99", l.P99Millis}, {"all", "1", l.MaxMillis},
			{"ready", "0.5", l.ReadyP50}, {"ready", "0.99", l.ReadyP99},
		} {
			s.gauge("kwikfs_read_wait_seconds", help, q.ms/1000, label{"frames", q.frames}, label{"quantile", q.quantile})
		}
		s.counter("kwikfs_read_wait_frames_total", "Data frames counted by kwikfs_read_wait_seconds in the current session.", float64(l.Frames), label{"frames", "all"})
		s.counter("kwikfs_read_wait_frames_total", "Data frames counted by kwikfs_read_wait_seconds in the current session.", float64(l.ReadyFrames), label{"frames", "ready"})
	}

	// Foreground reads against background fetches.
	fg := st.Foreground
	s.gauge("kwikfs_foreground_active", "Foreground activities now: readers waiting for chunks plus fetches they started.", float64(fg.Active))
	s.counter("kwikfs_background_waits_total", "Background (prefetch) fetches that waited for foreground reads to end.", float64(fg.BackgroundWaits))
	s.counter("kwikfs_background_wait_seconds_total", "Time background fetches waited for foreground reads.", fg.BackgroundWaited.Seconds())

	// Prefetch jobs, one label set per job.
	for _, j := range st.Prefetch {
		id := label{"job_id", strconv.FormatUint(j.ID, 10)}
		s.gauge("kwikfs_prefetch_state", "1 for the job's current state (running, done, failed or canceled).", 1, id, label{"state", string(j.State)})
		s.gauge("kwikfs_prefetch_scanning", "1 while the job still lists its directories (its totals grow), else 0.", b2f(j.Scanning), id)
		s.gauge("kwikfs_prefetch_files", "Files of the job, by state: done (in the cache), failed, total.", float64(j.FilesDone), id, label{"state", "done"})
		s.gauge("kwikfs_prefetch_files", "Files of the job, by state: done (in the cache), failed, total.", float64(j.FilesFailed), id, label{"state", "failed"})
		s.gauge("kwikfs_prefetch_files", "Files of the job, by state: done (in the cache), failed, total.", float64(j.FilesTotal), id, label{"state", "total"})
		s.gauge("kwikfs_prefetch_done_bytes", "Bytes of the job's files known to be in the cache.", float64(j.BytesDone), id)
		s.gauge("kwikfs_prefetch_total_bytes", "Size of all the job's files.", float64(j.BytesTotal), id)
		s.counter("kwikfs_prefetch_fetched_bytes_total", "Bytes the job fetched from the servers since it was last started.", float64(j.BytesFetched), id)
		s.gauge("kwikfs_prefetch_rate_bytes_per_second", "Recent rate of the job's done bytes (the average over the run once ended).", j.Rate, id)
		s.gauge("kwikfs_prefetch_eta_seconds", "Time left at the job's rate; 0 when unknown or ended.", j.ETASeconds, id)
	}
	return s
}

// metricsServer serves /metrics over HTTP. It listens from listenMetrics
// (so that a bad address fails the mount before anything is set up) and
// serves from serve. Both and Close are called by one goroutine (Run).
type metricsServer struct {
	ln        net.Listener
	srv       *http.Server // nil until serve
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// listenMetrics listens on the TCP address addr (HOST:PORT; port 0 picks
// a free one).
func listenMetrics(addr string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	return &metricsServer{ln: ln}, nil
}

// Addr returns the address the server listens on.
func (m *metricsServer) Addr() string { return m.ln.Addr().String() }

// serve starts serving GET /metrics with the figures status returns; status
// gets a context that ends after MetricsScrapeTimeout (or when the scraper
// goes away).
func (m *metricsServer) serve(status func(context.Context) snapshot, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), MetricsScrapeTimeout)
		defer cancel()
		st := status(ctx)
		var b bytes.Buffer
		if err := statusMetrics(&st).writeTo(&b); err != nil {
			log.Error("metrics: encode", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", metricsContentType)
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		if _, err := w.Write(b.Bytes()); err != nil {
			log.Debug("metrics: write", "err", err)
		}
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
}

// Close stops serving (waiting up to 2 s for scrapes under way) and closes
// the listener. It may be called more than once; later calls return the
// first one's result.
func (m *metricsServer) Close() error {
	m.closeOnce.Do(func() {
		if m.srv == nil {
			m.closeErr = m.ln.Close()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.closeErr = m.srv.Shutdown(ctx)
		m.wg.Wait()
	})
	return m.closeErr
}
