package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/kwikfs/kwikfs/internal/directio"
	"github.com/kwikfs/kwikfs/transfer"
)

// CatalogOptions configures a Catalog. The zero value (or nil) selects the
// defaults.
type CatalogOptions struct {
	// ChunkSize is the chunk size of every manifest, within
	// [transfer.MinChunkSize, transfer.MaxChunkSize]. Default
	// transfer.DefaultChunkSize (1 MiB).
	ChunkSize uint32
	// ManifestCacheEntries bounds the number of cached manifests.
	// Default 4096.
	ManifestCacheEntries int
	// ManifestCacheBytes bounds the memory of cached manifests
	// (approximately 32 bytes per chunk) and of their encoded MANIFEST
	// replies (as much again, less when the hashes compress), cached once
	// sent. Default 128 MiB: the largest manifest (transfer.MaxChunks
	// hashes, 32 MiB) fits with its reply.
	ManifestCacheBytes int64
	// Hash names the chunk hash algorithm of every manifest, as
	// transfer.ParseHashAlg reads it: "blake3" or "sha256" (for clients
	// that predate BLAKE3). Default ("") "blake3". Only the primary
	// computes manifests; a secondary never hashes.
	Hash string
	// MaxConcurrentHashes bounds the manifests computed (files hashed) at
	// once, over every caller; a computation waits for a slot, as long as
	// its context allows. Each holds one chunk buffer and its manifest's
	// hashes (32 bytes per chunk) while it runs. Files of one chunk at
	// most that FILES reads whole are not counted. Default (0)
	// runtime.GOMAXPROCS(0): hashing is CPU-bound.
	MaxConcurrentHashes int
}

// CatalogStats are exact counters of a Catalog.
type CatalogStats struct {
	// ManifestsComputed counts manifests computed by hashing a file.
	ManifestsComputed int64
	// ManifestCacheHits counts manifest lookups answered from the cache;
	// ManifestCacheMisses those that were not and hashed the file (once
	// for all the requests that shared the computation).
	ManifestCacheHits, ManifestCacheMisses int64
	// CachedManifests is the number of manifests in the cache now.
	CachedManifests int
	// CachedBytes is what the cached manifests and their encoded MANIFEST
	// replies cost now, as CatalogOptions.ManifestCacheBytes counts it.
	CachedBytes int64
	// HashWaits counts manifest computations that waited for a slot
	// (CatalogOptions.MaxConcurrentHashes).
	HashWaits int64
	// ManifestRepliesEncoded counts MANIFEST replies encoded; requests
	// for a file state whose reply is cached reuse it.
	ManifestRepliesEncoded int64
	// ManifestReplyHits counts MANIFEST replies taken from the cache.
	ManifestReplyHits int64
}

// maxManifestAttempts bounds how often a manifest computation restarts
// because the file changed while it was hashed.
const maxManifestAttempts = 3

// Catalog serves the exported tree below one root directory: attributes,
// listings, symlink targets, manifests and chunk data. Every access is
// confined to the root with os.Root, so ".." and symlinks leading out of the
// root are refused (ErrOutsideRoot). Only regular files, directories and
// symlinks are exported.
//
// A Catalog is independent of sessions and safe for concurrent use. Errors
// wrap the sentinel errors of package transfer.
type Catalog struct {
	root        *os.Root
	chunkSize   uint32
	alg         transfer.HashAlg
	cache       *manifestCache
	flight      singleflight.Group  // manifest computations
	replyFlight singleflight.Group  // MANIFEST reply encodings
	bufs        sync.Pool           // of *[]byte with cap == chunkSize
	escapeErr   error               // the error os.Root reports for a path leaving it
	hashing     *semaphore.Weighted // a slot per manifest computed at once

	// Bounds of a listing: transfer.MaxEntries and transfer.MaxListLen,
	// lowered by tests.
	maxEntries int
	maxListLen int64

	computed     atomic.Int64
	cacheHits    atomic.Int64
	cacheMisses  atomic.Int64
	hashWaits    atomic.Int64
	replyEncodes atomic.Int64
	replyHits    atomic.Int64
}

