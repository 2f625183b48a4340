package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// expoFamily is one family read back by parseExposition.
type expoFamily struct {
	help, typ string
	hasHelp   bool
	samples   []expoSample
}

type expoSample struct {
	labels map[string]string
	value  float64
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	valueRE      = regexp.MustCompile(`^([+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]Inf|NaN)$`)
)

// parseExposition reads the text exposition format 0.0.4 strictly, as far
// as kwikfs writes it: only HELP and TYPE comments, each at most once per
// family and before its samples; TYPE counter or gauge; every sample after
// its family's TYPE, with a sample name equal to the family name; a
// family's samples contiguous; valid metric and label names; label values
// with only \\, \" and \n escapes; no label twice in a sample and no label
// set twice in a family; counters named _total and never negative or NaN;
// no timestamps, no blank lines, valid UTF-8, a final newline.
func parseExposition(text string) (map[string]*expoFamily, error) {
	if !utf8.ValidString(text) {
		return nil, errors.New("not valid UTF-8")
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		return nil, errors.New("no newline at the end")
	}
	fams := make(map[string]*expoFamily)
	var current string             // family of the previous line
	ended := make(map[string]bool) // families whose lines are over
	seen := make(map[string]map[string]bool)
	family := func(name string) (*expoFamily, error) {
		if !metricNameRE.MatchString(name) {
			return nil, fmt.Errorf("invalid metric name %q", name)
		}
		if name != current {
			if current != "" {
				ended[current] = true
			}
			if ended[name] {
				return nil, fmt.Errorf("family %s: lines not contiguous", name)
			}
			current = name
		}
		f := fams[name]
		if f == nil {
			f = &expoFamily{}
			fams[name] = f
		}
		return f, nil
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(format, args...))
		}
		switch {
		case line == "":
			return nil, fail("blank line")
		case strings.HasPrefix(line, "# HELP "):
			name, doc, ok := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if !ok {
				return nil, fail("HELP without text")
			}
			f, err := family(name)
			if err != nil {
				return nil, fail("%v", err)
			}
			if f.hasHelp || len(f.samples) > 0 {
				return nil, fail("second HELP, or HELP after samples")
			}
			if f.help, err = unescape(doc, false); err != nil {
				return nil, fail("%v", err)
			}
			f.hasHelp = true
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, ok := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			if !ok {
				return nil, fail("TYPE without type")
			}
			f, err := family(name)
			if err != nil {
				return nil, fail("%v", err)
			}
			if f.typ != "" || len(f.samples) > 0 {
				return nil, fail("second TYPE, or TYPE after samples")
			}
			if typ != "counter" && typ != "gauge" {
				return nil, fail("type %q", typ)
			}
			if typ == "counter" && !strings.HasSuffix(name, "_total") {
				return nil, fail("counter not named _total")
			}
			f.typ = typ
		case strings.HasPrefix(line, "#"):
			return nil, fail("unexpected comment")
		default:
			end := strings.IndexAny(line, "{ ")
			if end < 0 {
				return nil, fail("no value")
			}
			name, rest := line[:end], line[end:]
			f, err := family(name)
			if err != nil {
				return nil, fail("%v", err)
			}
			if f.typ == "" {
				return nil, fail("sample before its family's TYPE")
			}
			labels := map[string]string{}
			if strings.HasPrefix(rest, "{") {
				if labels, rest, err = parseLabels(rest[1:]); err != nil {
					return nil, fail("%v", err)
				}
			}
			v, ok := strings.CutPrefix(rest, " ")
			if !ok || !valueRE.MatchString(v) {
				return nil, fail("bad value (or a timestamp) %q", rest)
			}
			val, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fail("%v", err)
			}
			if f.typ == "counter" && !(val >= 0) {
				return nil, fail("counter value %v", val)
			}
			key := canonicalLabels(labels)
			if seen[name] == nil {
				seen[name] = map[string]bool{}
			}
			if seen[name][key] {
				return nil, fail("label set twice in the family")
			}
			seen[name][key] = true
			f.samples = append(f.samples, expoSample{labels: labels, value: val})
		}
	}
	for name, f := range fams {
		if len(f.samples) == 0 {
			return nil, fmt.Errorf("family %s has no samples", name)
		}
	}
	return fams, nil
}

