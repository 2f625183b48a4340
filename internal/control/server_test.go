package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// staticSource returns one status.
type staticSource struct{ st Status }

func (s staticSource) Status(context.Context) Status { return s.st }

// jobTable is a Prefetcher over a fixed set of jobs; Start refuses paths
// by their name: "bad" (ErrBadRequest), "missing" (ErrNotFound), "closed"
// (ErrUnavailable), "boom" (an error of no kind).
type jobTable map[uint64]PrefetchJob

func (j jobTable) Start(_ context.Context, paths []string) (PrefetchJob, error) {
	if len(paths) == 1 {
		switch paths[0] {
		case "bad":
			return PrefetchJob{}, fmt.Errorf("%w: path %q", ErrBadRequest, "bad")
		case "missing":
			return PrefetchJob{}, fmt.Errorf("stat: %w", ErrNotFound)
		case "closed":
			return PrefetchJob{}, ErrUnavailable
		case "boom":
			return PrefetchJob{}, errors.New("boom")
		}
	}
	return PrefetchJob{ID: 9, Paths: paths, State: JobRunning}, nil
}

func (j jobTable) Jobs() []PrefetchJob {
	return []PrefetchJob{j[1], j[2]}
}

func (j jobTable) Job(id uint64) (PrefetchJob, error) {
	p, ok := j[id]
	if !ok {
		return PrefetchJob{}, fmt.Errorf("%w: job %d", ErrNotFound, id)
	}
	return p, nil
}

func (j jobTable) Cancel(id uint64) (PrefetchJob, error) {
	p, err := j.Job(id)
	if err == nil && p.State == JobRunning {
		p.State = JobCanceled
	}
	return p, err
}

var testJobs = jobTable{
	1: {ID: 1, Paths: []string{"", "a b"}, State: JobRunning, FilesDone: 3, FilesTotal: 9, BytesDone: 3 << 20, BytesTotal: 9 << 20,
		Rate: 1.5, ETASeconds: 4, Created: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)},
	2: {ID: 2, Paths: []string{"x"}, State: JobFailed, FilesFailed: 1, FilesTotal: 1, Error: `"x": boom`,
		Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Finished: time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC), Resumed: 2},
}

// listen serves src and jobs on a socket in a new directory and returns
// the socket and a client of it.
func listen(t *testing.T, src Source, jobs Prefetcher) (string, *Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	s, err := Listen(sock, src, jobs, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := NewClient(sock)
	t.Cleanup(c.Close)
	return sock, c
}

// TestStatusRoundTrip: what the Source returns is what the client gets,
// field for field, and the JSON on the wire carries the version.
func TestStatusRoundTrip(t *testing.T) {
	rate := uint64(12 << 20)
	want := Status{
		Version: Version, Mountpoint: "/mnt/k", Primary: "127.0.0.1:4433", CacheDir: "/c",
		Started: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC), UptimeSeconds: 1.5, Connected: true,
		Paths:    []Path{{ID: 0, Remote: "127.0.0.1:4433", State: "up", RTTMillis: 0.25, BytesDelivered: 7, RateBytesPerSec: &rate}},
		Transfer: Transfer{Requests: 3}, FS: FS{BytesFetched: 1 << 20}, Store: Store{Chunks: 4, Limit: 1 << 30},
		ReadLatency: &ReadLatency{Frames: 5, P99Millis: 2.5}, Foreground: Foreground{BackgroundWaitSeconds: 0.5},
		Prefetch: []PrefetchJob{testJobs[2]},
	}
	_, c := listen(t, staticSource{want}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Status = %+v\nwant %+v", *got, want)
	}
	var raw bytes.Buffer
	if err := c.Get(ctx, "/status", &raw); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"version": 1,`, `"started": "2025-01-02T03:04:05.123456789Z"`, `"finished": "2025-01-02T03:05:00Z"`, `"rate_bytes_per_second": 12582912`} {
		if !strings.Contains(raw.String(), s) {
			t.Errorf("GET /status lacks %s:\n%s", s, raw.String())
		}
	}
	// Absent figures are absent, not null.
	for _, s := range []string{"metrics_addr", "path_report_error", "delivered_chunks_total", "strikes_total", "null"} {
		if strings.Contains(raw.String(), s) {
			t.Errorf("GET /status has %s:\n%s", s, raw.String())
		}
	}
}

// TestClientIgnoresNewFields: a newer daemon may add fields within the
// version; the client reads what it knows.
func TestClientIgnoresNewFields(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version": 1, "primary": "p:1", "added_later_total": 5, "store": {"chunks": 3, "new_bytes": 1}}`)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := NewClient(sock)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil || st.Version != 1 || st.Primary != "p:1" || st.Store.Chunks != 3 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