// NewCatalog opens dir as the root of a Catalog.
func NewCatalog(dir string, opts *CatalogOptions) (*Catalog, error) {
	var o CatalogOptions
	if opts != nil {
		o = *opts
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = transfer.DefaultChunkSize
	}
	if o.ChunkSize < transfer.MinChunkSize || o.ChunkSize > transfer.MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d outside [%d, %d]", o.ChunkSize, transfer.MinChunkSize, transfer.MaxChunkSize)
	}
	if o.Hash == "" {
		o.Hash = transfer.BLAKE3.String()
	}
	alg, err := transfer.ParseHashAlg(o.Hash)
	if err != nil {
		return nil, err
	}
	if o.ManifestCacheEntries == 0 {
		o.ManifestCacheEntries = DefaultManifestCacheEntries
	}
	if o.ManifestCacheBytes == 0 {
		o.ManifestCacheBytes = DefaultManifestCacheBytes
	}
	if o.MaxConcurrentHashes <= 0 {
		o.MaxConcurrentHashes = runtime.GOMAXPROCS(0)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root: %w", err)
	}
	c := &Catalog{
		root:      root,
		chunkSize: o.ChunkSize,
		alg:       alg,
		cache:     newManifestCache(o.ManifestCacheEntries, o.ManifestCacheBytes),
		hashing:   semaphore.NewWeighted(int64(o.MaxConcurrentHashes)),

		maxEntries: transfer.MaxEntries,
		maxListLen: transfer.MaxListLen,
	}
	c.bufs.New = func() any {
		b := make([]byte, c.chunkSize)
		return &b
	}
	// Learn the error value os.Root uses for escaping paths, so that
	// symlinks leading out can be told from other failures.
	_, err = root.Lstat("../kwikfs-escape-probe")
	var pe *os.PathError
	if errors.As(err, &pe) {
		c.escapeErr = pe.Err
	} else {
		root.Close()
		return nil, fmt.Errorf("os.Root did not refuse an escaping path (got %v)", err)
	}
	return c, nil
}

// Close releases the root directory. Calls after Close fail.
func (c *Catalog) Close() error { return c.root.Close() }

// ChunkSize returns the chunk size of the catalog's manifests.
func (c *Catalog) ChunkSize() uint32 { return c.chunkSize }

// HashAlg returns the chunk hash algorithm of the catalog's manifests.
func (c *Catalog) HashAlg() transfer.HashAlg { return c.alg }

// Stats returns the catalog's counters.
func (c *Catalog) Stats() CatalogStats {
	n, bytes := c.cache.size()
	return CatalogStats{
		ManifestsComputed:      c.computed.Load(),
		ManifestCacheHits:      c.cacheHits.Load(),
		ManifestCacheMisses:    c.cacheMisses.Load(),
		CachedManifests:        n,
		CachedBytes:            bytes,
		HashWaits:              c.hashWaits.Load(),
		ManifestRepliesEncoded: c.replyEncodes.Load(),
		ManifestReplyHits:      c.replyHits.Load(),
	}
}

// rootName validates a protocol path and returns the name to use with
// os.Root ("." for the root itself).
func rootName(path string) (string, error) {
	if err := transfer.CheckPath(path); err != nil {
		return "", err
	}
	if path == "" {
		return ".", nil
	}
	return path, nil
}

// mapErr turns a file system error into an error wrapping the matching
// sentinel error of package transfer.
func (c *Catalog) mapErr(op, path string, err error) error {
	var sentinel error
	var errno syscall.Errno
	switch {
	case errors.Is(err, c.escapeErr):
		sentinel = transfer.ErrOutsideRoot
	case errors.Is(err, fs.ErrNotExist):
		sentinel = transfer.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		sentinel = transfer.ErrPermission
	case errors.As(err, &errno) && errno == syscall.ENOTDIR:
		sentinel = transfer.ErrNotDir
	case errors.As(err, &errno) && errno == syscall.EISDIR:
		sentinel = transfer.ErrIsDir
	case errors.As(err, &errno) && errno == syscall.ELOOP:
		return fmt.Errorf("%s %q: too many levels of symbolic links: %w", op, path, transfer.ErrNotFound)
	case errors.As(err, &errno) && errno == syscall.ENAMETOOLONG:
		sentinel = transfer.ErrTooLarge
	default:
		// Keep the server's own directory names out of replies.
		msg := strings.ReplaceAll(err.Error(), c.root.Name(), "<root>")
		return fmt.Errorf("%s %q: %s: %w", op, path, msg, transfer.ErrInternal)
	}
	return fmt.Errorf("%s %q: %w", op, path, sentinel)
}

