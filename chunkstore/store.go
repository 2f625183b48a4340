package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

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
// Badger refuses to open a directory written with another value, so a
// future incompatible layout fails loudly instead of misreading.
const formatMagic = 1

// Options configure Open. The zero value (or a nil *Options) is valid.
type Options struct {
	// Logger receives the store's warnings and Badger's log: Badger's
	// informational chatter at Debug, its warnings at Warn and its errors
	// at Error. Default slog.Default().
	Logger *slog.Logger
	// SyncWrites makes every write fsync before it returns. Default false:
	// a crash of the machine may lose the last writes, never leave a torn
	// one (a killed process loses nothing that was acknowledged).
	SyncWrites bool

	// valueLogFileSize overrides the value log file size (tests only).
	valueLogFileSize int64
}

// Stats are exact counters of a Store. Chunks and ChunkBytes describe what
// is stored now, restored by Open; the others count events since Open.
type Stats struct {
	Chunks      int64 // chunks stored
	ChunkBytes  int64 // total length of the chunks stored
	Hits        int64 // Get calls that returned a verified chunk
	Misses      int64 // Get calls that returned ErrNotFound
	Corrupt     int64 // stored chunks that failed verification and were removed
	Puts        int64 // Put calls that stored a new chunk
	PutBytes    int64 // bytes stored by those Put calls
	PutDups     int64 // Put calls whose chunk was already stored (nothing written)
	MetaCorrupt int64 // metadata records that failed their checksum and were removed
}

// Store is a chunk and metadata cache in one directory. It is safe for
// concurrent use; see the package documentation.
type Store struct {
	db  *badger.DB
	log *slog.Logger

	// gate guards closed. ops counts operations in flight: Add happens only
	// under gate while closed is false, so Close (which sets closed, then
	// waits) never races an Add.
	gate   sync.Mutex
	closed bool
	ops    sync.WaitGroup

	// statsMu guards stats.
	statsMu sync.Mutex
	stats   Stats
}

// Open opens the store in dir, creating dir (mode 0700) and an empty store
// if needed, and counts the chunks already there. A directory is used by
// one Store at a time: while it is open, a second Open of the same dir, in
// this process or another, fails with Badger's "Cannot acquire directory
// lock" error.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunkstore: create %s: %w", dir, err)
	}
	db, err := badger.Open(badgerOptions(dir, o))
	if err != nil {
		return nil, fmt.Errorf("chunkstore: open %s: %w", dir, err)
	}
	s := &Store{db: db, log: o.Logger}
	if err := s.countChunks(); err != nil {
		db.Close()
		return nil, fmt.Errorf("chunkstore: open %s: %w", dir, err)
	}
	return s, nil
}

// badgerOptions returns the Badger configuration for a client-side chunk
// cache on a small machine, and why:
//   - ValueThreshold 32 KiB: 1 MiB chunks go to the value log, so the LSM
//     tree holds only keys, value pointers, info records and small metadata;
//     compactions never rewrite chunk data, and a Get reads the chunk with
//     one copy out of the memory-mapped value log.
//   - ValueLogFileSize 256 MiB (default 1 GiB): smaller files are a finer
//     unit for value-log GC once eviction deletes chunks.
//   - MemTableSize 16 MiB, NumMemtables 2: the memtable holds pointers, not
//     chunks (about 200 bytes per chunk), so 16 MiB covers tens of GiB of
//     chunks; resident memory stays well under 64 MiB.
//   - Compression None: chunk bytes in the value log are never compressed by
//     Badger, and SHA-256 keys do not compress, so Snappy would cost CPU for
//     nothing. Without compression or encryption, table blocks are read from
//     the mmapped files, so BlockCacheSize 8 MiB (default 256 MiB) only keeps
//     parsed blocks of hot keys; IndexCacheSize 0 because Badger uses the
//     index cache for encrypted tables only (plain table indexes stay in
//     memory, tens of bytes per 4 KiB block).
//   - ChecksumVerificationMode OnBlockRead: a damaged table block is an
//     error, not garbage (CRC-32C of a 4 KiB block, then cached).
//   - VerifyValueChecksum true: Get hashes every chunk anyway, but Badger's
//     value log read path leaks a file lock (and Close then hangs) on an
//     entry whose header is damaged, unless the entry's CRC-32C is checked
//     first. The CRC costs a few percent of a Get (hardware CRC-32C against
//     SHA-256).
//   - NumCompactors 2 (the least Badger allows with compaction on) for a
//     2-core machine; NumVersionsToKeep 1; DetectConflicts true (exact
//     counters rely on it); metrics off (global expvars).
func badgerOptions(dir string, o Options) badger.Options {
	bo := badger.DefaultOptions(dir)
	bo.Logger = badgerLogger{o.Logger.With("component", "badger")}
	bo.SyncWrites = o.SyncWrites
	bo.NumVersionsToKeep = 1
	bo.ValueThreshold = 32 << 10
	bo.ValueLogFileSize = 256 << 20
	if o.valueLogFileSize > 0 {
		bo.ValueLogFileSize = o.valueLogFileSize
	}
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

// countChunks sets Stats.Chunks and Stats.ChunkBytes from the info records.
func (s *Store) countChunks() error {
	var n, bytes int64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsInfo}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var size int64
			err := item.Value(func(v []byte) error {
				var err error
				size, err = decodeInfo(v)
				return err
			})
			if errors.Is(err, ErrCorrupt) {
				s.log.Warn("chunkstore: unreadable chunk info record, chunk not counted",
					"key", fmt.Sprintf("%x", item.Key()), "err", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("count chunks: %w", err)
			}
			n++
			bytes += size
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.stats.Chunks, s.stats.ChunkBytes = n, bytes
	return nil
}

// Close waits for operations in flight, then closes Badger (flushing its
// memtable). Later calls on s return ErrClosed; a second Close returns nil.
func (s *Store) Close() error {
	s.gate.Lock()
	if s.closed {
		s.gate.Unlock()
		return nil
	}
	s.closed = true
	s.gate.Unlock()
	s.ops.Wait()
	if err := s.db.Close(); err != nil {
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

// Stats returns a consistent snapshot of the counters.
func (s *Store) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
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
