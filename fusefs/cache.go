package fusefs

import (
	"container/list"
	"sync"
)

// lru is a cost-bounded least-recently-used map, safe for concurrent use.
// Values must be immutable once added: Get hands out the stored value.
type lru[K comparable, V any] struct {
	max  int64         // cost bound; immutable
	cost func(V) int64 // cost of one value; immutable
	mu   sync.Mutex    // guards the fields below
	used int64         // sum of the costs of the entries
	ll   *list.List    // front = most recently used; elements hold *lruEntry
	m    map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

// newLRU returns an empty cache holding values of total cost at most max.
func newLRU[K comparable, V any](max int64, cost func(V) int64) *lru[K, V] {
	return &lru[K, V]{max: max, cost: cost, ll: list.New(), m: make(map[K]*list.Element)}
}

// Get returns the value for k and marks it recently used.
func (c *lru[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*lruEntry[K, V]).val, true
}

// Add stores v under k, replacing any previous value, and evicts the least
// recently used entries until the total cost is within the bound. A value
// costlier than the whole bound is not stored.
func (c *lru[K, V]) Add(k K, v V) {
	cost := c.cost(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
	if cost > c.max {
		return
	}
	c.m[k] = c.ll.PushFront(&lruEntry[K, V]{key: k, val: v})
	c.used += cost
	for c.used > c.max {
		c.removeLocked(c.ll.Back())
	}
}

// Remove drops k if present.
func (c *lru[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
}

// Used returns the total cost and the number of entries held.
func (c *lru[K, V]) Used() (cost int64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, len(c.m)
}

func (c *lru[K, V]) removeLocked(e *list.Element) {
	ent := c.ll.Remove(e).(*lruEntry[K, V])
	delete(c.m, ent.key)
	c.used -= c.cost(ent.val)
}
