package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/transfer"
)

// snapshot is the daemon's figures at one moment, in its components' own
// types: the metrics read it as it is, the control API through api (see
// api.go).
type snapshot struct {
	Mountpoint string
	Primary    string
	Cache      string
	Started    time.Time
	Uptime     float64 // seconds since Started
	Connected  bool
	Paths      []control.Path
	// PathReportError says why the paths' coordinator fields are absent:
	// the primary did not answer PATH_REPORT in time, refused it, or the
	// daemon holds no session. Empty when it answered.
	PathReportError string
	Client          transfer.ClientStats
	FS              fusefs.Stats
	Store           chunkstore.Stats
	// ReadLatency: waits of data frames in reassembly; nil without a
	// session.
	ReadLatency *control.ReadLatency
	// Prefetch lists the prefetch jobs, by ID; Foreground tells how
	// background fetches gave way to reads.
	Prefetch   []prefetch.Progress
	Foreground fusefs.ForegroundStats
	// MetricsAddr is the address the Prometheus metrics are served on
	// (Config.Metrics with the port bound); empty without --metrics.
	MetricsAddr string
}

// statusSource gathers the daemon's figures from its components.
type statusSource struct {
	primary, mountpoint, cache string
	started                    time.Time
	client                     *transfer.Client
	store                      *chunkstore.Store
	fs                         *fusefs.FS
	prefetch                   *prefetch.Manager // nil: no prefetch API
	metricsAddr                string            // snapshot.MetricsAddr
}

var _ control.Source = (*statusSource)(nil)

// status gathers the daemon's figures; it asks the primary for its account
// of the paths (see pathStatus), waiting at most PathReportTimeout.
func (s *statusSource) status(ctx context.Context) snapshot {
	paths, connected, reportErr := s.pathStatus(ctx)
	return snapshot{
		Connected:       connected,
		Paths:           paths,
		PathReportError: reportErr,
		Mountpoint:      s.mountpoint,
		Primary:         s.primary,
		Cache:           s.cache,
		Started:         s.started,
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

// Status returns the status the control socket serves: status converted
// to the API's types.
func (s *statusSource) Status(ctx context.Context) control.Status {
	return s.status(ctx).api()
}

// prefetchJobs returns the prefetch jobs, or none without a manager.
func (s *statusSource) prefetchJobs() []prefetch.Progress {
	if s.prefetch == nil {
		return []prefetch.Progress{}
	}
	return s.prefetch.Jobs()
}

// startControl serves the control API (package control) on the Unix
// socket at path: the status of src and, if src has a prefetch manager,
// its jobs.
func startControl(path string, src *statusSource, log *slog.Logger) (*control.Server, error) {
	var jobs control.Prefetcher
	if src.prefetch != nil {
		jobs = prefetchAPI{src.prefetch}
	}
	return control.Listen(path, src, jobs, log)
}
