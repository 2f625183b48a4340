package prefetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/transfer"
)

// State is the state of a job.
type State string

// States of a job. A job is running from Start until it ends in one of the
// other three, which are final.
const (
	StateRunning  State = "running"
	StateDone     State = "done"     // every file is in the store
	StateFailed   State = "failed"   // some files or directories could not be fetched (Progress.Error says why)
	StateCanceled State = "canceled" // Cancel stopped it
)

var (
	// ErrNotFound is returned for a job ID the manager does not know.
	ErrNotFound = errors.New("prefetch: no such job")
	// ErrClosed is returned by a closed Manager.
	ErrClosed = errors.New("prefetch: manager closed")
	// ErrInvalidPath is returned by Start for a path it cannot take (see
	// CleanPath) or that is neither a directory nor a regular file.
	ErrInvalidPath = errors.New("prefetch: invalid path")
	// ErrCanceled is the cause of a job stopped by Cancel.
	ErrCanceled = errors.New("prefetch: job canceled")
)

// FS is what the manager needs from the filesystem; *fusefs.FS implements
// it. Paths are relative to the exported root ("" is the root). Every
// method must return once ctx is done.
type FS interface {
	// Stat describes one path.
	Stat(ctx context.Context, path string) (transfer.Attr, error)
	// List describes the entries of a directory.
	List(ctx context.Context, path string) ([]transfer.Attr, error)
	// Manifest returns the current manifest of a regular file.
	Manifest(ctx context.Context, path string) (*transfer.Manifest, error)
	// FetchBackground makes sure chunks first..last of m are in the
	// store, fetching the missing ones below foreground reads.
	FetchBackground(ctx context.Context, path string, m *transfer.Manifest, first, last int) (fusefs.BackgroundResult, error)
	// PinFile keeps the chunks of m in the store until unpin is called.
	PinFile(m *transfer.Manifest) (unpin func())
	// FetchFilesBackground brings the manifests and content of the small
	// regular files among entries (those of directory dir) into the
	// store in batches, below foreground reads; best effort.
	FetchFilesBackground(ctx context.Context, dir string, entries []transfer.Attr, maxBytes int) (fusefs.FilesResult, error)
}

var _ FS = (*fusefs.FS)(nil)

// Store keeps the job records; *chunkstore.Store implements it.
type Store interface {
	PutMeta(key string, value []byte) error
	DeleteMeta(key string) error
	// ScanMeta calls fn for every record whose key starts with prefix.
	ScanMeta(prefix string, fn func(key string, value []byte) error) error
}

// Options configure a Manager. The zero value of every field selects its
// default.
type Options struct {
	// InFlightBytes bounds the chunk bytes that all jobs together are
	// fetching at once (asked for and not yet handed to the store
	// writer): the memory prefetch itself uses, whatever the size of the
	// files. Default DefaultInFlightBytes.
	InFlightBytes int64
	// RunBytes is how much of a file one fetch asks for: chunks are
	// fetched in runs of about this many bytes (at least one chunk).
	// Smaller runs let foreground reads pre-empt sooner. Default
	// DefaultRunBytes.
	RunBytes int64
	// FileWorkers bounds the files of one job handled at once; several
	// small files then share the round trips. Default DefaultFileWorkers.
	FileWorkers int
	// KeepFinished is how many finished jobs are kept, listed and in the
	// store; older ones are forgotten. Default DefaultKeepFinished.
	KeepFinished int
	// RetryMin and RetryMax bound the back-off between attempts while the
	// server is unavailable: the first wait is RetryMin, each further one
	// twice as long, at most RetryMax, and each is jittered (drawn at
	// random from 80 to 100% of that). Defaults 500 ms and 30 s.
	RetryMin, RetryMax time.Duration
	// Logger receives job starts, ends and failures. Default: discard.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultInFlightBytes = 4 << 20
	DefaultRunBytes      = 1 << 20
	DefaultFileWorkers   = 8
	DefaultKeepFinished  = 16
	DefaultRetryMin      = 500 * time.Millisecond
	DefaultRetryMax      = 30 * time.Second
)

