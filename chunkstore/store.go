package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

var (
	// ErrNotFound reports that no chunk or metadata record is stored under
	// the given sum or key.
	ErrNotFound = errors.New("chunkstore: not found")
	// ErrCorrupt reports data that does not match its hash or checksum:
	// a Put whose data is not the sum it claims, or a stored chunk or record
	// that failed verification (and has been removed).
	ErrCorrupt = errors.New("chunkstore: data does not match its hash")
	// ErrClosed reports a call on a Store after Close.
	ErrClosed = errors.New("chunkstore: store closed")
	// ErrInvalidKey reports a metadata key longer than MaxMetaKeyLen.
	ErrInvalidKey = errors.New("chunkstore: invalid metadata key")
)

// formatMagic is stored in Badger's manifest (Options.ExternalMagicVersion);
// Badger refuses to open a directory written with another value, so an
// incompatible layout fails loudly instead of misreading. 1: chunk bytes in
// Badger's value log; 2: chunk bytes in segment files, located by the chunk
// records.
const formatMagic = 2

// Options configure Open. The zero value (or a nil *Options) is valid.
type Options struct {
	// Logger receives the store's warnings and Badger's log: Badger's
	// informational chatter at Debug, its warnings at Warn and its errors
	// at Error. Default slog.Default().
	Logger *slog.Logger
	// SyncWrites makes every write durable before it returns: a Put or
	// PutVerified fdatasyncs the segment holding the chunks before it
	// commits their index entries, and Badger fsyncs every commit. Default
	// false: a crash of the machine may lose the last writes (Get then
	// finds them missing or failing their hash, and drops them), never
	// serve a torn one; a killed process loses nothing acknowledged.
	SyncWrites bool
	// Limit bounds Stats.DiskBytes, the disk space of the stored chunks
	// (each counted in whole 4 KiB blocks; Badger's index and metadata
	// files are not included). A write that would take the store past
	// Limit first evicts the least recently used chunks that are not
	// pinned, down to 90% of Limit, and releases their space (see the
	// package documentation). Open evicts too when the store already holds
	// more. AutoLimit makes Open choose the limit from the free space of
	// the store's filesystem. Default 0, and any other value below 1: no
	// limit, nothing is ever evicted.
	Limit int64

	// segmentSize overrides defaultSegmentSize (tests only).
	segmentSize int64
	// maxOpenSegments overrides defaultMaxOpenSegments (tests only).
	maxOpenSegments int
	// noPunch makes the store behave as on a filesystem that cannot punch
	// holes (tests only).
	noPunch bool
	// unaligned makes the appender write chunks back to back, as the first
	// segment layout did (tests only).
	unaligned bool
	// freeSpace overrides statfsFree, the free space AutoLimit starts
	// from (tests only).
	freeSpace func(dir string) (int64, error)
}

// Stats are exact counters of a Store. Chunks, ChunkBytes, DiskBytes,
// PinnedBytes and PinnedChunks describe what is stored now (restored by
// Open) and Limit the configured bound; the others count events since
// Open.
type Stats struct {
	Chunks     int64 // chunks stored
	ChunkBytes int64 // total length of the chunks stored
	// DiskBytes is the disk space the chunks take, what Options.Limit
	// bounds: each chunk in whole 4 KiB blocks, plus the space of removed
	// chunks not released yet (on a filesystem without hole punching, until
	// their segment file goes).
	DiskBytes int64
	// Limit is Options.Limit (the figure Open chose for AutoLimit); 0
	// means no limit.
	Limit int64
	// PinnedChunks and PinnedBytes (in DiskBytes terms) describe the
	// stored chunks that are pinned (see Store.Pin) and so never evicted.
	PinnedChunks int64
	PinnedBytes  int64
	// Evicted and EvictedBytes count the chunks (and their length) removed
	// to keep DiskBytes under Limit.
	Evicted      int64
	EvictedBytes int64
	// OverLimit counts writes after which DiskBytes stayed above Limit
	// because every chunk left is pinned. The store then holds more than
	// its limit rather than refuse a write or evict a pinned chunk.
	OverLimit int64
	// HolesPunched and PunchedBytes count the releases of removed chunks'
	// blocks by punching holes in their segments; SegmentsRemoved counts
	// segment files deleted because none of their chunks was left.
	HolesPunched    int64
	PunchedBytes    int64
	SegmentsRemoved int64
	Hits            int64 // Get calls that returned a verified chunk
	Misses          int64 // Get calls that returned ErrNotFound
	Corrupt         int64 // stored chunks that failed verification (or whose bytes Open found lost) and were removed
	Puts            int64 // Put calls that stored a new chunk
	PutBytes        int64 // bytes stored by those Put calls
	PutDups         int64 // Put calls whose chunk was already stored (nothing written)
	MetaCorrupt     int64 // metadata records that failed their checksum and were removed
}

