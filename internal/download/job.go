package download

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// DefaultWorkers is the default of Options.Workers.
const DefaultWorkers = 8

// DefaultConnectTimeout is the default of Options.ConnectTimeout.
const DefaultConnectTimeout = 30 * time.Second

// ErrBadPath marks a remote path CleanPath refuses.
var ErrBadPath = errors.New("bad remote path")

// Options configure a Job. The zero value (or nil) is valid.
type Options struct {
	// Workers is how many files are downloaded at once, and how many
	// directories listed at once. Default DefaultWorkers.
	Workers int
	// Store, if not nil, caches verified chunks: every chunk a file lacks
	// is looked up in it before it is fetched, and every chunk fetched is
	// added to it. The Job does not close it.
	Store *chunkstore.Store
	// ConnectTimeout bounds the first request to the primary: a primary
	// that has not answered by then fails the run. Later requests wait
	// for it as long as the run's context lasts (the client redials with
	// backoff). Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Logger receives warnings. Default slog.Default().
	Logger *slog.Logger
}

// Stats are the counters of a run, as Job.Stats returns them.
type Stats struct {
	// Scanning is true while directories are still being listed: the
	// totals are still growing.
	Scanning bool
	// FilesTotal counts the regular files to copy; FilesCopied those
	// downloaded, FilesSkipped those found complete at the destination,
	// FilesFailed those that could not be copied.
	FilesTotal, FilesCopied, FilesSkipped, FilesFailed int64
	// Symlinks and Dirs count the links and directories made or found
	// right at the destination.
	Symlinks, Dirs int64
	// BytesTotal is the size of the regular files (as listed, corrected
	// when a file changed on the server); BytesDone the verified bytes of
	// them at the destination or in part files, skipped files included.
	BytesTotal, BytesDone int64
	// BytesFetched counts the verified file data received from the
	// servers; BytesFromParts the bytes of earlier attempts' part files
	// kept; BytesFromCache the bytes taken from Options.Store;
	// BytesSkipped the size of the files skipped as complete.
	BytesFetched, BytesFromParts, BytesFromCache, BytesSkipped int64
	// BySource maps each server's address to the bytes of file data it
	// delivered (the transfer.Sources of the files' downloads, counted as
	// each download ends); Primary is the primary's address among them
	// ("" before the first connection).
	BySource map[string]uint64
	Primary  string
	// Delivered maps each server's address to the bytes its path of the
	// client's current session delivered so far (kwik's
	// PathStats.DeliveredBytes: file data and metadata, counted as they
	// arrive, where BySource learns of a file's bytes only when its
	// download ends). It restarts with a new session; frozen when Run returns.
	Delivered map[string]uint64
	// Elapsed is the time since Run started (until it returned).
	Elapsed time.Duration
}

// Failure is a file, link or directory that could not be copied.
type Failure struct {
	// Path is the remote path ("" for the root).
	Path string
	Err  error
}

// Result is what Run did.
type Result struct {
	Stats
	// Failures lists what could not be copied, in no particular order.
	// Files not attempted because their directory could not be made are
	// counted in FilesFailed but not listed: the directory is.
	Failures []Failure
	// Left is, when not empty, the part directory left at the
	// destination for the next run to complete (see the package
	// documentation).
	Left string
}

// Job copies remote paths to local disk once (see Run). Its methods are
// safe for concurrent use.
type Job struct {
	workers        int
	store          *chunkstore.Store
	connectTimeout time.Duration
	log            *slog.Logger
	// progressHook, when set (tests only, before Run), is called after
	// each progress report of a file's download (transfer.DownloadOptions
	// Progress), from the downloading goroutine.
	progressHook func(remote string, done, total int64)

	mu sync.Mutex
	// guarded by mu:
	client    *transfer.Client // set by Run
	baseBytes int64            // client's DataBytes when Run started
	started   time.Time
	ended     time.Time         // zero while Run runs
	fetched   int64             // BytesFetched when Run returned
	bySource  map[string]uint64 // the Sources of the downloads so far
	primary   string
	delivered map[string]uint64 // of the session last seen
	ran       bool

	scanning                                                atomic.Bool
	filesTotal, filesCopied, filesSkipped, filesFailed      atomic.Int64
	symlinks, dirs                                          atomic.Int64
	bytesTotal, bytesDone, fromParts, fromCache, bytesSkipd atomic.Int64
}

