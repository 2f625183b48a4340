package fusefs

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore/chunkstoretest"
	"github.com/kwikfs/kwikfs/transfer"
)

// Modes of fakeRemote.down.
const (
	remoteUp   = iota
	remoteFail // every call fails at once with transfer.ErrUnavailable
	remoteHang // every call blocks until its ctx is done
)

// fakeRemote is an in-memory Remote over a tree of files, with real
// transfer.Manifest values, call counters and fault switches. Unlike the
// real client it delivers chunks without verifying them, so the corrupt
// switch shows what the filesystem does with bad data.
type fakeRemote struct {
	chunkSize uint32
	alg       transfer.HashAlg // of the manifests file makes; set before use

	mu      sync.Mutex           // guards entries, listsOf
	entries map[string]*fakeFile // by path; "" is the root directory
	listsOf map[string]int       // List calls per path

	lists, manifests, stats, readlinks atomic.Int64
	readCalls, chunksSent, bytesSent   atomic.Int64
	backgroundCalls                    atomic.Int64 // ReadChunks calls marked background

	down    atomic.Int32 // remoteUp, remoteFail or remoteHang
	corrupt atomic.Bool  // flip a byte of every chunk sent

	// gate, when non-nil, is received from by ReadChunks before it sends
	// anything; started gets one value per ReadChunks call first.
	gate    chan struct{}
	started chan struct{}
	// chunkDelay is slept before sending each chunk; after stallAfter
	// chunks (when > 0) a ReadChunks call sends nothing more and waits for
	// its ctx. Set before use.
	chunkDelay time.Duration
	stallAfter int
	// stalled names files whose ReadChunks sends nothing and waits for
	// its ctx. Set before use.
	stalled map[string]bool
}

type fakeFile struct {
	attr transfer.Attr // Name empty
	data []byte
	m    *transfer.Manifest
}

func newFakeRemote(chunkSize uint32) *fakeRemote {
	r := &fakeRemote{
		chunkSize: chunkSize,
		alg:       transfer.BLAKE3, // as the primary's default
		entries:   make(map[string]*fakeFile),
		listsOf:   make(map[string]int),
	}
	r.entries[""] = &fakeFile{attr: transfer.Attr{Mode: transfer.ModeDir | 0o755, MtimeNs: 1_600_000_000_123_456_789}}
	return r
}

// mkdir adds directory p (and its parents).
func (r *fakeRemote) mkdir(p string, perm uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mkdirLocked(p, perm)
}

func (r *fakeRemote) mkdirLocked(p string, perm uint32) {
	if p == "" {
		return
	}
	if dir, _ := splitPath(p); r.entries[dir] == nil {
		r.mkdirLocked(dir, 0o755)
	}
	if r.entries[p] == nil {
		r.entries[p] = &fakeFile{attr: transfer.Attr{Mode: transfer.ModeDir | perm, MtimeNs: 1_650_000_000_000_000_000 + int64(len(p))}}
	}
}

// file adds (or replaces) regular file p.
func (r *fakeRemote) file(p string, perm uint32, mtimeNs int64, data []byte) *transfer.Manifest {
	hashes := make([]transfer.Hash, 0, len(data)/int(r.chunkSize)+1)
	for off := 0; off < len(data); off += int(r.chunkSize) {
		hashes = append(hashes, transfer.SumAlg(r.alg, data[off:min(off+int(r.chunkSize), len(data))]))
	}
	m := &transfer.Manifest{
		Size:      int64(len(data)),
		MtimeNs:   mtimeNs,
		Mode:      transfer.ModeRegular | perm,
		ChunkSize: r.chunkSize,
		Alg:       r.alg,
		Version:   transfer.ComputeVersion(r.alg, int64(len(data)), r.chunkSize, hashes),
		Hashes:    hashes,
	}
	if err := m.Check(); err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir, 0o755)
	r.entries[p] = &fakeFile{
		attr: transfer.Attr{Mode: m.Mode, Size: m.Size, MtimeNs: mtimeNs},
		data: bytes.Clone(data),
		m:    m,
	}
	return m
}

// symlink adds symlink p pointing to target.
func (r *fakeRemote) symlink(p, target string, mtimeNs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir, 0o755)
	r.entries[p] = &fakeFile{attr: transfer.Attr{Mode: transfer.ModeSymlink | 0o777, Size: int64(len(target)), MtimeNs: mtimeNs, Target: target}}
}

