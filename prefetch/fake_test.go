package prefetch

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/chunkstore/chunkstoretest"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/transfer"
)

// fakeRemote is an in-memory fusefs.Remote over a tree of files with real
// manifests, counters and fault switches.
type fakeRemote struct {
	chunkSize uint32

	mu       sync.Mutex // guards entries, listFail
	entries  map[string]*fakeEntry
	listFail map[string]error // List of these paths fails with the error

	chunksSent, bytesSent, readCalls atomic.Int64
	// outstanding counts chunks asked for by ReadChunks calls and not yet
	// delivered; maxOutstanding is its peak.
	outstanding, maxOutstanding atomic.Int64

	// failCalls, while > 0, makes that many calls fail with
	// transfer.ErrUnavailable (counting down).
	failCalls atomic.Int64
	// chunkDelay is slept before each chunk is delivered. Set before use.
	chunkDelay time.Duration
	// gate, when non-nil, is received from before each chunk is delivered.
	gate chan struct{}
	// onDeliver, when set, is called after each chunk was delivered.
	onDeliver func()
}

type fakeEntry struct {
	attr transfer.Attr
	data []byte
	m    *transfer.Manifest
}

func newFakeRemote(chunkSize uint32) *fakeRemote {
	r := &fakeRemote{chunkSize: chunkSize, entries: map[string]*fakeEntry{}}
	r.entries[""] = &fakeEntry{attr: transfer.Attr{Mode: transfer.ModeDir | 0o755}}
	return r
}

func splitPath(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func (r *fakeRemote) mkdirLocked(p string) {
	if p == "" || r.entries[p] != nil {
		return
	}
	dir, _ := splitPath(p)
	r.mkdirLocked(dir)
	r.entries[p] = &fakeEntry{attr: transfer.Attr{Mode: transfer.ModeDir | 0o755}}
}

// file adds regular file p with data and returns its manifest.
func (r *fakeRemote) file(p string, data []byte) *transfer.Manifest {
	var hashes []transfer.Hash
	for off := 0; off < len(data); off += int(r.chunkSize) {
		hashes = append(hashes, transfer.SumAlg(transfer.BLAKE3, data[off:min(off+int(r.chunkSize), len(data))]))
	}
	m := &transfer.Manifest{
		Size: int64(len(data)), Mode: transfer.ModeRegular | 0o644, ChunkSize: r.chunkSize, Alg: transfer.BLAKE3,
		Version: transfer.ComputeVersion(transfer.BLAKE3, int64(len(data)), r.chunkSize, hashes), Hashes: hashes,
	}
	if err := m.Check(); err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir)
	r.entries[p] = &fakeEntry{attr: transfer.Attr{Mode: m.Mode, Size: m.Size}, data: bytes.Clone(data), m: m}
	return m
}

// symlink adds symlink p.
func (r *fakeRemote) symlink(p, target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir)
	r.entries[p] = &fakeEntry{attr: transfer.Attr{Mode: transfer.ModeSymlink | 0o777, Size: int64(len(target)), Target: target}}
}

func (r *fakeRemote) get(ctx context.Context, p string) (*fakeEntry, error) {
	if r.failCalls.Load() > 0 && r.failCalls.Add(-1) >= 0 {
		return nil, fmt.Errorf("fake: %w", transfer.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake: %w (%w)", transfer.ErrUnavailable, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[p]
	if e == nil {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrNotFound)
	}
	return e, nil
}

func (r *fakeRemote) Stat(ctx context.Context, p string) (transfer.Attr, error) {
	e, err := r.get(ctx, p)
	if err != nil {
		return transfer.Attr{}, err
	}
	return e.attr, nil
}

func (r *fakeRemote) List(ctx context.Context, p string) ([]transfer.Attr, error) {
	e, err := r.get(ctx, p)
	if err != nil {
		return nil, err
	}
	if !e.attr.IsDir() {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrNotDir)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.listFail[p]; err != nil {
		return nil, fmt.Errorf("fake list %q: %w", p, err)
	}
	var out []transfer.Attr
	for q, c := range r.entries {
		if dir, name := splitPath(q); q != "" && dir == p {
			a := c.attr
			a.Name = name
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *fakeRemote) Readlink(ctx context.Context, p string) (string, error) {
	e, err := r.get(ctx, p)
	if err != nil {
		return "", err
	}
	return e.attr.Target, nil
}

func (r *fakeRemote) Manifest(ctx context.Context, p string) (*transfer.Manifest, error) {
	e, err := r.get(ctx, p)
	if err != nil {
		return nil, err
	}
	if e.m == nil {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrIsDir)
	}
	return e.m, nil
}

func (r *fakeRemote) ReadChunks(ctx context.Context, p string, m *transfer.Manifest, first, count int, deliver func(int, []byte) error) error {
	r.readCalls.Add(1)
	e, err := r.get(ctx, p)
	if err != nil {
		return err
	}
	if e.m == nil || e.m.Version != m.Version {
		return fmt.Errorf("fake %q: %w", p, transfer.ErrStale)
	}
	peak := r.outstanding.Add(int64(count))
	for {
		old := r.maxOutstanding.Load()
		if peak <= old || r.maxOutstanding.CompareAndSwap(old, peak) {
			break
		}
	}
	delivered := 0
	defer func() { r.outstanding.Add(-int64(count - delivered)) }()
	for i := first; i < first+count; i++ {
		if r.gate != nil {
			select {
			case <-r.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if r.chunkDelay > 0 {
			select {
			case <-time.After(r.chunkDelay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		data := bytes.Clone(e.data[m.ChunkOffset(i) : m.ChunkOffset(i)+int64(m.ChunkLen(i))])
		r.outstanding.Add(-1)
		delivered++
		r.chunksSent.Add(1)
		r.bytesSent.Add(int64(len(data)))
		err := deliver(i, data)
		if r.onDeliver != nil {
			r.onDeliver()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var _ fusefs.Remote = (*fakeRemote)(nil)

// content returns deterministic pseudo-random bytes.
func content(seed string, n int) []byte {
	b := make([]byte, n)
	x := uint64(14695981039346656037)
	for _, c := range []byte(seed) {
		x = (x ^ uint64(c)) * 1099511628211
	}
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// memStore is the shared in-memory store (chunks and metadata) for tests
// inside a synctest bubble, where Badger cannot run. putDelay is slept in
// every PutVerified (a slow disk); stored counts the chunk bytes it holds.
type memStore struct {
	*chunkstoretest.MemStore
	putDelay time.Duration // set before use
	stored   storedBytes
}

func newMemStore() *memStore {
	s := chunkstoretest.New()
	return &memStore{MemStore: s, stored: storedBytes{s}}
}

func (s *memStore) PutVerified(chunks []chunkstore.Chunk) error {
	if s.putDelay > 0 {
		time.Sleep(s.putDelay)
	}
	return s.MemStore.PutVerified(chunks)
}

// storedBytes reads the chunk bytes a MemStore holds.
type storedBytes struct{ s *chunkstoretest.MemStore }

func (b storedBytes) Load() int64 { return b.s.StoredBytes() }

// jobKeys returns the keys of the job records held.
func (s *memStore) jobKeys() []string {
	var keys []string
	s.ScanMeta(recordPrefix, func(k string, _ []byte) error { keys = append(keys, k); return nil })
	return keys
}