// New returns a Job with the given options (nil: defaults).
func New(opts *Options) *Job {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Job{workers: o.Workers, store: o.Store, connectTimeout: o.ConnectTimeout, log: o.Logger, bySource: map[string]uint64{}}
}

// countSources adds the bytes each server delivered to a download to the
// run's figures.
func (j *Job) countSources(src transfer.Sources) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for s, n := range src {
		j.bySource[s] += n
	}
}

// Stats returns the counters of the run: zero before Run, live during it,
// final after.
func (j *Job) Stats() Stats {
	st := Stats{
		Scanning:       j.scanning.Load(),
		FilesTotal:     j.filesTotal.Load(),
		FilesCopied:    j.filesCopied.Load(),
		FilesSkipped:   j.filesSkipped.Load(),
		FilesFailed:    j.filesFailed.Load(),
		Symlinks:       j.symlinks.Load(),
		Dirs:           j.dirs.Load(),
		BytesTotal:     j.bytesTotal.Load(),
		BytesDone:      j.bytesDone.Load(),
		BytesFromParts: j.fromParts.Load(),
		BytesFromCache: j.fromCache.Load(),
		BytesSkipped:   j.bytesSkipd.Load(),
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case !j.ended.IsZero():
		st.BytesFetched = j.fetched
		st.Elapsed = j.ended.Sub(j.started)
	case j.client != nil:
		st.BytesFetched = j.client.Stats().DataBytes - j.baseBytes
		st.Elapsed = time.Since(j.started)
		j.noteSessionLocked()
	}
	st.Primary = j.primary
	st.BySource = maps.Clone(j.bySource)
	st.Delivered = maps.Clone(j.delivered)
	return st
}

// CleanPath returns remote path p in the canonical form of the file
// protocol: relative to the exported root, without leading, trailing or
// doubled slashes or "." elements; "" and "/" are the root (""). A ".."
// element, a NUL byte or a name too long fails with an error wrapping
// ErrBadPath.
func CleanPath(p string) (string, error) {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%q: %w: no .. elements", p, ErrBadPath)
		}
	}
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if err := transfer.CheckPath(c); err != nil {
		return "", fmt.Errorf("%q: %w: %w", p, ErrBadPath, err)
	}
	return c, nil
}

// node is one entry to copy: where it is on the server and where it goes.
type node struct {
	remote string
	local  string
	attr   transfer.Attr
	// keepAttrs: the node is an existing destination directory that the
	// root is merged into; its own mode and mtime are left alone.
	keepAttrs bool
}

// failures collects Result.Failures from several goroutines.
type failures struct {
	mu   sync.Mutex
	list []Failure // guarded by mu
}

func (f *failures) add(remote string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, Failure{Path: remote, Err: err})
}

func (f *failures) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.list)
}