func (r *fakeRemote) listCalls(p string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listsOf[p]
}

// enter applies the fault switches.
func (r *fakeRemote) enter(ctx context.Context) error {
	switch r.down.Load() {
	case remoteFail:
		return fmt.Errorf("fake: %w", transfer.ErrUnavailable)
	case remoteHang:
		<-ctx.Done()
		return fmt.Errorf("fake: %w (%w)", transfer.ErrUnavailable, ctx.Err())
	}
	return ctx.Err()
}

func (r *fakeRemote) get(p string) (*fakeFile, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[p]
	if e == nil {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrNotFound)
	}
	return e, nil
}

func (r *fakeRemote) Stat(ctx context.Context, p string) (transfer.Attr, error) {
	r.stats.Add(1)
	if err := r.enter(ctx); err != nil {
		return transfer.Attr{}, err
	}
	e, err := r.get(p)
	if err != nil {
		return transfer.Attr{}, err
	}
	return e.attr, nil
}

func (r *fakeRemote) List(ctx context.Context, p string) ([]transfer.Attr, error) {
	r.lists.Add(1)
	r.mu.Lock()
	r.listsOf[p]++
	r.mu.Unlock()
	if err := r.enter(ctx); err != nil {
		return nil, err
	}
	e, err := r.get(p)
	if err != nil {
		return nil, err
	}
	if !e.attr.IsDir() {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrNotDir)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []transfer.Attr
	for q, c := range r.entries {
		if q == "" {
			continue
		}
		if dir, name := splitPath(q); dir == p {
			a := c.attr
			a.Name = name
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (r *fakeRemote) Readlink(ctx context.Context, p string) (string, error) {
	r.readlinks.Add(1)
	if err := r.enter(ctx); err != nil {
		return "", err
	}
	e, err := r.get(p)
	if err != nil {
		return "", err
	}
	return e.attr.Target, nil
}

func (r *fakeRemote) Manifest(ctx context.Context, p string) (*transfer.Manifest, error) {
	r.manifests.Add(1)
	if err := r.enter(ctx); err != nil {
		return nil, err
	}
	e, err := r.get(p)
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
	if transfer.BackgroundPriority(ctx) {
		r.backgroundCalls.Add(1)
	}
	if r.started != nil {
		r.started <- struct{}{}
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := r.enter(ctx); err != nil {
		return err
	}
	if r.stalled[p] {
		<-ctx.Done()
		return ctx.Err()
	}
	e, err := r.get(p)
	if err != nil {
		return err
	}
	if e.m == nil || e.m.Version != m.Version {
		return fmt.Errorf("fake %q: %w", p, transfer.ErrStale)
	}
	if first < 0 || count < 0 || first+count > m.NumChunks() {
		return fmt.Errorf("fake chunks [%d, %d): %w", first, first+count, transfer.ErrBadRequest)
	}
	for i := first; i < first+count; i++ {
		if r.stallAfter > 0 && i-first >= r.stallAfter {
			<-ctx.Done()
			return ctx.Err()
		}
		if r.chunkDelay > 0 {
			select {
			case <-time.After(r.chunkDelay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		data := e.data[m.ChunkOffset(i) : m.ChunkOffset(i)+int64(m.ChunkLen(i))]
		if r.corrupt.Load() {
			data = bytes.Clone(data)
			data[len(data)/2] ^= 0x55
		}
		r.chunksSent.Add(1)
		r.bytesSent.Add(int64(len(data)))
		if err := deliver(i, data); err != nil {
			return err
		}
	}
	return nil
}

// content returns deterministic pseudo-random bytes for a test file.
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

var _ Remote = (*fakeRemote)(nil)

// names returns the paths of the tree, sorted.
func (r *fakeRemote) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p := range r.entries {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// entry returns a copy of the entry at p.
func (r *fakeRemote) entry(p string) fakeFile {
	r.mu.Lock()
	defer r.mu.Unlock()
	return *r.entries[strings.TrimPrefix(p, "/")]
}

// memStore is the shared in-memory store seen through Store alone: without
// its Has method, the FS finds out whether it holds a chunk by getting it
// (the fallback of FS.storeHas). Unlike the real one, Get does not verify.
type memStore struct{ Store }

func newMemStore() *memStore { return &memStore{chunkstoretest.New()} }