// Store is a chunk and metadata cache in one directory. It is safe for
// concurrent use; see the package documentation.
type Store struct {
	db   *badger.DB
	log  *slog.Logger
	segs *readers // read descriptors of the segment files

	// writeMu serializes the writers of chunks: the duplicate check, the
	// append to the segment and the commit of the index entries of one
	// batch all happen under it, so identical chunks are appended once and
	// index entries are committed in the order of their bytes. It guards
	// app.
	writeMu sync.Mutex
	app     appender
	// afterAppend, when set (tests only, before the Store is shared), runs
	// under writeMu between a batch's append and its index commit.
	afterAppend func(seg uint32, off, n int64)
	// afterEvict, when set (tests only, before the Store is shared), runs
	// under writeMu between the commit that removes evicted chunks' records
	// and the release of their space.
	afterEvict func()
	// limit is Options.Limit; immutable.
	limit int64
	// punch is cleared (under writeMu) once the filesystem has refused to
	// punch a hole: space then comes back only with whole segment files.
	punch bool
	// overLimit is set (under writeMu) while the store is above its limit
	// because everything left is pinned; it keeps the warning to one per
	// episode.
	overLimit bool

	// clock is the logical clock of chunk uses: each Put and Get of a chunk
	// stamps it with clock.Add(1).
	clock atomic.Uint64
	// idxMu guards index, segments, pins, disk and pinned. Their writers
	// hold writeMu too (except Pin, which touches pins and pinned only), so
	// a holder of writeMu may read index and segments without idxMu. Taken
	// after writeMu.
	idxMu    sync.RWMutex
	index    map[[32]byte]*entry  // every stored chunk
	segments map[uint32]*segUsage // the segments holding chunks or unreleased space
	pins     map[[32]byte]int     // pin counts of pinned sums, stored or not
	disk     int64                // Stats.DiskBytes
	pinned   int64                // Stats.PinnedBytes
	npinned  int64                // Stats.PinnedChunks

	// gate guards closed. ops counts operations in flight: Add happens only
	// under gate while closed is false, so Close (which sets closed, then
	// waits) never races an Add.
	gate   sync.Mutex
	closed bool
	ops    sync.WaitGroup

	// statsMu guards stats; taken after idxMu.
	statsMu sync.Mutex
	stats   Stats
}

// Open opens the store in dir, creating dir (mode 0700) and an empty store
// if needed. It reconciles the index with the segment files: a chunk
// record whose bytes are missing (the segment is gone or too short, as a
// machine crash with SyncWrites false can leave it) is removed and counted
// in Stats.Corrupt; bytes that no record points to at the end of a segment
// (a write cut short by a crash) are truncated, a segment that no record
// points to is removed, and a hole is punched wherever else unreferenced
// bytes still take space (an eviction cut short by a crash). Then it
// builds the in-memory index with the chunks' saved last uses, counts
// them, and evicts down to Options.Limit if the store holds more. A
// directory is
// used by one Store at a time: while it is open, a second Open of the same
// dir, in this process or another, fails with Badger's "Cannot acquire
// directory lock" error. A directory written with another layout fails to
// open with an error naming Badger's "magic" version.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.segmentSize <= 0 {
		o.segmentSize = defaultSegmentSize
	}
	if o.maxOpenSegments <= 0 {
		o.maxOpenSegments = defaultMaxOpenSegments
	}
	if o.freeSpace == nil {
		o.freeSpace = statfsFree
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunkstore: create %s: %w", dir, err)
	}
	if o.Limit == AutoLimit {
		var err error
		if o.Limit, err = autoLimit(dir, o.freeSpace); err != nil {
			return nil, err
		}
	}
	if o.Limit < 0 {
		o.Limit = 0
	}
	if o.Limit > 0 {
		// Smaller segments under a small limit: a segment file goes as soon
		// as its last chunk does, and without hole punching segments are
		// the only unit of space that comes back.
		o.segmentSize = min(o.segmentSize, max(o.Limit/8, minLimitedSegmentSize))
	}
	db, err := badger.Open(badgerOptions(dir, o))
	if err != nil {
		return nil, fmt.Errorf("chunkstore: open %s: %w", dir, err)
	}
	segDir := filepath.Join(dir, segmentsDir)
	s := &Store{
		db:       db,
		log:      o.Logger,
		segs:     newReaders(segDir, o.maxOpenSegments),
		app:      appender{dir: segDir, limit: o.segmentSize, align: !o.unaligned, sync: o.SyncWrites},
		limit:    o.Limit,
		punch:    !o.noPunch,
		index:    make(map[[32]byte]*entry),
		segments: make(map[uint32]*segUsage),
		pins:     make(map[[32]byte]int),
	}
	err = s.recover()
	if err == nil && s.limit > 0 {
		s.writeMu.Lock()
		err = s.makeRoom(0)
		s.writeMu.Unlock()
	}
	if err != nil {
		s.app.close()
		s.segs.close()
		db.Close()
		return nil, fmt.Errorf("chunkstore: open %s: %w", dir, err)
	}
	return s, nil
}