// parseLabels reads `name="value",...}` and returns the labels and what
// follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return nil, "", fmt.Errorf("label without =\" in %q", s)
		}
		name := s[:eq]
		if !labelNameRE.MatchString(name) || strings.HasPrefix(name, "__") {
			return nil, "", fmt.Errorf("invalid label name %q", name)
		}
		if _, dup := labels[name]; dup {
			return nil, "", fmt.Errorf("label %s twice", name)
		}
		s = s[eq+2:]
		// The value ends at the first quote not escaped.
		end := -1
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 {
			return nil, "", errors.New("unterminated label value")
		}
		v, err := unescape(s[:end], true)
		if err != nil {
			return nil, "", err
		}
		labels[name] = v
		s = s[end+1:]
		switch {
		case strings.HasPrefix(s, "}"):
			return labels, s[1:], nil
		case strings.HasPrefix(s, ","):
			s = s[1:]
		default:
			return nil, "", fmt.Errorf("expected , or } at %q", s)
		}
	}
}

// unescape undoes the format's escapes: \\ and \n, and \" in label values.
// A lone newline or any other escape is an error.
func unescape(s string, labelValue bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n':
			return "", errors.New("raw newline")
		case c == '"' && labelValue:
			return "", errors.New("unescaped quote")
		case c != '\\':
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", errors.New("trailing backslash")
		}
		i++
		switch {
		case s[i] == '\\':
			b.WriteByte('\\')
		case s[i] == 'n':
			b.WriteByte('\n')
		case s[i] == '"' && labelValue:
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

func canonicalLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Quote(m[k]))
	}
	return strings.Join(parts, ",")
}

// value returns the sample of family name whose labels are exactly want
// (name=value pairs).
func (f *expoFamily) value(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	wantMap := map[string]string{}
	for i := 0; i+1 < len(want); i += 2 {
		wantMap[want[i]] = want[i+1]
	}
	key := canonicalLabels(wantMap)
	for _, s := range f.samples {
		if canonicalLabels(s.labels) == key {
			return s.value
		}
	}
	t.Fatalf("%s has no sample {%s}", name, key)
	return 0
}

func sample(t *testing.T, fams map[string]*expoFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	return f.value(t, name, labels...)
}

func TestParseExpositionRejects(t *testing.T) {
	const ok = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"
	if _, err := parseExposition(ok); err != nil {
		t.Fatalf("valid input: %v", err)
	}
	for _, bad := range []string{
		"a 1\n",                             // no TYPE
		"# TYPE a_total counter\na_total 1", // no final newline
		"# TYPE a counter\na 1\n",           // counter without _total
		"# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
		"# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
		"# TYPE a gauge\na{x=\"\\t\"} 1\n",
		"# TYPE a gauge\na{x=\"a\"b\"} 1\n",
		"# TYPE a gauge\na{__x=\"1\"} 1\n",
		"# TYPE a gauge\na 1 1234\n", // timestamp
		"# TYPE a gauge\na 0x1p3\n",
		"# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", // not contiguous
		"# TYPE a-b gauge\na-b 1\n",
		"# TYPE a gauge\n# HELP a late\na 1\n# HELP a twice\n",
		"# TYPE a_total counter\na_total -1\n",
		"# TYPE a summary\na 1\n",
	} {
		if _, err := parseExposition(bad); err == nil {
			t.Errorf("parseExposition accepted %q", bad)
		}
	}
}

// testStatus is a status with every figure set and a server address that
// needs escaping.
const evilServer = `10.0.0.2:4433 "mirror" \ back` + "\nslash"

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

