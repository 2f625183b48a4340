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
	name  string
	key   manifestKey
	m     *transfer.Manifest
	reply []byte // m's encoded MANIFEST reply; nil until first sent
	cost  int64  // entryCost of m, plus len(reply)
}

// manifestCache is a bounded LRU of manifests by path, each with its
// encoded MANIFEST reply once one was sent. Its bounds count both.
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
	if e := c.useLocked(name, func(e *cacheEntry) bool { return e.key == key }); e != nil {
		return e.m
	}
	return nil
}

// useLocked returns the entry of name if match accepts it, and marks it
// most recently used; nil otherwise. c.mu must be held.
func (c *manifestCache) useLocked(name string, match func(*cacheEntry) bool) *cacheEntry {
	el, ok := c.byKey[name]
	if !ok || !match(el.Value.(*cacheEntry)) {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cacheEntry)
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

// reply returns the MANIFEST reply cached with m for name, or nil when
// none is (or the entry of name holds another manifest than m).
func (c *manifestCache) reply(name string, m *transfer.Manifest) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.useLocked(name, func(e *cacheEntry) bool { return e.m == m }); e != nil {
		return e.reply
	}
	return nil
}

// setReply caches reply, m's encoded MANIFEST reply, with m, if the entry
// of name still holds m and has no reply, and evicts the least recently
// used other entries beyond the byte bound. An entry that would cost more
// than maxBytes with its reply keeps none. c retains reply: callers must
// not modify it.
func (c *manifestCache) setReply(name string, m *transfer.Manifest, reply []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[name]
	if !ok {
		return
	}
	e := el.Value.(*cacheEntry)
	if e.m != m || e.reply != nil || e.cost+int64(len(reply)) > c.maxBytes {
		return
	}
	e.reply = reply
	e.cost += int64(len(reply))
	c.bytes += int64(len(reply))
	c.lru.MoveToFront(el)
	for c.bytes > c.maxBytes { // e, in front, fits alone
		c.removeLocked(c.lru.Back())
	}
}

// len returns the number of cached manifests.
func (c *manifestCache) len() int {
	n, _ := c.size()
	return n
}

// size returns the number of cached manifests and their cost in bytes.
func (c *manifestCache) size() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}