// attrOf converts fi (from lstat) to an Attr; ok is false for types that
// are not exported.
func attrOf(fi fs.FileInfo) (a transfer.Attr, ok bool) {
	m := fi.Mode()
	switch {
	case m.IsRegular():
		a.Mode = transfer.ModeRegular
	case m.IsDir():
		a.Mode = transfer.ModeDir
	case m&fs.ModeSymlink != 0:
		a.Mode = transfer.ModeSymlink
	default:
		return a, false
	}
	a.Mode |= uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		a.Mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		a.Mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		a.Mode |= 0o1000
	}
	a.Size = fi.Size()
	a.MtimeNs = fi.ModTime().UnixNano()
	return a, true
}

// lstatIn returns the Attr of name in r, with the target of a symlink.
func (c *Catalog) lstatIn(r *os.Root, name string) (transfer.Attr, bool, error) {
	fi, err := r.Lstat(name)
	if err != nil {
		return transfer.Attr{}, false, err
	}
	a, ok := attrOf(fi)
	if !ok {
		return a, false, nil
	}
	if a.IsSymlink() {
		if a.Target, err = r.Readlink(name); err != nil {
			return transfer.Attr{}, false, err
		}
		if a.Target == "" || len(a.Target) > transfer.MaxTargetLen {
			return a, false, nil
		}
	}
	return a, true, nil
}

// Stat returns the attributes of path without following a final symlink
// (lstat semantics: a symlink is reported as a symlink with its Target).
// Symlinks in earlier elements are followed if they stay within the root.
// The Attr's Name is empty. Types other than regular files, directories and
// symlinks are refused with ErrNotFound.
func (c *Catalog) Stat(path string) (transfer.Attr, error) {
	name, err := rootName(path)
	if err != nil {
		return transfer.Attr{}, err
	}
	a, ok, err := c.lstatIn(c.root, name)
	if err != nil {
		return transfer.Attr{}, c.mapErr("stat", path, err)
	}
	if !ok {
		return transfer.Attr{}, fmt.Errorf("stat %q: not a regular file, directory or symlink: %w", path, transfer.ErrNotFound)
	}
	return a, nil
}

// Readlink returns the target of symlink path. A path that is not a
// symlink fails with ErrBadRequest.
func (c *Catalog) Readlink(path string) (string, error) {
	name, err := rootName(path)
	if err != nil {
		return "", err
	}
	target, err := c.root.Readlink(name)
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == syscall.EINVAL {
		return "", fmt.Errorf("readlink %q: not a symlink: %w", path, transfer.ErrBadRequest)
	}
	if err != nil {
		return "", c.mapErr("readlink", path, err)
	}
	if len(target) > transfer.MaxTargetLen {
		return "", fmt.Errorf("readlink %q: target of %d bytes: %w", path, len(target), transfer.ErrTooLarge)
	}
	return target, nil
}