func TestStatusMetrics(t *testing.T) {
	st := testStatus()
	var b strings.Builder
	if err := statusMetrics(&st).writeTo(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	fams, err := parseExposition(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "kwikfs_") || !f.hasHelp || f.help == "" {
			t.Errorf("family %s: want the kwikfs_ prefix and a HELP text", name)
		}
	}
	// The escaped address reads back as it was.
	if !strings.Contains(text, `server="10.0.0.2:4433 \"mirror\" \\ back\nslash"`) {
		t.Errorf("server address not escaped as expected:\n%s", text)
	}
	p0 := []string{"path", "0", "server", "127.0.0.1:4433"}
	p1 := []string{"path", "1", "server", evilServer}
	type want struct {
		name   string
		labels []string
		v      float64
	}
	for _, w := range []want{
		{"kwikfs_uptime_seconds", nil, 12.5},
		{"kwikfs_connected", nil, 1},
		{"kwikfs_path_report_ok", nil, 1},
		{"kwikfs_path_up", p0, 1},
		{"kwikfs_path_up", p1, 0},
		{"kwikfs_path_rtt_seconds", p0, 0.01025},
		{"kwikfs_path_rtt_seconds", p1, 0.0005},
		{"kwikfs_path_delivered_bytes_total", p0, 5 << 20},
		{"kwikfs_path_delivered_bytes_total", p1, 3},
		{"kwikfs_path_received_bytes_total", p0, 5<<20 + 100},
		{"kwikfs_path_duplicate_bytes_total", p0, 100},
		{"kwikfs_path_duplicate_bytes_total", p1, 1},
		{"kwikfs_path_rate_bytes_per_second", p0, 12_500_000},
		{"kwikfs_path_chunks_total", p0, 5},
		{"kwikfs_path_data_bytes_total", p0, 5<<20 - 7},
		{"kwikfs_path_strikes_total", p0, 2},
		{"kwikfs_path_in_flight_bytes", p0, 0},
		{"kwikfs_cache_bytes", nil, 5 << 20},
		{"kwikfs_cache_data_bytes", nil, 5<<20 - 7},
		{"kwikfs_cache_chunks", nil, 5},
		{"kwikfs_cache_limit_bytes", nil, 1 << 30},
		{"kwikfs_cache_pinned_bytes", nil, 1 << 20},
		{"kwikfs_cache_hits_total", nil, 4},
		{"kwikfs_cache_misses_total", nil, 6},
		{"kwikfs_cache_evictions_total", nil, 3},
		{"kwikfs_cache_evicted_bytes_total", nil, 3 << 20},
		{"kwikfs_cache_stored_bytes_total", nil, 8<<20 - 7},
		{"kwikfs_cache_corrupt_chunks_total", nil, 1},
		{"kwikfs_memory_cache_bytes", nil, 3 << 20},
		{"kwikfs_memory_cache_hits_total", nil, 11},
		{"kwikfs_store_loads_total", nil, 4},
		{"kwikfs_fetched_bytes_total", nil, 5<<20 - 7},
		{"kwikfs_fetched_chunks_total", nil, 5},
		{"kwikfs_fetch_calls_total", nil, 3},
		{"kwikfs_fetch_errors_total", nil, 1},
		{"kwikfs_fetch_corrupt_refetches_total", nil, 1},
		{"kwikfs_read_ahead_chunks_total", nil, 3},
		{"kwikfs_store_queue_bytes", nil, 1 << 20},
		{"kwikfs_metadata_calls_total", []string{"call", "list"}, 6},
		{"kwikfs_metadata_calls_total", []string{"call", "manifest"}, 7},
		{"kwikfs_metadata_calls_total", []string{"call", "stat"}, 8},
		{"kwikfs_stale_metadata_total", nil, 2},
		{"kwikfs_client_requests_total", nil, 9},
		{"kwikfs_client_corrupt_chunks_total", nil, 1},
		{"kwikfs_client_dials_total", nil, 2},
		{"kwikfs_read_wait_seconds", []string{"frames", "all", "quantile", "0.5"}, 0.0015},
		{"kwikfs_read_wait_seconds", []string{"frames", "all", "quantile", "0.99"}, 0.02},
		{"kwikfs_read_wait_seconds", []string{"frames", "all", "quantile", "1"}, 0.03125},
		{"kwikfs_read_wait_seconds", []string{"frames", "ready", "quantile", "0.5"}, 0.000125},
		{"kwikfs_read_wait_seconds", []string{"frames", "ready", "quantile", "0.99"}, 0.0005},
		{"kwikfs_read_wait_frames_total", []string{"frames", "all"}, 100},
		{"kwikfs_read_wait_frames_total", []string{"frames", "ready"}, 40},
		{"kwikfs_foreground_active", nil, 1},
		{"kwikfs_background_waits_total", nil, 4},
		{"kwikfs_background_wait_seconds_total", nil, 1.5},
		{"kwikfs_prefetch_state", []string{"job_id", "3", "state", "running"}, 1},
		{"kwikfs_prefetch_state", []string{"job_id", "4", "state", "done"}, 1},
		{"kwikfs_prefetch_scanning", []string{"job_id", "3"}, 1},
		{"kwikfs_prefetch_scanning", []string{"job_id", "4"}, 0},
		{"kwikfs_prefetch_files", []string{"job_id", "3", "state", "done"}, 2},
		{"kwikfs_prefetch_files", []string{"job_id", "3", "state", "failed"}, 1},
		{"kwikfs_prefetch_files", []string{"job_id", "3", "state", "total"}, 10},
		{"kwikfs_prefetch_done_bytes", []string{"job_id", "3"}, 100},
		{"kwikfs_prefetch_total_bytes", []string{"job_id", "3"}, 1000},
		{"kwikfs_prefetch_fetched_bytes_total", []string{"job_id", "3"}, 60},
		{"kwikfs_prefetch_fetched_bytes_total", []string{"job_id", "4"}, 7},
		{"kwikfs_prefetch_rate_bytes_per_second", []string{"job_id", "3"}, 2.5},
		{"kwikfs_prefetch_eta_seconds", []string{"job_id", "3"}, 360},
	} {
		if got := sample(t, fams, w.name, w.labels...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	// Path 1 has no coordinator figures: no samples for it.
	for _, name := range []string{"kwikfs_path_rate_bytes_per_second", "kwikfs_path_chunks_total", "kwikfs_path_strikes_total"} {
		if n := len(fams[name].samples); n != 1 {
			t.Errorf("%s has %d samples, want 1 (path 0 only)", name, n)
		}
	}
	types := map[string]string{"kwikfs_path_rtt_seconds": "gauge", "kwikfs_path_strikes_total": "counter", "kwikfs_cache_limit_bytes": "gauge", "kwikfs_prefetch_files": "gauge"}
	for name, typ := range types {
		if fams[name].typ != typ {
			t.Errorf("%s has TYPE %s, want %s", name, fams[name].typ, typ)
		}
	}
}

func TestStatusMetricsWithoutSession(t *testing.T) {
	st := snapshot{Prefetch: []prefetch.Progress{}}
	var b strings.Builder
	if err := statusMetrics(&st).writeTo(&b); err != nil {
		t.Fatal(err)
	}
	fams, err := parseExposition(b.String())
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if v := sample(t, fams, "kwikfs_connected"); v != 0 {
		t.Errorf("kwikfs_connected = %v, want 0", v)
	}
	for name := range fams {
		if strings.HasPrefix(name, "kwikfs_path_") || strings.HasPrefix(name, "kwikfs_read_wait") || strings.HasPrefix(name, "kwikfs_prefetch_") {
			t.Errorf("family %s present without a session or jobs", name)
		}
	}
	if v := sample(t, fams, "kwikfs_fetched_bytes_total"); v != 0 {
		t.Errorf("kwikfs_fetched_bytes_total = %v, want 0", v)
	}
}

func TestMetricSetRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill func(s *metricSet)
	}{
		{"counter without _total", func(s *metricSet) { s.counter("kwikfs_bytes", "h", 1) }},
		{"invalid metric name", func(s *metricSet) { s.gauge("kwikfs-bytes", "h", 1) }},
		{"name starting with a digit", func(s *metricSet) { s.gauge("1kwikfs", "h", 1) }},
		{"reserved label name", func(s *metricSet) { s.gauge("kwikfs_x", "h", 1, label{"__name", "v"}) }},
		{"invalid label name", func(s *metricSet) { s.gauge("kwikfs_x", "h", 1, label{"a-b", "v"}) }},
		{"label twice", func(s *metricSet) { s.gauge("kwikfs_x", "h", 1, label{"a", "1"}, label{"a", "2"}) }},
		{"label set twice", func(s *metricSet) {
			s.gauge("kwikfs_x", "h", 1, label{"a", "1"}, label{"b", "2"})
			s.gauge("kwikfs_x", "h", 2, label{"b", "2"}, label{"a", "1"})
		}},
		{"type changed", func(s *metricSet) { s.gauge("kwikfs_x_total", "h", 1); s.counter("kwikfs_x_total", "h", 1) }},
		{"help changed", func(s *metricSet) { s.gauge("kwikfs_x", "h", 1); s.gauge("kwikfs_x", "other", 1, label{"a", "1"}) }},
	} {
		s := &metricSet{}
		tc.fill(s)
		if err := s.writeTo(io.Discard); err == nil {
			t.Errorf("%s: writeTo accepted it", tc.name)
		}
	}
}

func TestEscapeLabelValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain:4433", "plain:4433"},
		{`a"b`, `a\"b`},
		{`a\b`, `a\\b`},
		{"a\nb", `a\nb`},
		{`\"` + "\n", `\\\"\n`},
		{"bad\xffutf8", "bad\uFFFDutf8"},
	} {
		if got := escapeLabelValue(tc.in); got != tc.want {
			t.Errorf("escapeLabelValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := escapeHelp(`a\b` + "\n\""); got != `a\\b\n"` {
		t.Errorf("escapeHelp = %q", got)
	}
}

func TestFormatMetricValue(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {1073741824, "1073741824"}, {-3, "-3"}, {0.5, "0.5"}, {0.01025, "0.01025"},
		{1 << 60, "1.152921504606847e+18"}, {posInf(), "+Inf"}, {-posInf(), "-Inf"}, {nan(), "NaN"},
	} {
		got := formatMetricValue(tc.in)
		if got != tc.want {
			t.Errorf("formatMetricValue(%v) = %q, want %q", tc.in, got, tc.want)
		}
		if !valueRE.MatchString(got) {
			t.Errorf("formatMetricValue(%v) = %q: not a valid value", tc.in, got)
		}
	}
}

func posInf() float64 { v := 0.0; return 1 / v }
func nan() float64    { v := 0.0; return v / v }

