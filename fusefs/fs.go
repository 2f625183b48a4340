package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/transfer"
)

// Remote is what the filesystem needs from the server; *transfer.Client
// implements it. Paths are relative to the exported root, '/'-separated, ""
// is the root. Every method must return when ctx is done.
type Remote interface {
	// Stat describes one path.
	Stat(ctx context.Context, path string) (transfer.Attr, error)
	// List describes every entry of a directory (Attr.Name set, symlinks
	// with their Target).
	List(ctx context.Context, path string) ([]transfer.Attr, error)
	// Readlink returns a symlink's target.
	Readlink(ctx context.Context, path string) (string, error)
	// Manifest returns the current manifest of a regular file.
	Manifest(ctx context.Context, path string) (*transfer.Manifest, error)
	// ReadChunks fetches chunks [first, first+count) of the file at version
	// m and calls deliver for each, in order, after verifying it against m.
	// Each chunk comes in a buffer of its own, which deliver may keep: the
	// Remote does not touch it again. An error from deliver stops the call
	// and is returned. It returns which servers delivered the chunks handed
	// to deliver, with an error too (nil: none, or the Remote cannot tell),
	// which the FS serves as XattrSources.
	ReadChunks(ctx context.Context, path string, m *transfer.Manifest, first, count int, deliver func(i int, data []byte) error) (transfer.Sources, error)
}

// ChunkVerifier is implemented by a Remote that declares whether its
// ReadChunks verifies every chunk against the manifest before delivering it
// (*transfer.Client does). The FS stores the chunks of a Remote whose
// VerifiesChunks returns true without hashing them again; the chunks of any
// other Remote it verifies itself.
type ChunkVerifier interface {
	// VerifiesChunks reports whether ReadChunks delivers only verified
	// chunks. It must always return the same answer.
	VerifiesChunks() bool
}

var (
	_ Remote        = (*transfer.Client)(nil)
	_ ChunkVerifier = (*transfer.Client)(nil)
)

// Store is the local chunk and metadata store; *chunkstore.Store implements
// it. It must be safe for concurrent use.
type Store interface {
	// PutVerified stores chunks whose data the caller has checked against
	// their sums, each under its Alg (the manifest's), without hashing
	// them again (the FS hands it only chunks verified against a
	// manifest); it must not retain the chunks' data.
	PutVerified(chunks []chunkstore.Chunk) error
	// Get returns the chunk stored under sum, verified with the algorithm
	// it was stored under (whatever PutVerified was given), appended to
	// buf[:0] when it fits. Any error (not found, corrupt) means "fetch
	// it".
	Get(sum [32]byte, buf []byte) ([]byte, error)
	// PutMeta stores a metadata record; it must not retain value.
	PutMeta(key string, value []byte) error
	// GetMeta returns the metadata record stored under key.
	GetMeta(key string) ([]byte, error)
	// DeleteMeta removes the metadata record stored under key, if any.
	DeleteMeta(key string) error
}

// Pinner is implemented by a Store that can keep chunks from being evicted
// (*chunkstore.Store does). The FS pins the chunks of every open file, from
// Open to Release, so that reads of other files that push the Store past
// its size limit never evict what an open file is reading (it would be
// fetched again). A Store without it is used as is.
type Pinner interface {
	// Pin keeps the chunks with the given sums, stored now or later, from
	// eviction until unpin is called; unpin may be called more than once.
	Pin(sums ...[32]byte) (unpin func())
	// Limit is the most the Store keeps, in bytes; 0 means no limit.
	Limit() int64
}

var _ Pinner = (*chunkstore.Store)(nil)

