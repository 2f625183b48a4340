package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// scrapeMetrics GETs http://addr/metrics and returns its samples keyed by
// the series as written (`name` or `name{l="v",...}`). The exposition
// format itself is checked strictly by the daemon package's unit tests.
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
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
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