// staleRetries is how many times a file that changed on the server while
// it was being fetched is started again with its new manifest.
const staleRetries = 5

// Progress is a snapshot of one job.
type Progress struct {
	ID    uint64
	Paths []string
	State State
	// Error is the first error of a failed job (or of a running job that
	// failed to fetch some file so far).
	Error string
	// Scanning is set while the job still lists its directories: the
	// totals grow until it ends.
	Scanning bool
	// Files done (in the store), failed, and in all.
	FilesDone   int64
	FilesFailed int64
	FilesTotal  int64
	// BytesDone counts the bytes of the files' chunks known to be in the
	// store: held already or fetched by the job. BytesTotal is the size
	// of all files.
	BytesDone  int64
	BytesTotal int64
	// BytesFetched counts the bytes the job fetched from the server since
	// it was last started (a resumed job counts from its restart).
	BytesFetched int64
	// Rate is the recent rate of BytesDone in bytes per second (the
	// average over the whole run once the job has ended); ETASeconds the
	// time left at that rate, 0 when unknown.
	Rate       float64
	ETASeconds float64
	Created    time.Time
	Finished   time.Time
	// Resumed counts how many times the job was started again after the
	// daemon stopped with the job unfinished.
	Resumed int
}

// Ended reports whether the job has ended.
func (p Progress) Ended() bool { return p.State != StateRunning }

// Manager runs prefetch jobs: each walks its paths through the FS and
// fetches the chunks of every regular file that the store does not hold.
// Jobs are kept as records in the Store; a job left running when the
// Manager was closed (or the process killed) starts again in the next
// New. Create it with New; Close it before the FS and the Store.
type Manager struct {
	fs    FS
	store Store
	opts  Options // defaults applied; immutable
	log   *slog.Logger
	sem   *semaphore.Weighted // bytes in flight, across all jobs

	ctx    context.Context // canceled by Close; parent of every job's
	cancel context.CancelFunc
	wg     sync.WaitGroup // job goroutines

	mu     sync.Mutex // guards jobs, nextID and closed
	jobs   map[uint64]*job
	nextID uint64
	closed bool
}

