package prefetch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kwikfs/kwikfs/internal/backoff"
	"github.com/kwikfs/kwikfs/transfer"
)

// execute runs job j: a first walk counts its files and bytes, a second
// fetches them, FileWorkers files at a time, after the small files of each
// directory were brought in batches (fetchSmall). Files that fail are
// counted and the job goes on; it returns early only when ctx is done
// (context.Cause(ctx)).
func (m *Manager) execute(ctx context.Context, j *job) error {
	j.scanning.Store(true)
	err := m.walk(ctx, j, false, func(_ string, size int64) error {
		j.filesTotal.Add(1)
		j.bytesTotal.Add(size)
		return nil
	})
	j.scanning.Store(false)
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(m.opts.FileWorkers)
	err = m.walk(ctx, j, true, func(p string, _ int64) error {
		g.Go(func() error { return m.fetchFile(ctx, j, p) })
		return nil
	})
	if gerr := g.Wait(); err == nil {
		err = gerr
	}
	return err
}

// walk calls fn for every regular file under j's paths, depth first in
// listing order. A path or directory that cannot be listed is skipped, and
// counted as failed if report is set (in one of the job's two walks). It
// returns early only when ctx is done or fn fails.
func (m *Manager) walk(ctx context.Context, j *job, report bool, fn func(path string, size int64) error) error {
	for _, p := range j.paths {
		a, err := retry(ctx, m, func() (transfer.Attr, error) { return m.fs.Stat(ctx, p) })
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if report {
				j.fail(m, p, err)
			}
			continue
		}
		if err := m.walkEntry(ctx, j, report, p, a, fn); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) walkEntry(ctx context.Context, j *job, report bool, p string, a transfer.Attr, fn func(string, int64) error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	switch {
	case a.IsRegular():
		return fn(p, a.Size)
	case !a.IsDir():
		return nil // symlinks and special files hold no data
	}
	entries, err := retry(ctx, m, func() ([]transfer.Attr, error) { return m.fs.List(ctx, p) })
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if report {
			j.fail(m, p, err)
		}
		return nil
	}
	if report {
		m.fetchSmall(ctx, j, p, entries)
	}
	for _, e := range entries {
		if err := m.walkEntry(ctx, j, report, joinPath(p, e.Name), e, fn); err != nil {
			return err
		}
	}
	return nil
}

// filesBatchBytes bounds the manifests and content one fetchSmall request
// brings (and Options.InFlightBytes does too).
const filesBatchBytes = 4 << 20

// fetchSmall brings the manifests and content of the small files among
// entries, those of directory dir, in batches (FS.FetchFilesBackground),
// ahead of fetchFile for each, which then finds them held: many files per
// round trip instead of two round trips each. It is best effort: what it
// does not bring, fetchFile fetches; a failure is logged, not counted.
func (m *Manager) fetchSmall(ctx context.Context, j *job, dir string, entries []transfer.Attr) {
	weight := min(m.opts.InFlightBytes, filesBatchBytes)
	if err := m.sem.Acquire(ctx, weight); err != nil {
		return
	}
	defer m.sem.Release(weight)
	res, err := m.fs.FetchFilesBackground(ctx, dir, entries, int(weight))
	j.bytesFetched.Add(res.FetchedBytes)
	if err != nil && ctx.Err() == nil {
		m.log.Debug("prefetch: batch of small files", "job", j.id, "dir", dir, "err", err)
	}
}

// fetchFile brings every chunk of regular file p into the store, starting
// again while the server is unavailable or the file changes under it. A
// file that fails for another reason is counted as failed; fetchFile
// returns an error only when ctx is done.
func (m *Manager) fetchFile(ctx context.Context, j *job, p string) error {
	var done atomic.Int64 // bytes of p added to j.bytesDone by this attempt
	_, err := retry(ctx, m, func() (struct{}, error) {
		j.bytesDone.Add(-done.Swap(0)) // an attempt starts the file again
		return struct{}{}, m.fetchFileOnce(ctx, j, p, &done)
	})
	switch {
	case err == nil:
		j.filesDone.Add(1)
		return nil
	case ctx.Err() != nil:
		return context.Cause(ctx)
	default:
		j.fail(m, p, err)
		return nil
	}
}

// fetchFileOnce fetches the chunks of p in runs of about RunBytes, as many
// runs at once as InFlightBytes allows, and adds the bytes of each run
// done to j.bytesDone and *done.
func (m *Manager) fetchFileOnce(ctx context.Context, j *job, p string, done *atomic.Int64) error {
	mf, err := m.fs.Manifest(ctx, p)
	if err != nil {
		return err
	}
	n := mf.NumChunks()
	if n == 0 {
		return nil
	}
	// While the file is being fetched its chunks stay in the store, as
	// those of an open file do.
	defer m.fs.PinFile(mf)()
	per := max(1, int(m.opts.RunBytes/int64(mf.ChunkSize)))
	g, gctx := errgroup.WithContext(ctx)
	var acquireErr error
	for first := 0; first < n; first += per {
		last := min(first+per, n) - 1
		size := mf.ChunkOffset(last) + int64(mf.ChunkLen(last)) - mf.ChunkOffset(first)
		weight := min(size, m.opts.InFlightBytes)
		if err := m.sem.Acquire(gctx, weight); err != nil {
			acquireErr = context.Cause(gctx)
			break
		}
		g.Go(func() error {
			defer m.sem.Release(weight)
			res, err := m.fs.FetchBackground(gctx, p, mf, first, last)
			if err != nil {
				return err
			}
			done.Add(size)
			j.rate.add(time.Now(), j.bytesDone.Add(size))
			j.bytesFetched.Add(res.FetchedBytes)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return acquireErr
}

// fail counts p as failed with err and logs it.
func (j *job) fail(m *Manager, p string, err error) {
	j.filesFailed.Add(1)
	j.setError(fmt.Errorf("%q: %w", p, err))
	m.log.Warn("prefetch: skipped", "job", j.id, "path", p, "err", err)
}

// retry calls op until it succeeds, fails for good or ctx is done. Errors
// wrapping transfer.ErrUnavailable (the server did not answer) are
// retried for as long as it takes, transfer.ErrStale (the file changed
// while it was fetched) staleRetries times, after a back-off doubling from
// RetryMin to RetryMax, each wait jittered (backoff.DefaultJitter). When
// ctx is done it returns context.Cause(ctx).
func retry[T any](ctx context.Context, m *Manager, op func() (T, error)) (T, error) {
	bo := backoff.Backoff{Initial: m.opts.RetryMin, Max: m.opts.RetryMax, Jitter: backoff.DefaultJitter}
	stale := 0
	for {
		v, err := op()
		if err == nil {
			return v, nil
		}
		if ctx.Err() != nil {
			return v, context.Cause(ctx)
		}
		switch {
		case errors.Is(err, transfer.ErrUnavailable):
		case errors.Is(err, transfer.ErrStale) && stale < staleRetries:
			stale++
		default:
			return v, err
		}
		delay := bo.Next()
		m.log.Debug("prefetch: retrying", "after", delay, "err", err)
		if err := backoff.Sleep(ctx, delay); err != nil {
			return v, err
		}
	}
}

// joinPath joins a directory path and a name ("" is the root).
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