// Options configure an FS. The zero value of every field selects its
// default.
type Options struct {
	// AttrTimeout is how long the kernel caches attributes and how long a
	// listing or manifest held in memory is trusted before the server is
	// asked again. Default 5s.
	AttrTimeout time.Duration
	// EntryTimeout is how long the kernel caches names (and failed
	// lookups). Default 5s.
	EntryTimeout time.Duration
	// FetchTimeout bounds the wait for the server when what a request needs
	// is not cached: a metadata call not answered within it is replaced by
	// the kept copy, if any, and a chunk fetch fails once no fetch at all
	// has received a chunk for that long (the server is unreachable), or
	// it alone has received none for four times that long (queued behind
	// others on a busy server); the request then fails with EIO. Default
	// 15s.
	FetchTimeout time.Duration
	// MemoryCacheBytes bounds the verified chunks kept in memory. Default
	// 64 MiB.
	MemoryCacheBytes int64
	// ReadAheadMax is the largest read-ahead window, in chunks, reached by
	// sequential reads. Default 16. Negative disables read-ahead: kwikfs's
	// own, and the raised kernel read-ahead of a mount made as root (see
	// RaiseReadAhead), which then stays at the kernel's default.
	ReadAheadMax int
	// OpenAheadMax is the most files one request ahead of opens asks for
	// (see opener in ahead.go), when the Remote is a FilesRemote. Default
	// DefaultOpenAheadMax; negative disables open-ahead, and files are
	// opened with a manifest call each.
	OpenAheadMax int
	// StoreQueueBytes bounds the fetched chunks waiting to be written to
	// the Store (they are served from memory meanwhile): a fetch that
	// delivers a chunk while more than this is waiting pauses until the
	// Store catches up. Default 32 MiB.
	StoreQueueBytes int64
	// Xattrs serves XattrCached and XattrSources on regular files. Without
	// it every getxattr and listxattr answers ENOSYS, which the kernel
	// remembers for the whole mount: otherwise each entry that `ls -l`
	// lists costs two more requests (security.selinux and
	// system.posix_acl_access), which triples the cost of listing a tree.
	Xattrs bool
	// ControlSocket is what the root directory answers to ControlIoctl:
	// the path of the mount daemon's control socket ("" answers ENOTTY).
	ControlSocket string
	// NoExec mounts with noexec: the kernel refuses to execute the
	// mount's files (mount(8)'s -o noexec). Default false: it allows it.
	NoExec bool
	// Source is the mount's source in /proc/self/mountinfo (findmnt's
	// SOURCE, go-fuse's FsName). Default "kwikfs". A mount daemon gives
	// the primary's HOST:PORT, as mount(8) and fstab name it, so that
	// `mount -a` sees the fstab line as mounted already.
	Source string
	// Logger receives errors that reach the kernel as EIO. Default: discard.
	Logger *slog.Logger
	// RemoteDown starts the FS as if a metadata call had just gone
	// unanswered: kept listings, manifests and stats are served at once,
	// without waiting for the Remote, until one of its calls is answered
	// (the calls still go out, in the background). For a mount whose
	// first contact with the server failed, so that walking the cached
	// tree does not wait FetchTimeout first. Default false.
	RemoteDown bool
}

// Defaults of Options.
const (
	DefaultAttrTimeout      = 5 * time.Second
	DefaultEntryTimeout     = 5 * time.Second
	DefaultFetchTimeout     = 15 * time.Second
	DefaultMemoryCacheBytes = 64 << 20
	DefaultReadAheadMax     = 16
	DefaultStoreQueueBytes  = 32 << 20
)

// mountReadAheadKB is the kernel read-ahead set on a mount made as root:
// one READ request may then cover a whole 1 MiB chunk.
const mountReadAheadKB = fuse.MAX_KERNEL_WRITE >> 10

// metaCacheBytes bounds the listings and manifests held in memory.
const metaCacheBytes = 32 << 20

// ErrClosed is returned by operations on a closed FS.
var ErrClosed = errors.New("fusefs: filesystem closed")

// errFetchTimeout is the cause of a wait that ran past FetchTimeout.
var errFetchTimeout = fmt.Errorf("no answer within the fetch timeout: %w", transfer.ErrUnavailable)