// New returns a Manager of the jobs recorded in store and starts those that
// were running when the last Manager of this store stopped. opts may be
// nil. Records that cannot be decoded are removed (and logged).
func New(fsys FS, store Store, opts *Options) (*Manager, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.InFlightBytes <= 0 {
		o.InFlightBytes = DefaultInFlightBytes
	}
	if o.RunBytes <= 0 {
		o.RunBytes = DefaultRunBytes
	}
	if o.FileWorkers <= 0 {
		o.FileWorkers = DefaultFileWorkers
	}
	if o.KeepFinished <= 0 {
		o.KeepFinished = DefaultKeepFinished
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax <= 0 {
		o.RetryMax = DefaultRetryMax
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		fs: fsys, store: store, opts: o, log: log,
		sem: semaphore.NewWeighted(o.InFlightBytes),
		ctx: ctx, cancel: cancel,
		jobs: make(map[uint64]*job), nextID: 1,
	}

	var recs []*record
	var bad []string
	err := store.ScanMeta(recordPrefix, func(key string, value []byte) error {
		id, ok := parseRecordKey(key)
		r, err := decodeRecord(value)
		if !ok || err != nil || r.ID != id {
			log.Warn("prefetch: dropping unreadable job record", "key", key, "err", err)
			bad = append(bad, key)
			return nil
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("prefetch: load jobs: %w", err)
	}
	for _, key := range bad {
		if err := store.DeleteMeta(key); err != nil {
			log.Warn("prefetch: delete job record", "key", key, "err", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		m.nextID = max(m.nextID, r.ID+1)
		j := jobFromRecord(r)
		m.jobs[r.ID] = j
		if r.State != StateRunning {
			continue
		}
		j.resumed++
		if err := m.persist(j); err != nil {
			log.Warn("prefetch: record resumed job", "job", j.id, "err", err)
		}
		log.Info("prefetch: resuming job", "job", j.id, "paths", j.paths, "resumed", j.resumed)
		m.launchLocked(j)
	}
	m.pruneLocked()
	return m, nil
}

// Start starts a job fetching every regular file under paths (files, or
// directories walked recursively; symlinks are not followed), given
// relative to the exported root and cleaned with CleanPath. Every path is
// looked up first: Start fails (with the FS's error, e.g. wrapping
// transfer.ErrNotFound) if one does not exist, and with ErrInvalidPath if
// one is neither a directory nor a regular file. The job is recorded in
// the Store before Start returns, so it resumes after a crash.
func (m *Manager) Start(ctx context.Context, paths []string) (Progress, error) {
	if len(paths) == 0 || len(paths) > MaxPaths {
		return Progress{}, fmt.Errorf("%w: %d paths, want 1 to %d", ErrInvalidPath, len(paths), MaxPaths)
	}
	var clean []string
	for _, p := range paths {
		c, err := CleanPath(p)
		if err != nil {
			return Progress{}, err
		}
		if !slices.Contains(clean, c) {
			clean = append(clean, c)
		}
	}
	for _, p := range clean {
		a, err := m.fs.Stat(ctx, p)
		if err != nil {
			return Progress{}, fmt.Errorf("prefetch %q: %w", p, err)
		}
		if !a.IsDir() && !a.IsRegular() {
			return Progress{}, fmt.Errorf("%w: %q is neither a directory nor a regular file", ErrInvalidPath, p)
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Progress{}, ErrClosed
	}
	id := m.nextID
	m.nextID++
	m.mu.Unlock()

	j := newJob(id, clean, time.Now())
	if err := m.persist(j); err != nil {
		return Progress{}, fmt.Errorf("prefetch: record job: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		// The record stays: the job starts with the next Manager.
		return Progress{}, ErrClosed
	}
	m.jobs[id] = j
	m.launchLocked(j)
	m.log.Info("prefetch: job started", "job", id, "paths", clean)
	return j.snapshot(time.Now()), nil
}

// Jobs returns every known job, by ID.
func (m *Manager) Jobs() []Progress {
	m.mu.Lock()
	jobs := make([]*job, 0, len(m.jobs))
	for _, j := range m.jobs {
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	slices.SortFunc(jobs, func(a, b *job) int { return cmp.Compare(a.id, b.id) })
	now := time.Now()
	out := make([]Progress, len(jobs))
	for i, j := range jobs {
		out[i] = j.snapshot(now)
	}
	return out
}

// Job returns the progress of job id, or an error wrapping ErrNotFound.
func (m *Manager) Job(id uint64) (Progress, error) {
	j, err := m.job(id)
	if err != nil {
		return Progress{}, err
	}
	return j.snapshot(time.Now()), nil
}

// Wait blocks until job id has ended and returns its progress then. It
// returns ctx's error when ctx is done first, and ErrClosed when the
// Manager is closed first (the job resumes with the next Manager).
func (m *Manager) Wait(ctx context.Context, id uint64) (Progress, error) {
	j, err := m.job(id)
	if err != nil {
		return Progress{}, err
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		return Progress{}, ctx.Err()
	}
	p := j.snapshot(time.Now())
	if !p.Ended() {
		return p, ErrClosed
	}
	return p, nil
}

// Cancel stops job id and waits until it has stopped (fetches under way
// go on into the store); the job ends canceled. Canceling a job that has
// ended changes nothing. It returns the job's progress.
func (m *Manager) Cancel(id uint64) (Progress, error) {
	j, err := m.job(id)
	if err != nil {
		return Progress{}, err
	}
	if j.cancel != nil {
		j.cancel(ErrCanceled)
	}
	<-j.done
	p := j.snapshot(time.Now())
	if !p.Ended() {
		return p, ErrClosed
	}
	return p, nil
}

// Close stops every job and waits for their goroutines. Running jobs stay
// recorded as running and resume with the next Manager of the store. Close
// is idempotent; afterwards Start fails with ErrClosed.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	return nil
}

func (m *Manager) job(id uint64) (*job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	return j, nil
}

// launchLocked runs j in a goroutine that Close waits for. m.mu must be
// held and m not closed.
func (m *Manager) launchLocked(j *job) {
	ctx, cancel := context.WithCancelCause(m.ctx)
	j.cancel = cancel
	j.done = make(chan struct{})
	j.scanning.Store(true) // until the first walk ends
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(j.done)
		defer cancel(nil)
		m.run(ctx, j)
	}()
}

// run executes j and records how it ended, unless the Manager is closing.
func (m *Manager) run(ctx context.Context, j *job) {
	j.mu.Lock()
	j.started = time.Now()
	j.mu.Unlock()
	j.rate.add(j.started, 0)
	err := m.execute(ctx, j)
	cause := context.Cause(ctx)
	state := StateDone
	switch {
	case errors.Is(cause, ErrCanceled):
		state = StateCanceled
	case m.ctx.Err() != nil:
		m.log.Info("prefetch: job stopped; it resumes with the next mount", "job", j.id)
		return
	case err != nil:
		state = StateFailed
		j.setError(err)
	case j.filesFailed.Load() > 0:
		state = StateFailed
	}
	j.finish(state, time.Now())
	p := j.snapshot(time.Now())
	m.log.Info("prefetch: job ended", "job", j.id, "state", state, "files", p.FilesDone, "failed", p.FilesFailed,
		"bytes", p.BytesDone, "fetched", p.BytesFetched, "err", p.Error)
	if err := m.persist(j); err != nil {
		m.log.Warn("prefetch: record job end", "job", j.id, "err", err)
	}
	m.mu.Lock()
	m.pruneLocked()
	m.mu.Unlock()
}

// persist writes j's record.
func (m *Manager) persist(j *job) error {
	r := j.record()
	b, err := encodeRecord(r)
	if err != nil {
		return err
	}
	return m.store.PutMeta(recordKey(j.id), b)
}

// pruneLocked forgets the oldest ended jobs beyond KeepFinished. m.mu must
// be held.
func (m *Manager) pruneLocked() {
	var ended []uint64
	for id, j := range m.jobs {
		if j.ended() {
			ended = append(ended, id)
		}
	}
	if len(ended) <= m.opts.KeepFinished {
		return
	}
	slices.Sort(ended)
	for _, id := range ended[:len(ended)-m.opts.KeepFinished] {
		if err := m.store.DeleteMeta(recordKey(id)); err != nil {
			m.log.Warn("prefetch: delete job record", "job", id, "err", err)
			continue
		}
		delete(m.jobs, id)
	}
}

// job is one prefetch job.
type job struct {
	id      uint64
	paths   []string // immutable
	created time.Time

	// Set by launchLocked before the goroutine starts (under Manager.mu);
	// done is closed when the run ends, or at load for ended jobs.
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu       sync.Mutex // guards resumed, state, errText, started, finished, seconds
	resumed  int
	state    State
	errText  string
	started  time.Time // start of this run
	finished time.Time
	seconds  float64 // duration of the last run, once ended

	scanning                            atomic.Bool
	filesDone, filesFailed, filesTotal  atomic.Int64
	bytesDone, bytesTotal, bytesFetched atomic.Int64
	rate                                rateMeter
}

func newJob(id uint64, paths []string, created time.Time) *job {
	return &job{id: id, paths: paths, created: created, state: StateRunning}
}

// jobFromRecord returns the job of r; an ended job's done is closed.
func jobFromRecord(r *record) *job {
	j := newJob(r.ID, r.Paths, r.Created)
	j.resumed = r.Resumed
	j.state = r.State
	if r.State != StateRunning {
		j.errText = r.Error
		j.finished = r.Finished
		j.seconds = r.Seconds
		j.filesDone.Store(r.FilesDone)
		j.filesFailed.Store(r.FilesFailed)
		j.filesTotal.Store(r.FilesTotal)
		j.bytesDone.Store(r.BytesDone)
		j.bytesTotal.Store(r.BytesTotal)
		j.bytesFetched.Store(r.BytesFetched)
		j.done = make(chan struct{})
		close(j.done)
	}
	return j
}

// record returns what the Store keeps of j.
func (j *job) record() *record {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := &record{
		ID: j.id, Paths: j.paths, State: j.state, Created: j.created, Resumed: j.resumed,
	}
	if j.state != StateRunning {
		r.Error = j.errText
		r.Finished = j.finished
		r.Seconds = j.seconds
		r.FilesDone = j.filesDone.Load()
		r.FilesFailed = j.filesFailed.Load()
		r.FilesTotal = j.filesTotal.Load()
		r.BytesDone = j.bytesDone.Load()
		r.BytesTotal = j.bytesTotal.Load()
		r.BytesFetched = j.bytesFetched.Load()
	}
	return r
}

func (j *job) ended() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.state != StateRunning
}

// setError keeps err as the job's error unless it has one.
func (j *job) setError(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.errText == "" {
		j.errText = err.Error()
		if len(j.errText) > maxErrorLen {
			j.errText = j.errText[:maxErrorLen]
		}
	}
}

// finish ends the job in state.
func (j *job) finish(state State, now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.state = state
	j.finished = now
	j.seconds = now.Sub(j.started).Seconds()
}

// snapshot returns j's progress at now.
func (j *job) snapshot(now time.Time) Progress {
	j.mu.Lock()
	p := Progress{
		ID: j.id, Paths: slices.Clone(j.paths), State: j.state, Error: j.errText,
		Created: j.created, Finished: j.finished, Resumed: j.resumed,
	}
	seconds := j.seconds
	j.mu.Unlock()
	p.Scanning = p.State == StateRunning && j.scanning.Load()
	p.FilesDone = j.filesDone.Load()
	p.FilesFailed = j.filesFailed.Load()
	p.FilesTotal = max(j.filesTotal.Load(), p.FilesDone+p.FilesFailed)
	p.BytesDone = j.bytesDone.Load()
	p.BytesTotal = max(j.bytesTotal.Load(), p.BytesDone)
	p.BytesFetched = j.bytesFetched.Load()
	if p.State == StateRunning {
		p.Rate = j.rate.rate(now, p.BytesDone)
		if p.Rate > 0 && !p.Scanning {
			p.ETASeconds = float64(p.BytesTotal-p.BytesDone) / p.Rate
		}
	} else if seconds > 0 {
		p.Rate = float64(p.BytesDone) / seconds
	}
	return p
}

// rateMeter estimates the recent rate of a growing byte count from samples
// taken as it grows.
type rateMeter struct {
	mu      sync.Mutex // guards samples
	samples []rateSample
}

type rateSample struct {
	t     time.Time
	total int64
}

// Rate-meter parameters: one sample per rateEvery at most, the rate taken
// over the last rateWindow.
const (
	rateEvery  = 250 * time.Millisecond
	rateWindow = 5 * time.Second
)

// add records that the count was total at now.
func (r *rateMeter) add(now time.Time, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.samples); n > 0 && now.Sub(r.samples[n-1].t) < rateEvery {
		return
	}
	r.samples = append(r.samples, rateSample{now, total})
	// Keep one sample at or before the window's start as the base.
	k := 0
	for k+1 < len(r.samples) && !r.samples[k+1].t.After(now.Add(-rateWindow)) {
		k++
	}
	r.samples = append(r.samples[:0], r.samples[k:]...)
}

// rate returns the rate in bytes per second from the oldest sample kept to
// (now, total); 0 before there is a sample.
func (r *rateMeter) rate(now time.Time, total int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return 0
	}
	base := r.samples[0]
	dt := now.Sub(base.t).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(total-base.total) / dt
}