// scrape GETs http://addr/metrics and returns the body, after checking the
// status and Content-Type.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	return string(body)
}

func TestMetricsServer(t *testing.T) {
	m, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadlines := make(chan time.Duration, 1)
	m.serve(func(ctx context.Context) snapshot {
		d, ok := ctx.Deadline()
		if !ok {
			deadlines <- -1
		} else {
			deadlines <- time.Until(d)
		}
		return testStatus()
	}, slog.New(slog.DiscardHandler))
	addr := m.Addr()
	fams, err := parseExposition(scrape(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	if v := sample(t, fams, "kwikfs_path_duplicate_bytes_total", "path", "1", "server", evilServer); v != 1 {
		t.Errorf("duplicates of path 1 = %v, want 1", v)
	}
	if d := <-deadlines; d <= 0 || d > MetricsScrapeTimeout {
		t.Errorf("status asked with %v left, want a deadline within MetricsScrapeTimeout (%v)", d, MetricsScrapeTimeout)
	}
	resp, err := http.Post("http://"+addr+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

func TestListenMetricsBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{"127.0.0.1:99999", "no-port", busy.Addr().String()} {
		m, err := listenMetrics(addr)
		if err == nil {
			m.Close()
			t.Errorf("listenMetrics(%q) succeeded", addr)
		}
	}
	// Closing a listener that never served releases its port.
	m, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := m.Addr()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port of a closed metrics listener still taken: %v", err)
	}
	again.Close()
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

// TestMetricsFromPrimary scrapes a daemon's figures after a read from a
// real primary: the primary's account of path 0 is in the scrape.
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
	m, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.serve(src.status, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { m.Close() })
	fams, err := parseExposition(scrape(t, m.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	p0 := []string{"path", "0", "server", srv.Addr}
	for _, w := range []struct {
		name   string
		labels []string
		v      float64
	}{
		{"kwikfs_connected", nil, 1},
		{"kwikfs_path_report_ok", nil, 1},
		{"kwikfs_path_up", p0, 1},
		{"kwikfs_path_chunks_total", p0, 5},
		{"kwikfs_path_data_bytes_total", p0, 5*cs - 3},
		{"kwikfs_path_strikes_total", p0, 0},
		{"kwikfs_client_dials_total", nil, 1},
	} {
		if got := sample(t, fams, w.name, w.labels...); got != w.v {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.v)
		}
	}
	if v := sample(t, fams, "kwikfs_path_delivered_bytes_total", p0...); v < 5*cs-3 {
		t.Errorf("path 0 delivered %v bytes, less than the file's %d", v, 5*cs-3)
	}
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
	src := realSource(t, c)
	m, err := listenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.serve(src.status, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { m.Close() })
	start := time.Now()
	text := scrape(t, m.Addr())
	took := time.Since(start)
	if took < MetricsScrapeTimeout || took >= PathReportTimeout {
		t.Errorf("scrape took %v, want about MetricsScrapeTimeout (%v), well under PathReportTimeout (%v)", took, MetricsScrapeTimeout, PathReportTimeout)
	}
	fams, err := parseExposition(text)
	if err != nil {
		t.Fatal(err)
	}
	if v := sample(t, fams, "kwikfs_path_report_ok"); v != 0 {
		t.Errorf("kwikfs_path_report_ok = %v, want 0", v)
	}
	if v := sample(t, fams, "kwikfs_path_up", "path", "0", "server", addr); v != 1 {
		t.Errorf("kwikfs_path_up of path 0 = %v, want 1", v)
	}
	for _, name := range []string{"kwikfs_path_chunks_total", "kwikfs_path_strikes_total", "kwikfs_path_rate_bytes_per_second"} {
		if fams[name] != nil {
			t.Errorf("%s present without the primary's answer", name)
		}
	}
	if v := sample(t, fams, "kwikfs_connected"); v != 1 {
		t.Errorf("kwikfs_connected = %v, want 1 (the session is live, only silent)", v)
	}
}