// Stats are exact counters of an FS since New.
type Stats struct {
	// ChunksFetched and BytesFetched count file data received from the
	// Remote and accepted (verified and handed to readers).
	ChunksFetched, BytesFetched int64
	// FetchCalls counts ReadChunks calls; FetchErrors the fetches that
	// failed (their waiting readers got an error).
	FetchCalls, FetchErrors int64
	// CorruptRefetches counts ReadChunks calls repeated because a chunk
	// failed its hash.
	CorruptRefetches int64
	// StoreHits counts chunks loaded from the Store.
	StoreHits int64
	// MemoryHits counts chunks found in the memory cache.
	MemoryHits int64
	// FlightJoins counts chunk requests that waited for a load already
	// under way instead of starting their own.
	FlightJoins int64
	// ReadAheadChunks counts chunks that read-ahead loaded (from the Store
	// or the Remote).
	ReadAheadChunks int64
	// ChunksStored counts fetched chunks written to the Store;
	// StoreErrors those the Store refused (they stay readable while in
	// memory and are fetched again later). StoreWrites counts the batches
	// (Store.PutVerified calls) they were written in.
	ChunksStored, StoreErrors, StoreWrites int64
	// PendingChunks and PendingBytes describe the fetched chunks waiting
	// to be written to the Store now.
	PendingChunks int
	PendingBytes  int64
	// ListCalls, ManifestCalls and StatCalls count metadata calls made to
	// the Remote.
	ListCalls, ManifestCalls, StatCalls int64
	// FilesCalls counts FILES calls (FilesRemote.Files) made to open files
	// ahead; FilesManifests the manifests they brought, FilesChunks and
	// FilesBytes the chunks (first chunks of files) they brought and the
	// FS accepted, which ChunksFetched and BytesFetched include.
	FilesCalls, FilesManifests, FilesChunks, FilesBytes int64
	// StaleMeta counts listings, manifests and stats served from a kept copy
	// because the Remote was unavailable.
	StaleMeta int64
	// MemoryBytes and MemoryChunks describe the memory chunk cache now.
	MemoryBytes  int64
	MemoryChunks int
}

type counters struct {
	chunksFetched, bytesFetched, fetchCalls, fetchErrors atomic.Int64
	corruptRefetches                                     atomic.Int64
	storeHits, memoryHits, flightJoins, readAheadChunks  atomic.Int64
	lists, manifests, stats, staleMeta                   atomic.Int64
	filesCalls, filesManifests, filesChunks, filesBytes  atomic.Int64
}

// FS is a read-only kwikfs filesystem. Create it with New, mount it with
// Mount, and Close it after unmounting.
type FS struct {
	remote Remote
	store  Store
	opts   Options // defaults applied; immutable
	log    *slog.Logger
	uid    uint32
	gid    uint32

	ctx    context.Context // canceled by Close; parent of every load
	cancel context.CancelFunc
	wg     sync.WaitGroup // the goroutines started by goLocked

	mu      sync.Mutex // guards flights, closed, and wg.Add
	flights map[transfer.Hash]*flight
	closed  bool

	mem    *lru[transfer.Hash, []byte] // verified chunks
	writer *storeWriter                // fetched chunks on their way to store
	meta   *metaCache
	ahead  *opener // nil without a FilesRemote or with open-ahead off
	count  counters
	// lastChunk is the UnixNano of the last chunk any fetch received (see
	// fetch: a fetch queued behind others that receive waits on).
	lastChunk atomic.Int64
	fg        foreground // foreground read activity (background.go)
	// verified is set when the Remote verifies the chunks it delivers.
	verified bool
	sources  sourceLog // per file, bytes per server (xattr.go)

	// now is the clock that ages cached metadata; tests replace it before
	// mounting.
	now func() time.Time
	// hookJoin, when set (tests only, before mounting), is called after a
	// chunk request joined a flight already under way.
	hookJoin func(transfer.Hash)
	// hookRelease, when set (tests only, before mounting), is called when
	// a file handle has been released (its chunks unpinned).
	hookRelease func(path string)
}

