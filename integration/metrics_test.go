package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// scrapeMetrics GETs http://addr/metrics, parses it with expfmt's text
// parser and returns its samples keyed by series: `name`, or
// `name{l1="v1",l2="v2"}` with the labels sorted by name. The families
// themselves are checked exactly by the collectors' unit tests.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %s, Content-Type %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape of %s: %v\n%s", addr, err, body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var v float64
			switch {
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Untyped != nil:
				v = m.GetUntyped().GetValue()
			default:
				continue // summaries and histograms of the Go collector
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			series := name
			if len(labels) > 0 {
				series += "{" + strings.Join(labels, ",") + "}"
			}
			out[series] = v
		}
	}
	return out
}

// metric returns the sample of series, failing the test when it is absent.
func metric(t *testing.T, samples map[string]float64, series string) float64 {
	t.Helper()
	v, ok := samples[series]
	if !ok {
		t.Fatalf("no sample %s", series)
	}
	return v
}

// TestMetricsCopy mounts with --metrics 127.0.0.1:0, finds the bound
// address in `kwikfs status --json` (metrics_addr), copies a random file
// out of the mount and checks the scraped counters against it: the file's
// bytes and chunks fetched exactly once, credited by the primary to path 0,
// and written to the cache. The listener goes away with the daemon.
func TestMetricsCopy(t *testing.T) {
	const chunk = 262144
	const size = 3<<20 + 12345
	const chunks = (size + chunk - 1) / chunk
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "data.bin"), size, 77)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunk))
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"), "--metrics", "127.0.0.1:0")

	addr := m.status(t).MetricsAddr
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("status metrics_addr = %q, want 127.0.0.1 with the bound port", addr)
	}
	before := scrapeMetrics(t, addr)
	if v := metric(t, before, "kwikfs_fetched_bytes_total"); v != 0 {
		t.Fatalf("fetched %v bytes before any read", v)
	}

	dst := filepath.Join(t.TempDir(), "data.bin")
	run(t, time.Minute, "cp", filepath.Join(m.dir, "data.bin"), dst)
	want, err := os.ReadFile(filepath.Join(root, "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the file (err %v)", err)
	}

	// The primary credits the chunks once it has seen the client's last
	// delivery report, and fetched chunks reach the cache in the
	// background: wait (bounded) for both.
	// The first chunk comes with the manifest in a FILES reply at open,
	// not in a READ reply credited to the path.
	fsStats := m.status(t).FS
	readChunks, readBytes := chunks-float64(fsStats.FilesChunks), size-float64(fsStats.FilesBytes)
	if fsStats.FilesChunks != 1 {
		t.Errorf("FILES brought %d chunks, want 1 (the first)", fsStats.FilesChunks)
	}
	p0 := fmt.Sprintf(`{path="0",server="%s"}`, p.addr)
	var s map[string]float64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		if s = scrapeMetrics(t, addr); s["kwikfs_path_chunks_total"+p0] >= readChunks && s["kwikfs_cache_data_bytes"] >= size {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			done = true
		}
	}
	for _, w := range []struct {
		series string
		v      float64
	}{
		{"kwikfs_connected", 1},
		{"kwikfs_path_report_ok", 1},
		{"kwikfs_fetched_bytes_total", size},
		{"kwikfs_fetched_chunks_total", chunks},
		{"kwikfs_fetch_errors_total", 0},
		{"kwikfs_client_corrupt_chunks_total", 0},
		{"kwikfs_path_up" + p0, 1},
		{"kwikfs_path_chunks_total" + p0, readChunks},
		{"kwikfs_path_data_bytes_total" + p0, readBytes},
		{"kwikfs_path_strikes_total" + p0, 0},
		{"kwikfs_path_duplicate_bytes_total" + p0, 0},
		{"kwikfs_cache_data_bytes", size},
		{"kwikfs_cache_chunks", chunks},
		{"kwikfs_cache_stored_bytes_total", size},
		{"kwikfs_cache_evictions_total", 0},
	} {
		if got := metric(t, s, w.series); got != w.v {
			t.Errorf("%s = %v, want %v", w.series, got, w.v)
		}
	}
	// Path 0 carried the file and the metadata replies.
	if v := metric(t, s, "kwikfs_path_delivered_bytes_total"+p0); v <= size {
		t.Errorf("path 0 delivered %v bytes, want more than the file's %d", v, size)
	}
	if v := metric(t, s, "kwikfs_path_rtt_seconds"+p0); v <= 0 || v > 1 {
		t.Errorf("path 0 RTT %v s, want a loopback RTT", v)
	}

	m.unmount(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("metrics listener %s still up after the daemon exited", addr)
	}
}