// badgerOptions returns the Badger configuration for the index and the
// metadata of a client-side chunk cache on a small machine, and why:
//   - ValueThreshold 32 KiB: chunk records (21 bytes) and most metadata
//     live in the LSM tree; large metadata records (manifests of big
//     files) go to the value log.
//   - ValueLogFileSize 64 MiB (default 1 GiB): the value log holds only
//     large metadata records now, rarely written.
//   - MemTableSize 16 MiB, NumMemtables 2: a chunk takes about 100 bytes of
//     memtable, so 16 MiB covers well over 100 GiB of chunks; resident
//     memory stays well under 64 MiB.
//   - Compression None: hash keys and locations do not compress, so
//     Snappy would cost CPU for nothing. Without compression or
//     encryption, table blocks are read from the mmapped files, so
//     BlockCacheSize 8 MiB (default 256 MiB) only keeps parsed blocks of
//     hot keys; IndexCacheSize 0 because Badger uses the index cache for
//     encrypted tables only (plain table indexes stay in memory, tens of
//     bytes per 4 KiB block).
//   - ChecksumVerificationMode OnBlockRead: a damaged table block is an
//     error, not garbage (CRC-32C of a 4 KiB block, then cached).
//   - VerifyValueChecksum true: Badger's value log read path leaks a file
//     lock (and Close then hangs) on an entry whose header is damaged,
//     unless the entry's CRC-32C is checked first.
//   - NumCompactors 2 (the least Badger allows with compaction on) for a
//     2-core machine; NumVersionsToKeep 1; DetectConflicts true (exact
//     counters rely on it); metrics off (global expvars).
func badgerOptions(dir string, o Options) badger.Options {
	bo := badger.DefaultOptions(dir)
	bo.Logger = badgerLogger{o.Logger.With("component", "badger")}
	bo.SyncWrites = o.SyncWrites
	bo.NumVersionsToKeep = 1
	bo.ValueThreshold = 32 << 10
	bo.ValueLogFileSize = 64 << 20
	bo.MemTableSize = 16 << 20
	bo.NumMemtables = 2
	bo.Compression = options.None
	bo.BlockCacheSize = 8 << 20
	bo.IndexCacheSize = 0
	bo.ChecksumVerificationMode = options.OnBlockRead
	bo.VerifyValueChecksum = true
	bo.NumCompactors = 2
	bo.DetectConflicts = true
	bo.MetricsEnabled = false
	bo.ExternalMagicVersion = formatMagic
	return bo
}

// Close waits for operations in flight, then saves the chunks' last-use
// stamps, syncs and closes the active segment, closes the segments' read
// descriptors and closes Badger (flushing its memtable). Later calls on s
// return ErrClosed; a second Close returns nil.
func (s *Store) Close() error {
	s.gate.Lock()
	if s.closed {
		s.gate.Unlock()
		return nil
	}
	s.closed = true
	s.gate.Unlock()
	s.ops.Wait()
	s.writeMu.Lock()
	err := s.saveStamps()
	err = errors.Join(err, s.app.close())
	s.writeMu.Unlock()
	s.segs.close()
	err = errors.Join(err, s.db.Close())
	if err != nil {
		return fmt.Errorf("chunkstore: close: %w", err)
	}
	return nil
}

// enter registers an operation in flight; the caller must call s.ops.Done.
func (s *Store) enter() error {
	s.gate.Lock()
	defer s.gate.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

// Stats returns a snapshot of the counters.
// The figures of what is stored (Chunks, ChunkBytes, DiskBytes, the pinned
// ones) are consistent with each other.
func (s *Store) Stats() Stats {
	s.idxMu.RLock()
	s.statsMu.Lock()
	st := s.stats
	s.statsMu.Unlock()
	st.DiskBytes, st.PinnedBytes, st.PinnedChunks = s.disk, s.pinned, s.npinned
	s.idxMu.RUnlock()
	st.Limit = s.limit
	return st
}

// count applies f to the counters under statsMu.
func (s *Store) count(f func(st *Stats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}

// badgerLogger sends Badger's log to slog: Infof and Debugf at Debug,
// Warningf at Warn, Errorf at Error.
type badgerLogger struct{ l *slog.Logger }

var _ badger.Logger = badgerLogger{}

func (b badgerLogger) Errorf(f string, a ...any)   { b.logf(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.logf(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.logf(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.logf(slog.LevelDebug, f, a) }

func (b badgerLogger) logf(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, a...)))
}
