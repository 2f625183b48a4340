package server

import (
	"container/list"
	"sync"

	"github.com/kwikfs/kwikfs/transfer"
)

// manifestKey identifies the state of a file that a cached manifest
// describes: when the file's size or mtime differ, the manifest is stale.
type manifestKey struct {
	size    int64
	mtimeNs int64
}

type cacheEntry struct {
	name string
	key  manifestKey
	m    *transfer.Manifest
	cost int64
}

// manifestCache is a bounded LRU of manifests by path.
type manifestCache struct {
	maxEntries int
	maxBytes   int64

	mu sync.Mutex
	// guarded by mu:
	lru   *list.List // of *cacheEntry, most recently used first
	byKey map[string]*list.Element
	bytes int64 // sum of cost over lru
}

func newManifestCache(maxEntries int, maxBytes int64) *manifestCache {
	return &manifestCache{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), byKey: make(map[string]*list.Element)}
}

// entryCost approximates the memory a cached manifest holds.
func entryCost(name string, m *transfer.Manifest) int64 {
	return int64(len(name) + len(m.Hashes)*len(transfer.Hash{}) + 160)
}

// get returns the manifest cached for name if it was taken at key.
func (c *manifestCache) get(name string, key manifestKey) *transfer.Manifest {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[name]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if e.key != key {
		return nil
	}
	c.lru.MoveToFront(el)
	return e.m
}

// put caches m for name at key, replacing any older entry, and evicts the
// least recently used entries beyond the bounds. A manifest costing more
// than maxBytes is not cached.
func (c *manifestCache) put(name string, key manifestKey, m *transfer.Manifest) {
	cost := entryCost(name, m)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[name]; ok {
		c.removeLocked(el)
	}
	if cost > c.maxBytes || c.maxEntries <= 0 {
		return
	}
	c.byKey[name] = c.lru.PushFront(&cacheEntry{name: name, key: key, m: m, cost: cost})
	c.bytes += cost
	for c.lru.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.removeLocked(c.lru.Back())
	}
}

func (c *manifestCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.byKey, e.name)
	c.bytes -= e.cost
}

// len returns the number of cached manifests.
func (c *manifestCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
