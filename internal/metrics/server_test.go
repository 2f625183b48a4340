package metrics_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/internal/metrics/metricstest"
)

// fixed is a collector of the families of testFamilies with set values.
type fixed struct {
	set  *metrics.Set
	emit func(e metrics.Emitter)
}

func (f fixed) Describe(ch chan<- *prometheus.Desc) { f.set.Describe(ch) }
func (f fixed) Collect(ch chan<- prometheus.Metric) { f.emit(f.set.Emitter(ch)) }

var testFamilies = []metrics.Family{
	metrics.Counter("kwik_test_requests_total", "Requests, by kind.", "kind"),
	metrics.Gauge("kwik_test_open", "Open now."),
}

func newFixed(emit func(e metrics.Emitter)) fixed {
	return fixed{set: metrics.NewSet(testFamilies...), emit: emit}
}

// TestServerServesRegistry serves a registry with a collector of ours:
// the scrape has its families exactly, the Go and process collectors'
// families, in the text format; other methods are refused; Close stops
// the listener and may be repeated.
func TestServerServesRegistry(t *testing.T) {
	c := newFixed(func(e metrics.Emitter) {
		e.Emit("kwik_test_requests_total", 3, "stat")
		e.Emit("kwik_test_requests_total", 1, "bad \"one\"\n")
		e.Emit("kwik_test_open", 2)
	})
	reg, err := metrics.NewRegistry(c)
	if err != nil {
		t.Fatal(err)
	}
	s, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(reg, slog.New(slog.DiscardHandler))
	url := "http://" + s.Addr() + "/metrics"
	want := metricstest.Exposition(testFamilies, `
		kwik_test_requests_total{kind="stat"} 3
		kwik_test_requests_total{kind="bad \"one\"\n"} 1
		kwik_test_open 2
	`)
	if err := testutil.ScrapeAndCompare(url, strings.NewReader(want), "kwik_test_requests_total", "kwik_test_open"); err != nil {
		t.Error(err)
	}

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain; version=0.0.4; charset=utf-8") {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape does not parse: %v\n%s", err, body)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes", "kwik_test_open"} {
		if fams[name] == nil {
			t.Errorf("no family %s in the scrape", name)
		}
	}

	resp, err = http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %s, want 405", resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", s.Addr())
	}
}

// TestServerGatherError: a collector that emits a family it does not
// have, or the wrong number of label values, fails the scrape with 500.
func TestServerGatherError(t *testing.T) {
	for name, emit := range map[string]func(metrics.Emitter){
		"unknown family": func(e metrics.Emitter) { e.Emit("kwik_test_other", 1) },
		"labels missing": func(e metrics.Emitter) { e.Emit("kwik_test_requests_total", 1) },
	} {
		t.Run(name, func(t *testing.T) {
			reg, err := metrics.NewRegistry(newFixed(emit))
			if err != nil {
				t.Fatal(err)
			}
			s, err := metrics.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Serve(reg, slog.New(slog.DiscardHandler))
			resp, err := http.Get("http://" + s.Addr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				t.Errorf("GET /metrics: %s, want 500", resp.Status)
			}
		})
	}
}

// TestNewRegistryRefusesDuplicates: two collectors of the same families
// cannot share a registry.
func TestNewRegistryRefusesDuplicates(t *testing.T) {
	emit := func(metrics.Emitter) {}
	if _, err := metrics.NewRegistry(newFixed(emit), newFixed(emit)); err == nil {
		t.Fatal("NewRegistry accepted two collectors of the same families")
	}
}

// TestListenBadAddress: an address the server cannot listen on fails
// Listen with an error naming the metrics listener; closing a server that
// never served releases its port.
func TestListenBadAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{"127.0.0.1:99999", "no-port", busy.Addr().String()} {
		s, err := metrics.Listen(addr)
		if err == nil {
			s.Close()
			t.Errorf("Listen(%q) succeeded", addr)
		} else if !strings.HasPrefix(err.Error(), "metrics listener: ") {
			t.Errorf("Listen(%q): %v, want an error naming the metrics listener", addr, err)
		}
	}
	s, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port of a closed metrics server still taken: %v", err)
	}
	again.Close()
}