// Run copies remotes (paths relative to the exported root, see CleanPath)
// to dest through client, as the package documentation describes, and
// returns what it did. Every file, link or directory that fails is
// recorded in Result.Failures and the run goes on; the error is for what
// ends the run early (see the package documentation), and wraps ctx.Err()
// when ctx ended. The Result is valid in either case. Run may be called
// once per Job.
func (j *Job) Run(ctx context.Context, client *transfer.Client, remotes []string, dest string) (Result, error) {
	if err := j.begin(client); err != nil {
		return Result{}, err
	}
	var fails failures
	res := func(left string) Result {
		j.end(client)
		fails.mu.Lock()
		defer fails.mu.Unlock()
		return Result{Stats: j.Stats(), Failures: fails.list, Left: left}
	}
	if len(remotes) == 0 {
		return res(""), fmt.Errorf("%w: no remote path", ErrBadPath)
	}
	clean := make([]string, len(remotes))
	for i, r := range remotes {
		c, err := CleanPath(r)
		if err != nil {
			return res(""), err
		}
		clean[i] = c
	}
	if err := j.probe(ctx, client); err != nil {
		return res(""), err
	}
	tops, part, err := j.resolve(ctx, client, clean, dest, &fails)
	if err != nil {
		return res(""), err
	}
	p, err := j.scan(ctx, client, tops, &fails)
	j.scanning.Store(false)
	if err != nil {
		return res(""), err
	}
	if err := j.apply(ctx, client, p, &fails); err != nil {
		return res(part), err
	}
	if part == "" {
		return res(""), nil
	}
	if fails.len() > 0 || j.filesFailed.Load() > 0 {
		return res(part), nil
	}
	final := strings.TrimSuffix(part, transfer.PartSuffix)
	if err := os.Rename(part, final); err != nil {
		fails.add(tops[0].remote, fmt.Errorf("rename %s to %s: %w", part, final, err))
		return res(part), nil
	}
	return res(""), nil
}

// begin records the start of Run.
func (j *Job) begin(client *transfer.Client) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.ran {
		return errors.New("download: Run called twice")
	}
	j.ran = true
	j.client = client
	j.baseBytes = client.Stats().DataBytes
	j.started = time.Now()
	j.scanning.Store(true) // until scan has listed everything
	return nil
}

// end freezes the figures that come from the client when Run returns.
func (j *Job) end(client *transfer.Client) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.ended.IsZero() {
		return
	}
	j.scanning.Store(false)
	j.fetched = client.Stats().DataBytes - j.baseBytes
	j.ended = time.Now()
	j.noteSessionLocked()
}

// noteSessionLocked records, if the client has a session, the address of
// the primary's path (as transfer.Sources names it) and what each path
// delivered. j.mu must be held.
func (j *Job) noteSessionLocked() {
	ss, ok := j.client.SessionStats()
	if !ok || len(ss.Paths) == 0 {
		return
	}
	j.delivered = make(map[string]uint64, len(ss.Paths))
	for _, p := range ss.Paths {
		addr := p.Addr
		if p.RemoteAddr != nil {
			addr = p.RemoteAddr.String()
		}
		if p.ID == 0 {
			j.primary = addr
		}
		j.delivered[addr] += p.DeliveredBytes
	}
}

// probe makes the first contact with the primary, bounded by the connect
// timeout, and turns what makes every later request fail into an error
// that says so.
func (j *Job) probe(ctx context.Context, client *transfer.Client) error {
	pctx, cancel := context.WithTimeout(ctx, j.connectTimeout)
	defer cancel()
	_, err := client.Stat(pctx, "")
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("connect to the primary: %w", ctx.Err())
	case errors.Is(err, kwik.ErrClientCertificate):
		return fmt.Errorf("the primary requires a client certificate signed by its --client-ca (--cert FILE --key FILE; kwikfs certs writes client.pem and client-key.pem): %w", err)
	case transfer.IsUntrusted(err):
		return fmt.Errorf("the primary's TLS certificate is not trusted: %w", err)
	case errors.Is(err, transfer.ErrUnavailable):
		return fmt.Errorf("primary not reachable within %v: %w", j.connectTimeout, err)
	}
	return nil // it answered, if not with the root's attributes
}