// TestMetricsBadAddress checks that a --metrics address the daemon cannot
// listen on fails the mount at start-up, with nothing mounted.
func TestMetricsBadAddress(t *testing.T) {
	root := t.TempDir()
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("kwikfs"), "mount", "--primary", p.addr,
		"--ca", filepath.Join(certDir, certgen.CAFile), "--cert", filepath.Join(certDir, certgen.ClientCertFile),
		"--key", filepath.Join(certDir, certgen.ClientKeyFile), "--cache", filepath.Join(t.TempDir(), "cache"),
		"--metrics", "127.0.0.1:99999", mnt).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("kwikfs mount --metrics 127.0.0.1:99999: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "metrics listener") {
		t.Errorf("error does not name the metrics listener:\n%s", out)
	}
	if isMounted(mnt) {
		t.Errorf("%s mounted despite the bad --metrics address", mnt)
	}
}

// metricsLine is the info log line of a server's --metrics address.
var metricsLine = regexp.MustCompile(`level=INFO msg=metrics addr=(\S+)`)

// metricsAddr returns the metrics address s logged at start-up (it must
// run with --log-level info).
func (s *server) metricsAddr(t *testing.T) string {
	t.Helper()
	m := metricsLine.FindStringSubmatch(s.Output())
	if m == nil {
		t.Fatalf("%s logged no metrics address:\n%s", s.name, s.Output())
	}
	if host, port, err := net.SplitHostPort(m[1]); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("%s metrics on %q, want 127.0.0.1 with the bound port", s.name, m[1])
	}
	return m[1]
}

// readSources returns a mounted file's user.kwikfs.sources: bytes of its
// data by server address.
func readSources(t *testing.T, file string) map[string]float64 {
	t.Helper()
	src := run(t, 30*time.Second, "getfattr", "--absolute-names", "--only-values", "-n", "user.kwikfs.sources", file)
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(src, "\n"), "\n") {
		addr, n, ok := strings.Cut(line, " ")
		v, err := strconv.ParseUint(n, 10, 64)
		if !ok || err != nil {
			t.Fatalf("sources line %q in %q", line, src)
		}
		out[addr] = float64(v)
	}
	return out
}

