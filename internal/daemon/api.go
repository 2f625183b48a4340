package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/control"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/transfer"
)

// The daemon's figures in the control API's types: every field of the
// components' stats is converted here, by name, so that a field added to
// a component reaches the API only when it is added to the API.

// api returns the snapshot as the control API's Status.
func (s snapshot) api() control.Status {
	paths := s.Paths
	if paths == nil {
		paths = []control.Path{}
	}
	jobs := make([]control.PrefetchJob, len(s.Prefetch))
	for i, p := range s.Prefetch {
		jobs[i] = apiJob(p)
	}
	return control.Status{
		Version:         control.Version,
		Mountpoint:      s.Mountpoint,
		Primary:         s.Primary,
		CacheDir:        s.Cache,
		Started:         s.Started,
		UptimeSeconds:   s.Uptime,
		Connected:       s.Connected,
		MetricsAddr:     s.MetricsAddr,
		Paths:           paths,
		PathReportError: s.PathReportError,
		Transfer:        apiTransfer(s.Client),
		FS:              apiFS(s.FS),
		Store:           apiStore(s.Store),
		ReadLatency:     s.ReadLatency,
		Foreground: control.Foreground{
			Active:                int64(s.Foreground.Active),
			BackgroundWaits:       s.Foreground.BackgroundWaits,
			BackgroundWaitSeconds: s.Foreground.BackgroundWaited.Seconds(),
		},
		Prefetch: jobs,
	}
}

func apiTransfer(c transfer.ClientStats) control.Transfer {
	return control.Transfer{
		Requests:       c.Requests,
		Chunks:         c.Chunks,
		DataBytes:      c.DataBytes,
		CorruptChunks:  c.CorruptChunks,
		Dials:          c.Dials,
		Redials:        c.Redials,
		SilentSessions: c.SilentSessions,
	}
}

func apiFS(f fusefs.Stats) control.FS {
	return control.FS{
		ChunksFetched:    f.ChunksFetched,
		BytesFetched:     f.BytesFetched,
		FetchCalls:       f.FetchCalls,
		FetchErrors:      f.FetchErrors,
		CorruptRefetches: f.CorruptRefetches,
		StoreHits:        f.StoreHits,
		MemoryHits:       f.MemoryHits,
		FlightJoins:      f.FlightJoins,
		ReadAheadChunks:  f.ReadAheadChunks,
		ChunksStored:     f.ChunksStored,
		StoreErrors:      f.StoreErrors,
		StoreWrites:      f.StoreWrites,
		PendingChunks:    int64(f.PendingChunks),
		PendingBytes:     f.PendingBytes,
		ListCalls:        f.ListCalls,
		ManifestCalls:    f.ManifestCalls,
		StatCalls:        f.StatCalls,
		FilesCalls:       f.FilesCalls,
		FilesManifests:   f.FilesManifests,
		FilesChunks:      f.FilesChunks,
		FilesBytes:       f.FilesBytes,
		StaleMeta:        f.StaleMeta,
		MemoryBytes:      f.MemoryBytes,
		MemoryChunks:     int64(f.MemoryChunks),
	}
}

func apiStore(s chunkstore.Stats) control.Store {
	return control.Store{
		Chunks:          s.Chunks,
		ChunkBytes:      s.ChunkBytes,
		DiskBytes:       s.DiskBytes,
		Limit:           s.Limit,
		PinnedChunks:    s.PinnedChunks,
		PinnedBytes:     s.PinnedBytes,
		Evicted:         s.Evicted,
		EvictedBytes:    s.EvictedBytes,
		OverLimit:       s.OverLimit,
		HolesPunched:    s.HolesPunched,
		PunchedBytes:    s.PunchedBytes,
		SegmentsRemoved: s.SegmentsRemoved,
		Hits:            s.Hits,
		Misses:          s.Misses,
		Corrupt:         s.Corrupt,
		Puts:            s.Puts,
		PutBytes:        s.PutBytes,
		PutDups:         s.PutDups,
		MetaCorrupt:     s.MetaCorrupt,
	}
}

func apiJob(p prefetch.Progress) control.PrefetchJob {
	return control.PrefetchJob{
		ID:           p.ID,
		Paths:        p.Paths,
		State:        control.JobState(p.State),
		Error:        p.Error,
		Scanning:     p.Scanning,
		FilesDone:    p.FilesDone,
		FilesFailed:  p.FilesFailed,
		FilesTotal:   p.FilesTotal,
		BytesDone:    p.BytesDone,
		BytesTotal:   p.BytesTotal,
		BytesFetched: p.BytesFetched,
		Rate:         p.Rate,
		ETASeconds:   p.ETASeconds,
		Created:      p.Created,
		Finished:     p.Finished,
		Resumed:      int64(p.Resumed),
	}
}

// prefetchAPI serves a prefetch.Manager's jobs to the control API.
type prefetchAPI struct{ m *prefetch.Manager }

var _ control.Prefetcher = prefetchAPI{}

func (a prefetchAPI) Start(ctx context.Context, paths []string) (control.PrefetchJob, error) {
	return apiJobErr(a.m.Start(ctx, paths))
}

func (a prefetchAPI) Jobs() []control.PrefetchJob {
	ps := a.m.Jobs()
	out := make([]control.PrefetchJob, len(ps))
	for i, p := range ps {
		out[i] = apiJob(p)
	}
	return out
}

func (a prefetchAPI) Job(id uint64) (control.PrefetchJob, error) { return apiJobErr(a.m.Job(id)) }

func (a prefetchAPI) Cancel(id uint64) (control.PrefetchJob, error) {
	return apiJobErr(a.m.Cancel(id))
}

// apiJobErr converts a Manager's answer, marking its errors with the
// control API's kinds (which choose the reply's status).
func apiJobErr(p prefetch.Progress, err error) (control.PrefetchJob, error) {
	switch {
	case err == nil:
		return apiJob(p), nil
	case errors.Is(err, prefetch.ErrInvalidPath), errors.Is(err, transfer.ErrNotDir):
		err = fmt.Errorf("%w: %w", control.ErrBadRequest, err)
	case errors.Is(err, prefetch.ErrNotFound), errors.Is(err, transfer.ErrNotFound):
		err = fmt.Errorf("%w: %w", control.ErrNotFound, err)
	case errors.Is(err, prefetch.ErrClosed):
		err = fmt.Errorf("%w: %w", control.ErrUnavailable, err)
	}
	return control.PrefetchJob{}, err
}
