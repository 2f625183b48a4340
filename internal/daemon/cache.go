package daemon

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/kwikfs/kwikfs/chunkstore"
)

// StoreDir is the chunk store's directory inside a cache directory.
const StoreDir = "store"

// OpenCache opens the chunk store of cache directory dir (dir/StoreDir),
// after making dir private to its owner (PrivateDir), as a mount and
// `kwikfs get --cache` share it. size bounds the disk space of the cached
// chunks as Config.CacheSize says: 0 lets the store choose
// (chunkstore.AutoLimit: half of the free space of its filesystem),
// negative means no limit. A store that a running mount holds fails to
// open; the error says so.
func OpenCache(dir string, size int64, log *slog.Logger) (*chunkstore.Store, error) {
	if err := PrivateDir(dir, log); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	limit := size
	switch {
	case size == 0:
		limit = chunkstore.AutoLimit
	case size < 0:
		limit = 0 // the store's "no limit"
	}
	storeDir := filepath.Join(dir, StoreDir)
	store, err := chunkstore.Open(storeDir, &chunkstore.Options{Logger: log, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("open cache %s (a mount using it holds it): %w", storeDir, err)
	}
	return store, nil
}