// TestServerMetrics runs kwik-primary and kwik-secondary with --metrics
// 127.0.0.1:0, copies a file out of a mount of them, and checks their
// scrapes against what the mount counted: the primary's requests by type
// against the mount's calls, the bytes it credits to each server against
// the file's user.kwikfs.sources, summing with the FILES bytes to the
// file's size; the secondary's path, completed commands and sent bytes.
func TestServerMetrics(t *testing.T) {
	const chunk = 262144
	const size = 3<<20 + 12345
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "data.bin"), size, 78)
	certDir := certs(t)
	sec := startServer(t, "kwik-secondary", root, certDir, "--metrics", "127.0.0.1:0", "--log-level", "info")
	p := startPrimary(t, root, certDir, "--secondary", sec.addr, "--chunk-size", strconv.Itoa(chunk),
		"--metrics", "127.0.0.1:0", "--log-level", "info")
	pm, sm := p.metricsAddr(t), sec.metricsAddr(t)
	before := scrapeMetrics(t, pm)
	for _, w := range []struct {
		series string
		v      float64
	}{
		{"kwik_primary_sessions_total", 0},
		{`kwik_primary_secondary_paths{secondary="` + sec.addr + `"}`, 0},
		{`kwik_primary_delivered_bytes_total{server="primary"}`, 0},
	} {
		if got := metric(t, before, w.series); got != w.v {
			t.Errorf("before any client: %s = %v, want %v", w.series, got, w.v)
		}
	}
	if v := metric(t, before, "process_resident_memory_bytes"); v <= 0 {
		t.Errorf("process_resident_memory_bytes = %v", v)
	}

	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--xattrs", "--metrics", "127.0.0.1:0")
	dst := filepath.Join(t.TempDir(), "data.bin")
	run(t, time.Minute, "cp", filepath.Join(m.dir, "data.bin"), dst)
	want, err := os.ReadFile(filepath.Join(root, "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the file (err %v)", err)
	}
	src := readSources(t, filepath.Join(m.dir, "data.bin"))

	// The primary credits a READ once the client has reported all of it:
	// wait (bounded) until the credits add up to what the sources say.
	var sumSources float64
	for _, v := range src {
		sumSources += v
	}
	prim := func(s map[string]float64) float64 {
		return s[`kwik_primary_delivered_bytes_total{server="primary"}`] + s[`kwik_primary_delivered_bytes_total{server="`+sec.addr+`"}`]
	}
	var ps map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for ps = scrapeMetrics(t, pm); prim(ps) < sumSources && time.Now().Before(deadline); ps = scrapeMetrics(t, pm) {
		time.Sleep(20 * time.Millisecond)
	}
	// The secondary's commands are done (a late copy may still be under
	// way when the client has all the data).
	deadline = time.Now().Add(10 * time.Second)
	for scrapeMetrics(t, sm)["kwik_secondary_commands_active"] != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// The mount's figures, then the primary's after them: the mount's
	// status asks the primary for a PATH_REPORT, which both then count.
	st := m.status(t)
	ps = scrapeMetrics(t, pm)
	ss := scrapeMetrics(t, sm)
	fs := st.FS
	if fs.BytesFetched != size || float64(fs.FilesBytes)+sumSources != size {
		t.Fatalf("mount fetched %d bytes, %d by FILES and %v by READ (sources %v); want %d in all", fs.BytesFetched, fs.FilesBytes, sumSources, src, size)
	}
	secLabel := `{secondary="` + sec.addr + `"}`
	for _, w := range []struct {
		series string
		v      float64
	}{
		{"kwik_primary_sessions", 1},
		{"kwik_primary_sessions_total", 1},
		// The mount's first STAT (its probe of the primary) is not one
		// of the filesystem's calls.
		{`kwik_primary_requests_total{op="stat"}`, float64(fs.StatCalls + 1)},
		{`kwik_primary_requests_total{op="list"}`, float64(fs.ListCalls)},
		{`kwik_primary_requests_total{op="manifest"}`, float64(fs.ManifestCalls)},
		{`kwik_primary_requests_total{op="files"}`, float64(fs.FilesCalls)},
		{`kwik_primary_requests_total{op="read"}`, float64(fs.FetchCalls)},
		{`kwik_primary_requests_total{op="invalid"}`, 0},
		{"kwik_primary_files_data_bytes_total", float64(fs.FilesBytes)},
		{`kwik_primary_delivered_bytes_total{server="primary"}`, src[p.addr]},
		{`kwik_primary_delivered_bytes_total{server="` + sec.addr + `"}`, src[sec.addr]},
		{"kwik_primary_secondary_paths" + secLabel, 1},
		{"kwik_primary_secondary_paths_added_total" + secLabel, 1},
		{"kwik_primary_strikes_total" + secLabel, 0},
		{`kwik_primary_refusals_total{reason="client_certificate"}`, 0},
		{"kwik_secondary_paths", 1},
		{"kwik_secondary_paths_total", 1},
		{`kwik_secondary_refusals_total{reason="token_invalid"}`, 0},
	} {
		s := ps
		if strings.HasPrefix(w.series, "kwik_secondary_") {
			s = ss
		}
		if got := metric(t, s, w.series); got != w.v {
			t.Errorf("%s = %v, want %v", w.series, got, w.v)
		}
	}
	// Every request the mount sent, and only those.
	var reqs float64
	for series, v := range ps {
		if strings.HasPrefix(series, "kwik_primary_requests_total{") {
			reqs += v
		}
	}
	if reqs != float64(st.Transfer.Requests) {
		t.Errorf("primary counted %v requests, the mount sent %d", reqs, st.Transfer.Requests)
	}
	// What the secondary sent is what the mount received on its path
	// (duplicates included); the primary delegated at least that (a
	// command the client no longer needs is not relayed).
	var received float64
	for _, path := range st.Paths {
		if path.Remote == sec.addr {
			received += float64(path.BytesReceived)
		}
	}
	sent := metric(t, ss, "kwik_secondary_sent_bytes_total")
	if sent != received || sent < src[sec.addr] {
		t.Errorf("secondary sent %v bytes, the mount received %v on its path and credits it with %v", sent, received, src[sec.addr])
	}
	if d := metric(t, ps, "kwik_primary_delegated_bytes_total"+secLabel); d < sent {
		t.Errorf("the primary delegated %v bytes to the secondary, which sent %v", d, sent)
	}
	if src[sec.addr] == 0 || metric(t, ss, `kwik_secondary_commands_total{outcome="completed"}`) == 0 {
		t.Errorf("the secondary delivered %v bytes in %v commands: the work was not shared", src[sec.addr], ss[`kwik_secondary_commands_total{outcome="completed"}`])
	}
	for _, outcome := range []string{"bad_command", "outside_root", "not_found", "short_file", "failed"} {
		if v := metric(t, ss, `kwik_secondary_commands_total{outcome="`+outcome+`"}`); v != 0 {
			t.Errorf("secondary: %v commands %s", v, outcome)
		}
	}

	// The session ends with the mount: the primary sees it go.
	m.unmount(t)
	deadline = time.Now().Add(10 * time.Second)
	for ps = scrapeMetrics(t, pm); ps["kwik_primary_sessions"] != 0 && time.Now().Before(deadline); ps = scrapeMetrics(t, pm) {
		time.Sleep(20 * time.Millisecond)
	}
	if v := metric(t, ps, "kwik_primary_sessions"); v != 0 {
		t.Errorf("kwik_primary_sessions = %v after the mount ended, want 0", v)
	}
	if v := metric(t, ps, "kwik_primary_secondary_paths"+secLabel); v != 0 {
		t.Errorf("%s = %v after the mount ended, want 0", "kwik_primary_secondary_paths"+secLabel, v)
	}
}
