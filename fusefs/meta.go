package fusefs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/transfer"
)

// Kinds of metadata records, also the first byte of their cache keys.
const (
	kindList     = 'L' // a directory listing
	kindManifest = 'M' // a regular file's manifest
	kindStat     = 'S' // one path's Attr (the root's, mostly)
)

// maxPlainMetaKey is the longest path kept verbatim in a persisted meta
// key; longer ones are replaced by their SHA-256 so keys stay bounded.
const maxPlainMetaKey = 512

// metaItem is one cached answer of the Remote. It is immutable once built.
type metaItem struct {
	checked time.Time // when the server answered, or was last found unavailable
	record  [32]byte  // SHA-256 of the persisted encoding

	entries []transfer.Attr // kindList: the listing, in server order
	byName  map[string]int  // kindList: index into entries

	manifest *transfer.Manifest // kindManifest
	attr     transfer.Attr      // kindStat
}

// lookup returns the listing entry called name.
func (it *metaItem) lookup(name string) (transfer.Attr, bool) {
	i, ok := it.byName[name]
	if !ok {
		return transfer.Attr{}, false
	}
	return it.entries[i], true
}

func (it *metaItem) cost() int64 {
	n := int64(128)
	for i := range it.entries {
		n += 96 + int64(len(it.entries[i].Name)+len(it.entries[i].Target))
	}
	if it.manifest != nil {
		n += int64(len(it.manifest.Hashes)) * int64(len(transfer.Hash{}))
	}
	return n
}

// metaCall is one Remote metadata call in progress; done is closed once
// item or err is set.
type metaCall struct {
	started time.Time // when the call began (wall clock, for waits)
	done    chan struct{}
	item    *metaItem
	err     error
}

// rootStatWait bounds how long a stat of the exported root waits for the
// Remote (see metaCache.statRoot): the root's attributes are asked for by
// every path walk that starts at the mount point, `kwikfs status`
// included, and must not hang for FetchTimeout while the server is down.
const rootStatWait = time.Second

// metaCache holds listings, manifests and stats: in memory for AttrTimeout,
// persisted in the Store for when the Remote is unavailable. One call per
// key is in flight at a time, whatever the number of callers.
type metaCache struct {
	f     *FS
	items *lru[string, *metaItem]

	mu    sync.Mutex // guards calls; taken before FS.mu
	calls map[string]*metaCall

	// down is set when a call went unanswered (the Remote unavailable, or
	// silent for FetchTimeout) and cleared by any answer: while it is set,
	// get serves kept copies at once instead of waiting for the Remote
	// again, so that walking a cached tree (ls -lR, find) with the
	// primary down costs one FetchTimeout, not one per directory.
	down atomic.Bool
}

func newMetaCache(f *FS) *metaCache {
	return &metaCache{
		f:     f,
		items: newLRU[string](metaCacheBytes, (*metaItem).cost),
		calls: make(map[string]*metaCall),
	}
}

// list returns the listing of directory path.
func (c *metaCache) list(ctx context.Context, path string) (*metaItem, error) {
	return c.get(ctx, kindList, path)
}

// manifest returns the manifest of regular file path.
func (c *metaCache) manifest(ctx context.Context, path string) (*transfer.Manifest, error) {
	it, err := c.get(ctx, kindManifest, path)
	if err != nil {
		return nil, err
	}
	return it.manifest, nil
}

// stat returns the Attr of path.
func (c *metaCache) stat(ctx context.Context, path string) (transfer.Attr, error) {
	it, err := c.get(ctx, kindStat, path)
	if err != nil {
		return transfer.Attr{}, err
	}
	return it.attr, nil
}

// statRoot returns the Attr of the exported root like stat, except that it
// never waits more than rootStatWait after the Remote call it needs
// began (a call already running for longer is not waited for at all), and
// not at all while the last call went unanswered (down), as get. Past
// that, it returns the last known copy (from memory, even if older than
// AttrTimeout, or else from the Store), or an error wrapping
// transfer.ErrUnavailable when there is none; the call goes on in the
// background and its answer updates the cache as usual.
func (c *metaCache) statRoot(ctx context.Context) (transfer.Attr, error) {
	const key = string(kindStat)
	it, call, err := c.begin(kindStat, "")
	if err != nil || it != nil {
		if err != nil {
			return transfer.Attr{}, err
		}
		return it.attr, nil
	}
	if c.down.Load() {
		if it, ok := c.fallback(key, kindStat, ""); ok {
			return it.attr, nil
		}
	}
	wctx, cancel := context.WithDeadline(ctx, call.started.Add(rootStatWait))
	defer cancel()
	if err := c.f.wait(wctx, call.done); err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return transfer.Attr{}, err
		}
		if it, ok := c.items.Get(key); ok {
			c.f.count.staleMeta.Add(1)
			return it.attr, nil
		}
		if it, ok := c.load(kindStat, ""); ok {
			c.f.count.staleMeta.Add(1)
			return it.attr, nil
		}
		return transfer.Attr{}, fmt.Errorf("stat of the root: no answer within %v: %w", rootStatWait, transfer.ErrUnavailable)
	}
	if call.err != nil {
		return transfer.Attr{}, call.err
	}
	return call.item.attr, nil
}