// New returns an FS serving remote's tree with chunks cached in store.
// opts may be nil.
func New(remote Remote, store Store, opts *Options) *FS {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.AttrTimeout <= 0 {
		o.AttrTimeout = DefaultAttrTimeout
	}
	if o.EntryTimeout <= 0 {
		o.EntryTimeout = DefaultEntryTimeout
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.MemoryCacheBytes <= 0 {
		o.MemoryCacheBytes = DefaultMemoryCacheBytes
	}
	if o.StoreQueueBytes <= 0 {
		o.StoreQueueBytes = DefaultStoreQueueBytes
	}
	if o.ReadAheadMax == 0 {
		o.ReadAheadMax = DefaultReadAheadMax
	} else if o.ReadAheadMax < 0 {
		o.ReadAheadMax = 0
	}
	if o.OpenAheadMax == 0 {
		o.OpenAheadMax = DefaultOpenAheadMax
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &FS{
		remote:  remote,
		store:   store,
		opts:    o,
		log:     logger,
		uid:     uint32(os.Getuid()),
		gid:     uint32(os.Getgid()),
		ctx:     ctx,
		cancel:  cancel,
		flights: make(map[transfer.Hash]*flight),
		mem:     newLRU[transfer.Hash](o.MemoryCacheBytes, func(b []byte) int64 { return int64(len(b)) }),
		writer:  newStoreWriter(store, logger, o.StoreQueueBytes),
		now:     time.Now,
	}
	if v, ok := remote.(ChunkVerifier); ok {
		f.verified = v.VerifiesChunks()
	}
	f.meta = newMetaCache(f)
	f.meta.down.Store(o.RemoteDown)
	if r, ok := remote.(FilesRemote); ok && o.OpenAheadMax > 0 {
		f.ahead = newOpener(f, r, min(o.OpenAheadMax, transfer.MaxFilesNames))
	}
	return f
}

// Root returns a new root node for this FS, for callers that build their own
// go-fuse server (Mount uses it).
func (f *FS) Root() fs.InodeEmbedder {
	return &dirNode{node: node{fsys: f, path: ""}}
}

// Mount mounts the filesystem read-only on mountpoint (FsName "kwikfs") and
// returns once the kernel has it. As root it mounts with mount(2) directly,
// otherwise through go-fuse's fusermount3 path. The caller unmounts with
// server.Unmount and then calls Close.
func (f *FS) Mount(mountpoint string, debug bool) (*fuse.Server, error) {
	attr, entry := f.opts.AttrTimeout, f.opts.EntryTimeout
	direct := os.Geteuid() == 0
	kernel := KernelOptions(debug)
	if f.opts.NoExec {
		// go-fuse turns it into MS_NOEXEC for a direct mount.
		kernel.Options = append(kernel.Options, "noexec")
	}
	if f.opts.Source != "" {
		kernel.FsName = f.opts.Source
	}
	opts := &fs.Options{
		MountOptions:    kernel,
		AttrTimeout:     &attr,
		EntryTimeout:    &entry,
		NegativeTimeout: &entry,
		NullPermissions: true,
		UID:             f.uid,
		GID:             f.gid,
	}
	if debug {
		opts.Logger = log.New(os.Stderr, "fusefs: ", log.LstdFlags)
		opts.MountOptions.Logger = opts.Logger
	}
	server, err := fs.Mount(mountpoint, f.Root(), opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if direct && f.opts.ReadAheadMax > 0 {
		// Read-ahead off leaves the kernel's too at its default.
		if err := RaiseReadAhead(mountpoint); err != nil {
			f.log.Warn("fusefs: raise kernel read-ahead", "mountpoint", mountpoint, "err", err)
		}
	}
	return server, nil
}

// KernelOptions returns the go-fuse mount options kwikfs mounts with:
// read-only, one READ request may cover a whole chunk, no splice, and a
// direct mount(2) when running as root (fusermount3 otherwise). Benchmarks
// use it to mount their reference filesystems the same way.
func KernelOptions(debug bool) fuse.MountOptions {
	direct := os.Geteuid() == 0
	return fuse.MountOptions{
		FsName:  "kwikfs",
		Name:    "kwikfs",
		Options: []string{"ro", "default_permissions"},
		// One FUSE read may cover a whole chunk.
		MaxWrite:      fuse.MAX_KERNEL_WRITE,
		MaxReadAhead:  fuse.MAX_KERNEL_WRITE,
		MaxBackground: 64,
		// Data comes from memory, never from a file descriptor.
		DisableSplice:    true,
		DirectMount:      direct,
		DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY,
		Debug:            debug,
	}
}

// RaiseReadAhead lets the kernel read ahead (and so send READ requests of)
// up to mountReadAheadKB on the FUSE mount at mountpoint: the kernel starts
// FUSE mounts at 128 KiB whatever the filesystem asks for, and only root may
// change it. The mount's device comes from /proc/self/mountinfo, not from
// stat(2), which would wait for the server. Failure costs only speed.
func RaiseReadAhead(mountpoint string) error {
	dev, err := mountDevice(mountpoint)
	if err != nil {
		return fmt.Errorf("find mount device: %w", err)
	}
	p := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	if err := os.WriteFile(p, []byte(strconv.Itoa(mountReadAheadKB)), 0); err != nil {
		return err
	}
	return nil
}

// mountDevice returns the "major:minor" of the kwikfs mount on mountpoint,
// the last one listed if several are stacked there.
func mountDevice(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, line := range strings.Split(string(info), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if unescapeMountinfo(fields[4]) == abs && fields[sep+1] == "fuse.kwikfs" {
			dev = fields[2]
		}
	}
	if dev == "" {
		return "", fmt.Errorf("no kwikfs mount on %s in /proc/self/mountinfo", abs)
	}
	return dev, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Close stops the FS's loads and read-ahead, waits for their goroutines,
// then writes every fetched chunk still waiting for the Store (so the
// Store must stay open until Close returns), and fails every later read
// with EIO. It does not unmount. Close is idempotent.
func (f *FS) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	f.writer.close()
	return nil
}

// Flush waits until every chunk fetched so far has been written to the
// Store (or refused by it), or until ctx is done (returning ctx.Err()).
func (f *FS) Flush(ctx context.Context) error {
	return f.writer.flush(ctx)
}

// Stats returns the counters.
func (f *FS) Stats() Stats {
	c := &f.count
	bytes, chunks := f.mem.Used()
	w := f.writer.counts()
	return Stats{
		ChunksStored:     w.written,
		StoreErrors:      w.failed,
		StoreWrites:      w.writes,
		PendingChunks:    w.pending,
		PendingBytes:     w.bytes,
		ChunksFetched:    c.chunksFetched.Load(),
		BytesFetched:     c.bytesFetched.Load(),
		FetchCalls:       c.fetchCalls.Load(),
		FetchErrors:      c.fetchErrors.Load(),
		CorruptRefetches: c.corruptRefetches.Load(),
		StoreHits:        c.storeHits.Load(),
		MemoryHits:       c.memoryHits.Load(),
		FlightJoins:      c.flightJoins.Load(),
		ReadAheadChunks:  c.readAheadChunks.Load(),
		ListCalls:        c.lists.Load(),
		ManifestCalls:    c.manifests.Load(),
		StatCalls:        c.stats.Load(),
		FilesCalls:       c.filesCalls.Load(),
		FilesManifests:   c.filesManifests.Load(),
		FilesChunks:      c.filesChunks.Load(),
		FilesBytes:       c.filesBytes.Load(),
		StaleMeta:        c.staleMeta.Load(),
		MemoryBytes:      bytes,
		MemoryChunks:     chunks,
	}
}

// goLocked runs fn in a goroutine that Close waits for, unless f is closed.
// f.mu must be held.
func (f *FS) goLocked(fn func()) bool {
	if f.closed {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}

// goOwned is goLocked for callers that do not hold f.mu.
func (f *FS) goOwned(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.goLocked(fn)
}

// wait blocks until done is closed, ctx is done (the caller was interrupted:
// context.Canceled) or f is closed (ErrClosed).
func (f *FS) wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Canceled
	case <-f.ctx.Done():
		return ErrClosed
	}
}

// unavailable reports whether err means the server did not answer, so a kept
// copy may stand in for the answer.
func unavailable(err error) bool {
	return errors.Is(err, transfer.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// toErrno maps an error to the errno the kernel gets; unexpected errors are
// logged with op and path.
func (f *FS) toErrno(op, path string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, transfer.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, transfer.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, transfer.ErrPermission), errors.Is(err, transfer.ErrOutsideRoot):
		return syscall.EACCES
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, transfer.ErrStale):
		f.log.Debug("fusefs: stale", "op", op, "path", path, "err", err)
		return syscall.ESTALE
	}
	f.log.Warn("fusefs: I/O error", "op", op, "path", path, "err", err)
	return syscall.EIO
}