// TestPrefetchEndpoints: the client's calls reach the Prefetcher and bring
// back its jobs.
func TestPrefetchEndpoints(t *testing.T) {
	_, c := listen(t, staticSource{}, testJobs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := c.StartPrefetch(ctx, []string{"d", "e"})
	if err != nil || j.ID != 9 || !reflect.DeepEqual(j.Paths, []string{"d", "e"}) || j.State != JobRunning || j.Ended() {
		t.Errorf("StartPrefetch = %+v, %v", j, err)
	}
	if j, err := c.Prefetch(ctx, 2); err != nil || !reflect.DeepEqual(j, testJobs[2]) || !j.Ended() {
		t.Errorf("Prefetch(2) = %+v, %v; want %+v", j, err, testJobs[2])
	}
	if js, err := c.Prefetches(ctx); err != nil || !reflect.DeepEqual(js, []PrefetchJob{testJobs[1], testJobs[2]}) {
		t.Errorf("Prefetches = %+v, %v", js, err)
	}
	if j, err := c.CancelPrefetch(ctx, 1); err != nil || j.State != JobCanceled || j.ID != 1 {
		t.Errorf("CancelPrefetch(1) = %+v, %v; want job 1 canceled", j, err)
	}
}

// TestErrorReplies: each kind of error reaches the client as an *Error
// with its status and the daemon's message.
func TestErrorReplies(t *testing.T) {
	sock, c := listen(t, staticSource{}, testJobs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	post := func(body string) error {
		var j PrefetchJob
		resp, err := c.send(ctx, http.MethodPost, "/prefetch", strings.NewReader(body))
		if err == nil {
			defer resp.Body.Close()
			err = json.NewDecoder(resp.Body).Decode(&j)
		}
		return err
	}
	start := func(path string) func() error {
		return func() error { _, err := c.StartPrefetch(ctx, []string{path}); return err }
	}
	for _, tc := range []struct {
		name    string
		do      func() error
		status  int
		message string
	}{
		{"bad path", start("bad"), http.StatusBadRequest, `bad request: path "bad"`},
		{"missing path", start("missing"), http.StatusNotFound, "stat: not found"},
		{"closed", start("closed"), http.StatusServiceUnavailable, "unavailable"},
		{"no kind", start("boom"), http.StatusInternalServerError, "boom"},
		{"unknown job", func() error { _, err := c.Prefetch(ctx, 7); return err }, http.StatusNotFound, "not found: job 7"},
		{"cancel unknown job", func() error { _, err := c.CancelPrefetch(ctx, 7); return err }, http.StatusNotFound, "not found: job 7"},
		{"bad id", func() error { _, err := c.send(ctx, http.MethodGet, "/prefetch/x", nil); return err }, http.StatusBadRequest, `bad request: job id "x"`},
		{"bad body", func() error { return post(`"paths"`) }, http.StatusBadRequest,
			"bad request: json: cannot unmarshal string into Go value of type control.PrefetchRequest"},
	} {
		var e *Error
		if err := tc.do(); !errors.As(err, &e) || e.Status != tc.status || e.Message != tc.message {
			t.Errorf("%s: %v, want an *Error %d %q", tc.name, err, tc.status, tc.message)
		}
	}
	// Without a Prefetcher there are no prefetch endpoints.
	other := filepath.Join(filepath.Dir(sock), "other.sock")
	s, err := Listen(other, staticSource{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c2 := NewClient(other)
	defer c2.Close()
	var e *Error
	if _, err := c2.Prefetches(ctx); !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Message != "404 Not Found" {
		t.Errorf("GET /prefetch without a Prefetcher: %v, want a 404 *Error", err)
	}
}

// TestProfiles: the runtime profiles are served; Get copies them.
func TestProfiles(t *testing.T) {
	_, c := listen(t, staticSource{}, nil)
	var b bytes.Buffer
	if err := c.Get(context.Background(), "/debug/pprof/goroutine?debug=1", &b); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "goroutine profile: total ") {
		t.Errorf("goroutine profile starts %q", b.String()[:min(b.Len(), 60)])
	}
}

// TestSocketLifecycle: the socket is private to its user, a live one is
// not taken over, a stale one is replaced, and Close removes it.
func TestSocketLifecycle(t *testing.T) {
	sock, c := listen(t, staticSource{Status{Version: Version}}, nil)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s has mode %v, want a socket of mode 0600", sock, fi.Mode())
	}
	if s, err := Listen(sock, staticSource{}, nil, nil); err == nil {
		s.Close()
		t.Fatal("Listen on a live socket succeeded")
	} else if !strings.Contains(err.Error(), "another kwikfs daemon is using this cache") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("the first server stopped answering: %v", err)
	}

	// A socket file nobody listens on (a killed daemon's) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	s, err := Listen(stale, staticSource{Status{Primary: "second"}}, nil, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	c2 := NewClient(stale)
	defer c2.Close()
	if st, err := c2.Status(context.Background()); err != nil || st.Primary != "second" {
		t.Errorf("Status over the replaced socket = %+v, %v", st, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
	if _, err := c2.Status(context.Background()); err == nil {
		t.Error("Status after Close succeeded")
	}
}