// get returns the item of the given kind for path: the memory copy if it was
// checked within AttrTimeout, else the Remote's answer, else (when the
// Remote is unavailable or does not answer within FetchTimeout) the last
// known copy, which is then trusted for another AttrTimeout. While the last
// call went unanswered (down), the last known copy comes at once, without
// waiting for the Remote. A canceled ctx gives context.Canceled.
func (c *metaCache) get(ctx context.Context, kind byte, path string) (*metaItem, error) {
	it, call, err := c.begin(kind, path)
	if err != nil || it != nil {
		return it, err
	}
	if c.down.Load() {
		// The call goes on in the background; its answer, if any,
		// updates the cache and clears down.
		if it, ok := c.fallback(string(kind)+path, kind, path); ok {
			return it, nil
		}
	}
	// The call always ends within FetchTimeout (see run).
	if err := c.f.wait(ctx, call.done); err != nil {
		return nil, err
	}
	return call.item, call.err
}

// expire makes the memory copy of the item of the given kind for path, if
// any, count as older than AttrTimeout: the next get asks the Remote for
// it, and serves the copy only if the Remote does not answer.
func (c *metaCache) expire(kind byte, path string) {
	key := string(kind) + path
	if it, ok := c.items.Get(key); ok && !it.checked.IsZero() {
		old := *it
		old.checked = time.Time{}
		c.items.Add(key, &old)
	}
}

