package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/transfer"
)

// Status is what the control socket's GET /status returns as JSON and what
// `kwikfs status` prints.
type Status struct {
	Mountpoint string       `json:"mountpoint"`
	Primary    string       `json:"primary"`
	Cache      string       `json:"cache"`
	Uptime     float64      `json:"uptime_seconds"`
	Connected  bool         `json:"connected"`
	Paths      []PathStatus `json:"paths"`
	// PathReportError says why the paths' coordinator fields are absent:
	// the primary did not answer PATH_REPORT in time, refused it, or the
	// daemon holds no session. Empty when it answered.
	PathReportError string               `json:"path_report_error,omitempty"`
	Client          transfer.ClientStats `json:"client"`
	FS              fusefs.Stats         `json:"fs"`
	Store           chunkstore.Stats     `json:"store"`
	// ReadLatency: waits of data frames in reassembly; absent without a
	// session.
	ReadLatency *ReadLatency `json:"read_latency,omitempty"`
	// Prefetch lists the prefetch jobs, by ID (see prefetch.go);
	// Foreground tells how background fetches gave way to reads.
	Prefetch   []prefetch.Progress    `json:"prefetch"`
	Foreground fusefs.ForegroundStats `json:"foreground"`
	// MetricsAddr is the address the Prometheus metrics are served on
	// (Config.Metrics with the port bound); empty without --metrics.
	MetricsAddr string `json:"metrics_addr,omitempty"`
}

type statusSource struct {
	primary, mountpoint, cache string
	started                    time.Time
	client                     *transfer.Client
	store                      *chunkstore.Store
	fs                         *fusefs.FS
	prefetch                   *prefetch.Manager // nil: no prefetch API
	metricsAddr                string            // Status.MetricsAddr
}

// status gathers the daemon's status; it asks the primary for its account
// of the paths (see pathStatus), waiting at most PathReportTimeout.
func (s *statusSource) status(ctx context.Context) Status {
	paths, connected, reportErr := s.pathStatus(ctx)
	return Status{
		Connected:       connected,
		Paths:           paths,
		PathReportError: reportErr,
		Mountpoint:      s.mountpoint,
		Primary:         s.primary,
		Cache:           s.cache,
		Uptime:          time.Since(s.started).Seconds(),
		Client:          s.client.Stats(),
		FS:              s.fs.Stats(),
		Store:           s.store.Stats(),
		ReadLatency:     readLatency(s.client),
		Prefetch:        s.prefetchJobs(),
		Foreground:      s.fs.Foreground(),
		MetricsAddr:     s.metricsAddr,
	}
}

// prefetchJobs returns the prefetch jobs, or none without a manager.
func (s *statusSource) prefetchJobs() []prefetch.Progress {
	if s.prefetch == nil {
		return []prefetch.Progress{}
	}
	return s.prefetch.Jobs()
}

// control serves the daemon's HTTP API on a Unix socket.
type control struct {
	srv  *http.Server
	path string
	wg   sync.WaitGroup
}

// startControl listens on the Unix socket at path (replacing a stale socket
// left by a killed daemon) and serves GET /status and the runtime profiles
// under /debug/pprof/.
func startControl(path string, src *statusSource, log *slog.Logger) (*control, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	// The socket's directory, the cache, is private (PrivateDir): no other
	// user can reach the socket, even before the chmod below.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(src.status(r.Context())); err != nil {
			log.Debug("control: write status", "err", err)
		}
	})
	// Profiles of the running daemon, for `curl --unix-socket`.
	if src.prefetch != nil {
		registerPrefetch(mux, src.prefetch, log)
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	c := &control{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket", "err", err)
		}
	}()
	return c, nil
}

// removeStaleSocket removes a socket file nobody listens on. A live socket
// means another daemon uses this cache: that is an error.
func removeStaleSocket(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("control socket %s: another kwikfs daemon is using this cache", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

// Close stops serving and removes the socket file.
func (c *control) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.srv.Shutdown(ctx)
	c.wg.Wait()
	os.Remove(c.path)
	return err
}

// QueryStatus asks the daemon serving the mount that holds path for its
// status (see FindMount).
func QueryStatus(ctx context.Context, path string) (*Status, error) {
	m, err := FindMount(path)
	if err != nil {
		return nil, err
	}
	c := NewControlClient(m.Socket)
	defer c.Close()
	return c.Status(ctx)
}