// resolve stats the remotes and decides where each goes (see the package
// documentation). It returns the top-level nodes and, when the single
// remote is a directory copied to a new destination, the part directory
// it is built in. A remote that cannot be stat'ed is a failure.
func (j *Job) resolve(ctx context.Context, client *transfer.Client, remotes []string, dest string, fails *failures) (tops []node, part string, err error) {
	dest = filepath.Clean(dest)
	fi, err := os.Stat(dest)
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("destination: %w", err)
	}
	into := exists && fi.IsDir()
	if len(remotes) > 1 {
		if exists && !fi.IsDir() {
			return nil, "", fmt.Errorf("destination %s: not a directory (several remote paths go inside a directory)", dest)
		}
		if !exists {
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return nil, "", fmt.Errorf("destination: %w", err)
			}
		}
		into = true
	} else if !exists {
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return nil, "", fmt.Errorf("destination: %w", err)
		}
	}
	taken := map[string]string{} // local path → remote that goes there
	for _, r := range remotes {
		a, err := client.Stat(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return nil, "", fmt.Errorf("stat %q: %w", r, ctx.Err())
			}
			fails.add(r, err)
			continue
		}
		n := node{remote: r, attr: a}
		switch {
		case into && r == "":
			n.local, n.keepAttrs = dest, true
		case into:
			n.local = filepath.Join(dest, path.Base(r))
		case a.IsDir() && exists:
			fails.add(r, fmt.Errorf("cannot replace non-directory %s with a directory", dest))
			continue
		case a.IsDir():
			part = dest + transfer.PartSuffix
			n.local = part
		default:
			n.local = dest
		}
		if other, dup := taken[n.local]; dup {
			fails.add(r, fmt.Errorf("goes to %s, as %q does", n.local, other))
			continue
		}
		taken[n.local] = r
		tops = append(tops, n)
	}
	return tops, part, nil
}

// plan is what scan found: directories with parents before children,
// links and files.
type plan struct {
	dirs, links, files []node
}

// add puts n in p and counts it.
func (j *Job) add(p *plan, n node) {
	switch {
	case n.attr.IsDir():
		p.dirs = append(p.dirs, n)
	case n.attr.IsSymlink():
		p.links = append(p.links, n)
	case n.attr.IsRegular():
		p.files = append(p.files, n)
		j.filesTotal.Add(1)
		j.bytesTotal.Add(n.attr.Size)
	}
}