// openRegular opens path (following symlinks within the root) and checks
// that it is a regular file.
func (c *Catalog) openRegular(op, path string) (*os.File, fs.FileInfo, error) {
	name, err := rootName(path)
	if err != nil {
		return nil, nil, err
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer; regular files
	// ignore it.
	f, err := c.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, c.mapErr(op, path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, c.mapErr(op, path, err)
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, nil, fmt.Errorf("%s %q: %w", op, path, transfer.ErrIsDir)
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, nil, fmt.Errorf("%s %q: not a regular file: %w", op, path, transfer.ErrNotFound)
	}
	return f, fi, nil
}

// Manifest returns the manifest of regular file path (following symlinks
// that stay within the root). Manifests are computed once and cached; a
// cached manifest is used while the file's size and mtime are unchanged.
// Concurrent calls for the same file state hash the file once. The
// returned Manifest is shared: callers must not modify it.
func (c *Catalog) Manifest(ctx context.Context, path string) (*transfer.Manifest, error) {
	f, fi, err := c.openRegular("manifest", path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.manifestOf(ctx, path, f, fi)
}

func (c *Catalog) manifestOf(ctx context.Context, path string, f *os.File, fi fs.FileInfo) (*transfer.Manifest, error) {
	mode, _ := attrOf(fi)
	key := manifestKey{size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if m := c.cache.get(path, key); m != nil {
		c.cacheHits.Add(1)
		if m.Mode != mode.Mode {
			mm := *m // chmod changes neither size, mtime nor content
			mm.Mode = mode.Mode
			c.cache.put(path, key, &mm)
			m = &mm
		}
		return m, nil
	}
	flightKey := path + "\x00" + strconv.FormatInt(key.size, 10) + "\x00" + strconv.FormatInt(key.mtimeNs, 10)
	for {
		v, err, _ := c.flight.Do(flightKey, func() (any, error) {
			// A computation that ended since the lookup above has cached
			// the manifest.
			if m := c.cache.get(path, key); m != nil && m.Mode == mode.Mode {
				c.cacheHits.Add(1)
				return m, nil
			}
			c.cacheMisses.Add(1)
			m, err := c.compute(ctx, path, f)
			if err != nil {
				return nil, err
			}
			return m, nil
		})
		if leaderGaveUp(ctx, err) {
			continue // the computing caller gave up; compute again with our context
		}
		if err != nil {
			return nil, err
		}
		return v.(*transfer.Manifest), nil
	}
}

// leaderGaveUp reports whether err, from a singleflight call, is the
// cancellation of the caller that ran it while ctx, the context of one
// that shared its result, goes on: the latter should then try again.
func leaderGaveUp(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// manifestReply returns the OK reply to MANIFEST path, as
// transfer.EncodeReply encodes it. The reply is cached with the manifest
// (within CatalogOptions.ManifestCacheBytes), so that the requests for a
// file state share one encoding: requests arriving while it is encoded
// wait for it. Encoding is charged to h (encodeCost), waiting as long as
// ctx allows. The returned bytes are shared: callers must not modify them.
func (c *Catalog) manifestReply(ctx context.Context, path string, h *hold) ([]byte, error) {
	f, fi, err := c.openRegular("manifest", path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := c.manifestOf(ctx, path, f, fi)
	if err != nil {
		return nil, err
	}
	if b := c.cache.reply(path, m); b != nil {
		c.replyHits.Add(1)
		return b, nil
	}
	// The encoding depends on all of the manifest: Version covers the
	// hashes, size, chunk size and algorithm; mtime and mode remain.
	flightKey := path + "\x00" + string(m.Version[:]) + "\x00" + strconv.FormatInt(m.MtimeNs, 10) + "\x00" + strconv.FormatUint(uint64(m.Mode), 8)
	for {
		encoded := false
		v, err, _ := c.replyFlight.Do(flightKey, func() (any, error) {
			if b := c.cache.reply(path, m); b != nil {
				return b, nil // encoded by a call that just ended
			}
			encoded = true
			if err := h.resize(ctx, encodeCost(m)); err != nil {
				return nil, fmt.Errorf("manifest %q: %w", path, err)
			}
			b, err := transfer.EncodeReply(transfer.OpManifest, &transfer.Reply{Manifest: m})
			if err != nil {
				return nil, fmt.Errorf("manifest %q: %w", path, err)
			}
			c.replyEncodes.Add(1)
			c.cache.setReply(path, m, b)
			return b, nil
		})
		if leaderGaveUp(ctx, err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !encoded {
			c.replyHits.Add(1)
		}
		return v.([]byte), nil
	}
}

// encodeCost is the most memory encoding m's MANIFEST reply holds at
// once: the encoded manifest, its compressed copy and the reply, each at
// most the encoded manifest (see transfer.EncodeReply).
func encodeCost(m *transfer.Manifest) int64 {
	return 3 * int64(transfer.FilesCost(m, false))
}

// compute hashes f and caches the result under the state (size, mtime) it
// had during the whole computation. It first waits for a hashing slot
// (CatalogOptions.MaxConcurrentHashes) as long as ctx allows.
func (c *Catalog) compute(ctx context.Context, path string, f *os.File) (*transfer.Manifest, error) {
	if !c.hashing.TryAcquire(1) {
		c.hashWaits.Add(1)
		if err := c.hashing.Acquire(ctx, 1); err != nil {
			return nil, fmt.Errorf("manifest %q: wait to hash: %w", path, err)
		}
	}
	defer c.hashing.Release(1)
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	rd := directio.NewReader(f)
	defer rd.Close()
	for attempt := 0; attempt < maxManifestAttempts; attempt++ {
		fi, err := f.Stat()
		if err != nil {
			return nil, c.mapErr("manifest", path, err)
		}
		a, _ := attrOf(fi)
		m := &transfer.Manifest{Size: fi.Size(), MtimeNs: a.MtimeNs, Mode: a.Mode, ChunkSize: c.chunkSize, Alg: c.alg}
		if m.Size > int64(transfer.MaxChunks)*int64(c.chunkSize) {
			return nil, fmt.Errorf("manifest %q: %d bytes need more than %d chunks: %w", path, m.Size, transfer.MaxChunks, transfer.ErrTooLarge)
		}
		m.Hashes = make([]transfer.Hash, m.NumChunks())
		changed := false
		for i := range m.Hashes {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("manifest %q: %w", path, err)
			}
			n, err := rd.ReadAt(buf[:m.ChunkLen(i)], m.ChunkOffset(i))
			if n < m.ChunkLen(i) {
				if err == io.EOF {
					changed = true // the file shrank
					break
				}
				return nil, c.mapErr("manifest", path, err)
			}
			m.Hashes[i] = m.Sum(buf[:n])
		}
		c.computed.Add(1)
		fi2, err := f.Stat()
		if err != nil {
			return nil, c.mapErr("manifest", path, err)
		}
		if changed || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
			continue
		}
		m.Version = transfer.ComputeVersion(m.Alg, m.Size, m.ChunkSize, m.Hashes)
		c.cache.put(path, manifestKey{size: m.Size, mtimeNs: m.MtimeNs}, m)
		return m, nil
	}
	return nil, fmt.Errorf("manifest %q: file keeps changing while hashed: %w", path, transfer.ErrStale)
}

// File is an open regular file of a Catalog at the version of its
// manifest. It is safe for concurrent use.
type File struct {
	c    *Catalog
	path string
	f    *os.File
	rd   *directio.Reader // reads f's chunks past the page cache unless it holds them
	m    *transfer.Manifest
}

// Open opens regular file path for reading chunks of the given version. It
// fails with ErrStale when the file's current manifest has another
// Version. The caller must Close the File.
func (c *Catalog) Open(ctx context.Context, path string, version transfer.Hash) (*File, error) {
	f, fi, err := c.openRegular("read", path)
	if err != nil {
		return nil, err
	}
	m, err := c.manifestOf(ctx, path, f, fi)
	if err != nil {
		f.Close()
		return nil, err
	}
	if m.Version != version {
		f.Close()
		return nil, fmt.Errorf("read %q: version %.12s is not the current %.12s: %w", path, version, m.Version, transfer.ErrStale)
	}
	return &File{c: c, path: path, f: f, rd: directio.NewReader(f), m: m}, nil
}

// Manifest returns the manifest the File was opened at. It is shared:
// callers must not modify it.
func (f *File) Manifest() *transfer.Manifest { return f.m }

// Close closes the file.
func (f *File) Close() error {
	f.rd.Close()
	return f.f.Close()
}

// ReadChunk reads chunk i into buf, which must hold ChunkLen(i) bytes, and
// returns the chunk's bytes (a prefix of buf). The data is not verified
// against the manifest; a file that shrank fails with ErrStale.
func (f *File) ReadChunk(i int, buf []byte) ([]byte, error) {
	if i < 0 || i >= f.m.NumChunks() {
		return nil, fmt.Errorf("read %q: chunk %d of %d: %w", f.path, i, f.m.NumChunks(), transfer.ErrBadRequest)
	}
	n := f.m.ChunkLen(i)
	if len(buf) < n {
		return nil, fmt.Errorf("read %q: buffer of %d bytes for chunk of %d: %w", f.path, len(buf), n, transfer.ErrInternal)
	}
	got, err := f.rd.ReadAt(buf[:n], f.m.ChunkOffset(i))
	if got < n {
		if err == io.EOF {
			return nil, fmt.Errorf("read %q: chunk %d: file shrank: %w", f.path, i, transfer.ErrStale)
		}
		return nil, f.c.mapErr("read", f.path, err)
	}
	return buf[:n], nil
}

// CheckRange validates a run of count chunks from first against the
// manifest (ErrBadRequest when it is empty or out of range).
func (f *File) CheckRange(first, count int) error {
	if first < 0 || count < 1 || first >= f.m.NumChunks() || count > f.m.NumChunks()-first {
		return fmt.Errorf("read %q: chunks [%d, +%d) of %d: %w", f.path, first, count, f.m.NumChunks(), transfer.ErrBadRequest)
	}
	return nil
}

// WriteChunks writes the bytes of chunks first to first+count-1 to w,
// concatenated, reading each with pread into a pooled buffer. It returns
// the number of bytes written. It stops with ctx's error when ctx ends
// between chunks.
func (f *File) WriteChunks(ctx context.Context, w io.Writer, first, count int) (int64, error) {
	if err := f.CheckRange(first, count); err != nil {
		return 0, err
	}
	bp := f.c.bufs.Get().(*[]byte)
	defer f.c.bufs.Put(bp)
	var written int64
	for i := first; i < first+count; i++ {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		data, err := f.ReadChunk(i, *bp)
		if err != nil {
			return written, err
		}
		n, err := w.Write(data)
		written += int64(n)
		if err != nil {
			return written, fmt.Errorf("read %q: send chunk %d: %w", f.path, i, err)
		}
	}
	return written, nil
}