// begin returns the memory copy of the item if it was checked within
// AttrTimeout, else the Remote call for it: the one in flight, or a new one.
func (c *metaCache) begin(kind byte, path string) (*metaItem, *metaCall, error) {
	key := string(kind) + path
	if it, ok := c.items.Get(key); ok && c.f.now().Sub(it.checked) < c.f.opts.AttrTimeout {
		return it, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	call, ok := c.calls[key]
	if !ok {
		call = &metaCall{started: time.Now(), done: make(chan struct{})}
		if !c.f.goOwned(func() { c.run(key, kind, path, call) }) {
			return nil, nil, ErrClosed
		}
		c.calls[key] = call
	}
	return nil, call, nil
}

// run makes the Remote call for key and publishes its outcome to call. The
// outcome is published once: the Remote's answer, or whatever stands in for
// it (a kept copy, else an error wrapping transfer.ErrUnavailable) as soon
// as FetchTimeout has passed, even if the Remote has not returned yet.
func (c *metaCache) run(key string, kind byte, path string, call *metaCall) {
	var once sync.Once
	publish := func(outcome func() (*metaItem, error)) {
		once.Do(func() {
			call.item, call.err = outcome()
			c.mu.Lock()
			delete(c.calls, key)
			c.mu.Unlock()
			close(call.done)
		})
	}
	ctx, cancel := context.WithTimeoutCause(c.f.ctx, c.f.opts.FetchTimeout, errFetchTimeout)
	defer cancel()
	watchdog := time.AfterFunc(c.f.opts.FetchTimeout, func() {
		c.down.Store(true)
		publish(func() (*metaItem, error) { return c.unanswered(key, kind, path, errFetchTimeout) })
	})
	defer watchdog.Stop()

	it, record, err := c.fetch(ctx, kind, path)
	watchdog.Stop()
	c.down.Store(unavailable(err) && c.f.ctx.Err() == nil)
	switch {
	case err == nil:
		c.keep(key, kind, path, it, record)
		publish(func() (*metaItem, error) { return it, nil })
	case c.f.ctx.Err() != nil:
		publish(func() (*metaItem, error) { return nil, ErrClosed })
	case unavailable(err):
		publish(func() (*metaItem, error) { return c.unanswered(key, kind, path, err) })
	case errors.Is(err, transfer.ErrNotFound):
		c.items.Remove(key)
		if err := c.f.store.DeleteMeta(metaKey(kind, path)); err != nil {
			c.f.log.Warn("fusefs: delete metadata", "kind", kindName(kind), "path", path, "err", err)
		}
		publish(func() (*metaItem, error) { return nil, fmt.Errorf("%s %q: %w", kindName(kind), path, err) })
	default:
		publish(func() (*metaItem, error) { return nil, fmt.Errorf("%s %q: %w", kindName(kind), path, err) })
	}
}

// keep makes it, the Remote's answer whose persisted encoding is record,
// the memory copy of key and persists it unless an identical record is.
func (c *metaCache) keep(key string, kind byte, path string, it *metaItem, record []byte) {
	it.record = sha256.Sum256(record)
	if prev, ok := c.items.Get(key); !ok || prev.record != it.record {
		if err := c.f.store.PutMeta(metaKey(kind, path), record); err != nil {
			c.f.log.Warn("fusefs: persist metadata", "kind", kindName(kind), "path", path, "err", err)
		}
	}
	c.items.Add(key, it)
}

// metaBatcher is implemented by a Store that can write many metadata
// records at once (*chunkstore.Store does): the manifests of a FILES reply
// are then persisted with one write.
type metaBatcher interface {
	PutMetas(records []chunkstore.MetaRecord) error
}

// putManifests keeps ms[i], the Remote's answer for regular file
// paths[i] obtained otherwise than by a manifest call (a FILES reply), as
// a manifest call's answer is kept: fresh for AttrTimeout from now, and
// persisted, all in one write when the Store is a metaBatcher. A manifest
// that cannot be encoded is logged and skipped.
func (c *metaCache) putManifests(paths []string, ms []*transfer.Manifest) {
	now := c.f.now()
	items := make([]*metaItem, len(ms))
	var records []chunkstore.MetaRecord
	for i, m := range ms {
		record, err := m.MarshalBinary()
		if err != nil {
			c.f.log.Warn("fusefs: keep manifest", "path", paths[i], "err", err)
			continue
		}
		it := &metaItem{checked: now, manifest: m, record: sha256.Sum256(record)}
		items[i] = it
		if prev, ok := c.items.Get(string(kindManifest) + paths[i]); !ok || prev.record != it.record {
			records = append(records, chunkstore.MetaRecord{Key: metaKey(kindManifest, paths[i]), Value: record})
		}
	}
	if b, ok := c.f.store.(metaBatcher); ok && len(records) > 1 {
		if err := b.PutMetas(records); err != nil {
			c.f.log.Warn("fusefs: persist manifests", "records", len(records), "err", err)
		}
	} else {
		for _, r := range records {
			if err := c.f.store.PutMeta(r.Key, r.Value); err != nil {
				c.f.log.Warn("fusefs: persist metadata", "key", r.Key, "err", err)
			}
		}
	}
	for i, it := range items {
		if it != nil {
			c.items.Add(string(kindManifest)+paths[i], it)
		}
	}
}

// listAheadDirs is how many listings listAhead starts: of the first
// subdirectories, and of the next siblings.
const listAheadDirs = 4

// listAhead starts the listings that a walk of the tree (ls -R, find, cp
// -r, rsync) asks for after the listing it of directory path: those of
// its first listAheadDirs subdirectories and, when the parent's listing is
// at hand, of the listAheadDirs directories after it in the parent's. It
// does not wait for them; one already fresh or under way is not started
// again. The Remote is not asked while it is down.
func (c *metaCache) listAhead(path string, it *metaItem) {
	if c.down.Load() {
		return
	}
	c.startLists(path, it.entries, 0)
	if path == "" {
		return
	}
	dir, name := splitPath(path)
	parent, ok := c.items.Get(string(kindList) + dir)
	if !ok {
		return
	}
	if i, ok := parent.byName[name]; ok {
		c.startLists(dir, parent.entries, i+1)
	}
}

// startLists starts the listings of the first listAheadDirs directories
// among entries[from:] of directory dir.
func (c *metaCache) startLists(dir string, entries []transfer.Attr, from int) {
	n := 0
	for _, e := range entries[from:] {
		if n == listAheadDirs {
			return
		}
		if !e.IsDir() {
			continue
		}
		n++
		if _, _, err := c.begin(kindList, joinPath(dir, e.Name)); err != nil {
			return
		}
	}
}

// kept returns the last known manifest of regular file path, however old
// (from memory, else from the Store), or nil.
func (c *metaCache) kept(kind byte, path string) *transfer.Manifest {
	if it, ok := c.items.Get(string(kind) + path); ok {
		return it.manifest
	}
	if it, ok := c.load(kind, path); ok {
		return it.manifest
	}
	return nil
}

// fresh reports whether the memory copy of the item of the given kind for
// path was checked within AttrTimeout (get would return it at once).
func (c *metaCache) fresh(kind byte, path string) bool {
	it, ok := c.items.Get(string(kind) + path)
	return ok && c.f.now().Sub(it.checked) < c.f.opts.AttrTimeout
}

// unanswered is the outcome of a call the Remote could not answer: the
// kept copy if there is one, else err.
func (c *metaCache) unanswered(key string, kind byte, path string, err error) (*metaItem, error) {
	if it, ok := c.fallback(key, kind, path); ok {
		return it, nil
	}
	return nil, fmt.Errorf("%s %q: %w", kindName(kind), path, err)
}

// fetch asks the Remote and returns the item and its persisted encoding.
func (c *metaCache) fetch(ctx context.Context, kind byte, path string) (*metaItem, []byte, error) {
	now := c.f.now()
	switch kind {
	case kindList:
		c.f.count.lists.Add(1)
		entries, err := c.f.remote.List(ctx, path)
		if err != nil {
			return nil, nil, err
		}
		return newListItem(now, entries), transfer.EncodeAttrs(entries), nil
	case kindManifest:
		c.f.count.manifests.Add(1)
		m, err := c.f.remote.Manifest(ctx, path)
		if err != nil {
			return nil, nil, err
		}
		record, err := m.MarshalBinary()
		if err != nil {
			return nil, nil, fmt.Errorf("manifest of %q: %w", path, err)
		}
		return &metaItem{checked: now, manifest: m}, record, nil
	default:
		c.f.count.stats.Add(1)
		a, err := c.f.remote.Stat(ctx, path)
		if err != nil {
			return nil, nil, err
		}
		return &metaItem{checked: now, attr: a}, transfer.EncodeAttr(a), nil
	}
}

// fallback returns the last known copy of key, from memory or else from the
// Store, marked as checked now.
func (c *metaCache) fallback(key string, kind byte, path string) (*metaItem, bool) {
	it, ok := c.items.Get(key)
	if !ok {
		it, ok = c.load(kind, path)
	}
	if !ok {
		return nil, false
	}
	c.f.count.staleMeta.Add(1)
	fresh := *it
	fresh.checked = c.f.now()
	c.items.Add(key, &fresh)
	return &fresh, true
}

// load reads the persisted copy of a record.
func (c *metaCache) load(kind byte, path string) (*metaItem, bool) {
	record, err := c.f.store.GetMeta(metaKey(kind, path))
	if err != nil {
		return nil, false
	}
	it := &metaItem{}
	switch kind {
	case kindList:
		entries, err := transfer.DecodeAttrs(record)
		if err != nil {
			c.f.log.Warn("fusefs: persisted listing unreadable", "path", path, "err", err)
			return nil, false
		}
		it = newListItem(time.Time{}, entries)
	case kindManifest:
		m := new(transfer.Manifest)
		if err := m.UnmarshalBinary(record); err != nil {
			c.f.log.Warn("fusefs: persisted manifest unreadable", "path", path, "err", err)
			return nil, false
		}
		it.manifest = m
	default:
		a, err := transfer.DecodeAttr(record)
		if err != nil {
			c.f.log.Warn("fusefs: persisted stat unreadable", "path", path, "err", err)
			return nil, false
		}
		it.attr = a
	}
	it.record = sha256.Sum256(record)
	return it, true
}

func newListItem(checked time.Time, entries []transfer.Attr) *metaItem {
	byName := make(map[string]int, len(entries))
	for i := range entries {
		byName[entries[i].Name] = i
	}
	return &metaItem{checked: checked, entries: entries, byName: byName}
}

// metaKey is the Store key of a persisted record.
func metaKey(kind byte, path string) string {
	if len(path) > maxPlainMetaKey {
		sum := sha256.Sum256([]byte(path))
		path = "#" + hex.EncodeToString(sum[:])
	} else {
		path = "/" + path
	}
	return "fusefs/" + string(kind) + path
}

func kindName(kind byte) string {
	switch kind {
	case kindList:
		return "list"
	case kindManifest:
		return "manifest"
	default:
		return "stat"
	}
}