// scan lists the directories among tops recursively, a level at a time
// with up to j.workers listings at once. A directory that cannot be
// listed is a failure; it is still made, empty.
func (j *Job) scan(ctx context.Context, client *transfer.Client, tops []node, fails *failures) (*plan, error) {
	p := &plan{}
	var level []node
	for _, n := range tops {
		j.add(p, n)
		if n.attr.IsDir() {
			level = append(level, n)
		}
	}
	for len(level) > 0 {
		entries := make([][]transfer.Attr, len(level))
		var g errgroup.Group
		g.SetLimit(j.workers)
		for i, d := range level {
			g.Go(func() error {
				es, err := client.List(ctx, d.remote)
				switch {
				case err == nil:
					entries[i] = es
				case ctx.Err() != nil:
					return fmt.Errorf("list %q: %w", d.remote, ctx.Err())
				default:
					fails.add(d.remote, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		var next []node
		for i, d := range level {
			for _, e := range entries[i] {
				if !transfer.ValidName(e.Name) {
					fails.add(d.remote, fmt.Errorf("entry %q: %w", e.Name, transfer.ErrBadRequest))
					continue
				}
				n := node{remote: path.Join(d.remote, e.Name), local: filepath.Join(d.local, e.Name), attr: e}
				j.add(p, n)
				if n.attr.IsDir() {
					next = append(next, n)
				}
			}
		}
		level = next
	}
	return p, nil
}

// apply makes the directories and links of p, downloads its files and
// then sets the directories' modes and mtimes, deepest first.
func (j *Job) apply(ctx context.Context, client *transfer.Client, p *plan, fails *failures) error {
	broken := map[string]bool{} // local directories not made: nothing goes inside
	under := func(n node) bool { return broken[filepath.Dir(n.local)] }
	for _, d := range p.dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if under(d) {
			broken[d.local] = true
			continue
		}
		if d.keepAttrs {
			continue // the destination directory itself (or a link to it): left as it is
		}
		if err := ensureDir(d.local); err != nil {
			fails.add(d.remote, err)
			broken[d.local] = true
			continue
		}
	}
	for _, l := range p.links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if under(l) {
			continue
		}
		target := l.attr.Target
		if target == "" { // LIST carries targets; READLINK if one did not
			t, err := client.Readlink(ctx, l.remote)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				fails.add(l.remote, err)
				continue
			}
			target = t
		}
		if err := ensureLink(l.local, target, l.attr); err != nil {
			fails.add(l.remote, err)
			continue
		}
		j.symlinks.Add(1)
	}
	var cache transfer.ChunkCache
	if j.store != nil {
		cache = &storeCache{store: j.store, hitBytes: &j.fromCache}
	}
	for _, wave := range waves(p.files) {
		var g errgroup.Group
		g.SetLimit(j.workers)
		for _, f := range wave {
			if under(f) {
				j.filesFailed.Add(1)
				continue
			}
			g.Go(func() error {
				if err := ctx.Err(); err != nil {
					return err
				}
				err := j.file(ctx, client, f, cache)
				switch {
				case err == nil:
				case ctx.Err() != nil:
					return err
				default:
					j.filesFailed.Add(1)
					fails.add(f.remote, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}
	for i := len(p.dirs) - 1; i >= 0; i-- {
		d := p.dirs[i]
		if broken[d.local] {
			continue
		}
		if !d.keepAttrs {
			if err := setDirAttrs(d.local, d.attr); err != nil {
				fails.add(d.remote, err)
				continue
			}
		}
		j.dirs.Add(1)
	}
	return nil
}

// file copies regular file f, unless the destination holds it complete.
func (j *Job) file(ctx context.Context, client *transfer.Client, f node, cache transfer.ChunkCache) error {
	done, err := complete(f.local, f.attr)
	if err != nil {
		return err
	}
	if done {
		j.filesSkipped.Add(1)
		j.bytesSkipd.Add(f.attr.Size)
		j.bytesDone.Add(f.attr.Size)
		return nil
	}
	var seen, total int64 = 0, f.attr.Size
	first := true
	src, err := client.DownloadFileWith(ctx, f.remote, f.local, &transfer.DownloadOptions{
		Cache: cache,
		Progress: func(d, t int64) {
			if first {
				j.fromParts.Add(d)
				first = false
			}
			j.bytesDone.Add(d - seen)
			j.bytesTotal.Add(t - total)
			seen, total = d, t
			if j.progressHook != nil {
				j.progressHook(f.remote, d, t)
			}
		},
	})
	// What a failed download fetched was delivered all the same.
	j.countSources(src)
	if err != nil {
		return err
	}
	j.filesCopied.Add(1)
	return nil
}

// waves splits files into groups to download one after the other: by the
// number of times transfer.PartSuffix ends the name, so that "f" (whose
// part file is "f.kwikpart") and a file "f.kwikpart" are never downloaded
// at once.
func waves(files []node) [][]node {
	var out [][]node
	for _, f := range files {
		k := 0
		for name := filepath.Base(f.local); strings.HasSuffix(name, transfer.PartSuffix); k++ {
			name = strings.TrimSuffix(name, transfer.PartSuffix)
		}
		for len(out) <= k {
			out = append(out, nil)
		}
		out[k] = append(out[k], f)
	}
	return out
}

// storeCache is a chunkstore.Store as a transfer.ChunkCache, counting the
// bytes of the chunks it returns in *hitBytes.
type storeCache struct {
	store    *chunkstore.Store
	hitBytes *atomic.Int64
}

var _ transfer.ChunkCache = (*storeCache)(nil)

// LoadChunk returns the chunk stored under sum (chunkstore.Store.Get
// verifies it with the algorithm it was stored under).
func (c *storeCache) LoadChunk(sum transfer.Hash, _ transfer.HashAlg, buf []byte) ([]byte, error) {
	data, err := c.store.Get(sum, buf)
	if err != nil {
		return nil, err
	}
	c.hitBytes.Add(int64(len(data)))
	return data, nil
}

// StoreChunk adds a chunk the client verified to the store.
func (c *storeCache) StoreChunk(sum transfer.Hash, alg transfer.HashAlg, data []byte) error {
	return c.store.PutVerified([]chunkstore.Chunk{{Sum: sum, Alg: alg, Data: data}})
}
