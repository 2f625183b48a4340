// Package remotetest fakes the file-protocol client as a mount sees it
// (fusefs.Remote: Stat, List, Readlink, Manifest, ReadChunks), in memory,
// for the tests of fusefs and prefetch, which cannot make a server fail
// or stall at a chosen moment.
//
// # What it fakes
//
// A Remote serves a tree of directories, regular files and symlinks that
// the test builds (Mkdir, File, Symlink, SetAttr, Remove) with real
// transfer.Manifest values (File computes the hashes under Alg), answers
// as a server would (transfer.ErrNotFound, ErrNotDir, ErrIsDir, ErrStale
// for a manifest that is not the file's current one, ErrBadRequest for
// chunks out of range) and reports every byte it delivers as coming from
// one server, Source.
//
// # Contracts
//
// Unlike transfer.Client it does not verify the chunks it delivers and
// does not implement fusefs.ChunkVerifier, so the filesystem verifies
// them itself, and the Corrupt switch shows what it does with bad data.
// Each chunk is delivered in a copy of its own, which deliver may keep.
//
// The counters are exact: each call is counted when it is made, whatever
// its outcome (ReadCalls, BackgroundCalls for those under
// transfer.WithBackgroundPriority, Stats, Lists, Manifests, Readlinks);
// ChunksSent and BytesSent count the chunks handed to deliver, and
// Outstanding the chunks asked for by ReadChunks calls in progress and not
// delivered yet (MaxOutstanding its peak).
//
// A call that gives up because its ctx is done, or that the Down switch
// fails, returns an error wrapping transfer.ErrUnavailable (and ctx's
// error, when it is the cause), as the real client does.
//
// # Concurrency
//
// Every method is safe for concurrent use. The fields marked "set before
// use" must not change once the Remote is in use; the atomic ones may
// change at any time.
package remotetest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// Modes of Remote.Down.
const (
	Up   = iota // calls are answered
	Fail        // every call fails at once with transfer.ErrUnavailable
	Hang        // every call blocks until its ctx is done
)

// DefaultSource is the default Remote.Source.
const DefaultSource = "fake-primary"

// Remote is an in-memory fusefs.Remote over a tree of files, with call
// counters and fault switches (see the package documentation). Make one
// with New.
type Remote struct {
	// ChunkSize is the chunk size of the manifests File makes; set by
	// New.
	ChunkSize uint32
	// Alg is the hash algorithm of the manifests File makes: BLAKE3 by
	// default, as the primary's. Set before File.
	Alg transfer.HashAlg
	// Source names the server ReadChunks credits its bytes to: default
	// DefaultSource. Set before use.
	Source string

	// Counters (see the package documentation).
	Stats, Lists, Manifests, Readlinks atomic.Int64
	ReadCalls, BackgroundCalls         atomic.Int64
	ChunksSent, BytesSent              atomic.Int64
	Outstanding, MaxOutstanding        atomic.Int64

	// Down is Up, Fail or Hang.
	Down atomic.Int32
	// Corrupt flips a byte of every chunk ReadChunks delivers.
	Corrupt atomic.Bool
	// FailCalls, while above 0, makes that many calls fail with
	// transfer.ErrUnavailable, counting down.
	FailCalls atomic.Int64

	// CallGate, when not nil, is received from by each ReadChunks call
	// before it sends anything; Started, when not nil, gets one value per
	// ReadChunks call first. Set before use.
	CallGate, Started chan struct{}
	// ChunkGate, when not nil, is received from before each chunk is
	// delivered. Set before use.
	ChunkGate chan struct{}
	// ChunkDelay is slept before each chunk is delivered. Set before use.
	ChunkDelay time.Duration
	// StallAfter, when above 0, makes a ReadChunks call send nothing after
	// that many chunks and wait for its ctx. Set before use.
	StallAfter int
	// Stalled names files whose ReadChunks sends nothing and waits for its
	// ctx. Set before use.
	Stalled map[string]bool
	// OnDeliver, when not nil, is called after each chunk was handed to
	// deliver. Set before use.
	OnDeliver func()

	mu       sync.Mutex        // guards entries, listsOf, listFail
	entries  map[string]*Entry // by path; "" is the root directory
	listsOf  map[string]int    // List calls per path
	listFail map[string]error  // List of these paths fails with the error
}

// Entry is what a Remote holds at a path.
type Entry struct {
	Attr transfer.Attr      // Name empty
	Data []byte             // a regular file's content
	M    *transfer.Manifest // a regular file's manifest; nil for others
}

// New returns a Remote holding an empty root directory whose files have
// chunks of chunkSize bytes.
func New(chunkSize uint32) *Remote {
	r := &Remote{
		ChunkSize: chunkSize,
		Alg:       transfer.BLAKE3,
		Source:    DefaultSource,
		entries:   make(map[string]*Entry),
		listsOf:   make(map[string]int),
	}
	r.entries[""] = &Entry{Attr: transfer.Attr{Mode: transfer.ModeDir | 0o755, MtimeNs: 1_600_000_000_123_456_789}}
	return r
}

// splitPath splits a path into its directory and its name.
func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// Mkdir adds directory p with permission bits perm, and its missing
// parents (0755).
func (r *Remote) Mkdir(p string, perm uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mkdirLocked(p, perm)
}

func (r *Remote) mkdirLocked(p string, perm uint32) {
	if p == "" {
		return
	}
	if dir, _ := splitPath(p); r.entries[dir] == nil {
		r.mkdirLocked(dir, 0o755)
	}
	if r.entries[p] == nil {
		r.entries[p] = &Entry{Attr: transfer.Attr{Mode: transfer.ModeDir | perm, MtimeNs: 1_650_000_000_000_000_000 + int64(len(p))}}
	}
}

// File adds (or replaces) regular file p, holding a copy of data, and
// returns its manifest.
func (r *Remote) File(p string, perm uint32, mtimeNs int64, data []byte) *transfer.Manifest {
	hashes := make([]transfer.Hash, 0, len(data)/int(r.ChunkSize)+1)
	for off := 0; off < len(data); off += int(r.ChunkSize) {
		hashes = append(hashes, transfer.SumAlg(r.Alg, data[off:min(off+int(r.ChunkSize), len(data))]))
	}
	m := &transfer.Manifest{
		Size:      int64(len(data)),
		MtimeNs:   mtimeNs,
		Mode:      transfer.ModeRegular | perm,
		ChunkSize: r.ChunkSize,
		Alg:       r.Alg,
		Version:   transfer.ComputeVersion(r.Alg, int64(len(data)), r.ChunkSize, hashes),
		Hashes:    hashes,
	}
	if err := m.Check(); err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir, 0o755)
	r.entries[p] = &Entry{
		Attr: transfer.Attr{Mode: m.Mode, Size: m.Size, MtimeNs: mtimeNs},
		Data: bytes.Clone(data),
		M:    m,
	}
	return m
}

// Symlink adds symlink p pointing to target.
func (r *Remote) Symlink(p, target string, mtimeNs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, _ := splitPath(p)
	r.mkdirLocked(dir, 0o755)
	r.entries[p] = &Entry{Attr: transfer.Attr{Mode: transfer.ModeSymlink | 0o777, Size: int64(len(target)), MtimeNs: mtimeNs, Target: target}}
}

// SetAttr sets the attributes of p, keeping its content and manifest; a
// missing p is added (with its parents) with neither, so that a regular
// file added this way has no manifest (Manifest fails with
// transfer.ErrIsDir, as for a file the server will not describe).
func (r *Remote) SetAttr(p string, a transfer.Attr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[p]; e != nil {
		e.Attr = a
		return
	}
	dir, _ := splitPath(p)
	r.mkdirLocked(dir, 0o755)
	r.entries[p] = &Entry{Attr: a}
}

// Remove removes p (not what lies under it).
func (r *Remote) Remove(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, p)
}

// FailList makes List of directory p fail with an error wrapping err.
func (r *Remote) FailList(p string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listFail == nil {
		r.listFail = make(map[string]error)
	}
	r.listFail[p] = err
}

// Entry returns a copy of what the Remote holds at p (a leading '/' is
// ignored): the zero Entry when it holds nothing there.
func (r *Remote) Entry(p string) Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[strings.TrimPrefix(p, "/")]; e != nil {
		return *e
	}
	return Entry{}
}

// Names returns the paths of the tree, sorted ("" is the root).
func (r *Remote) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p := range r.entries {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// ListsOf returns the List calls made for directory p.
func (r *Remote) ListsOf(p string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listsOf[p]
}

// gaveUp is the error of a call that ends because ctx is done.
func gaveUp(ctx context.Context) error {
	return fmt.Errorf("fake: %w (%w)", transfer.ErrUnavailable, ctx.Err())
}

// enter applies the fault switches at the start of a call.
func (r *Remote) enter(ctx context.Context) error {
	switch r.Down.Load() {
	case Fail:
		return fmt.Errorf("fake: %w", transfer.ErrUnavailable)
	case Hang:
		<-ctx.Done()
		return gaveUp(ctx)
	}
	if r.FailCalls.Load() > 0 && r.FailCalls.Add(-1) >= 0 {
		return fmt.Errorf("fake: %w", transfer.ErrUnavailable)
	}
	if ctx.Err() != nil {
		return gaveUp(ctx)
	}
	return nil
}

// get returns the entry at p.
func (r *Remote) get(p string) (*Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[p]
	if e == nil {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrNotFound)
	}
	return e, nil
}

// Stat describes p.
func (r *Remote) Stat(ctx context.Context, p string) (transfer.Attr, error) {
	r.Stats.Add(1)
	if err := r.enter(ctx); err != nil {
		return transfer.Attr{}, err
	}
	e, err := r.get(p)
	if err != nil {
		return transfer.Attr{}, err
	}
	return e.Attr, nil
}

// List describes the entries of directory p, sorted by name.
func (r *Remote) List(ctx context.Context, p string) ([]transfer.Attr, error) {
	r.Lists.Add(1)
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
	if !e.Attr.IsDir() {
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
			a := c.Attr
			a.Name = name
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b transfer.Attr) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Readlink returns the target of symlink p.
func (r *Remote) Readlink(ctx context.Context, p string) (string, error) {
	r.Readlinks.Add(1)
	if err := r.enter(ctx); err != nil {
		return "", err
	}
	e, err := r.get(p)
	if err != nil {
		return "", err
	}
	return e.Attr.Target, nil
}

// Manifest returns the manifest of regular file p.
func (r *Remote) Manifest(ctx context.Context, p string) (*transfer.Manifest, error) {
	r.Manifests.Add(1)
	if err := r.enter(ctx); err != nil {
		return nil, err
	}
	e, err := r.get(p)
	if err != nil {
		return nil, err
	}
	if e.M == nil {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrIsDir)
	}
	return e.M, nil
}

// wait waits for ch (never, when ch is nil) or ctx.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return gaveUp(ctx)
	}
}

// ReadChunks delivers chunks [first, first+count) of file p at the version
// of m, unverified, each in a copy of its own, and returns the bytes it
// handed to deliver as coming from Source (nil when none).
func (r *Remote) ReadChunks(ctx context.Context, p string, m *transfer.Manifest, first, count int, deliver func(int, []byte) error) (transfer.Sources, error) {
	r.ReadCalls.Add(1)
	if transfer.BackgroundPriority(ctx) {
		r.BackgroundCalls.Add(1)
	}
	if r.Started != nil {
		r.Started <- struct{}{}
	}
	if r.CallGate != nil {
		if err := wait(ctx, r.CallGate); err != nil {
			return nil, err
		}
	}
	if err := r.enter(ctx); err != nil {
		return nil, err
	}
	if r.Stalled[p] {
		return nil, wait(ctx, nil)
	}
	e, err := r.get(p)
	if err != nil {
		return nil, err
	}
	if e.M == nil || e.M.Version != m.Version {
		return nil, fmt.Errorf("fake %q: %w", p, transfer.ErrStale)
	}
	if first < 0 || count < 0 || first+count > m.NumChunks() {
		return nil, fmt.Errorf("fake chunks [%d, %d): %w", first, first+count, transfer.ErrBadRequest)
	}
	peak := r.Outstanding.Add(int64(count))
	for {
		old := r.MaxOutstanding.Load()
		if peak <= old || r.MaxOutstanding.CompareAndSwap(old, peak) {
			break
		}
	}
	delivered := 0
	defer func() { r.Outstanding.Add(-int64(count - delivered)) }()
	var sent uint64
	sources := func() transfer.Sources {
		if sent == 0 {
			return nil
		}
		return transfer.Sources{r.Source: sent}
	}
	for i := first; i < first+count; i++ {
		if r.StallAfter > 0 && i-first >= r.StallAfter {
			return sources(), wait(ctx, nil)
		}
		if r.ChunkGate != nil {
			if err := wait(ctx, r.ChunkGate); err != nil {
				return sources(), err
			}
		}
		if r.ChunkDelay > 0 {
			select {
			case <-time.After(r.ChunkDelay):
			case <-ctx.Done():
				return sources(), gaveUp(ctx)
			}
		}
		data := bytes.Clone(e.Data[m.ChunkOffset(i) : m.ChunkOffset(i)+int64(m.ChunkLen(i))])
		if r.Corrupt.Load() {
			data[len(data)/2] ^= 0x55
		}
		r.Outstanding.Add(-1)
		delivered++
		r.ChunksSent.Add(1)
		r.BytesSent.Add(int64(len(data)))
		sent += uint64(len(data))
		err := deliver(i, data)
		if r.OnDeliver != nil {
			r.OnDeliver()
		}
		if err != nil {
			return sources(), err
		}
	}
	return sources(), nil
}

// Content returns n deterministic pseudo-random bytes for seed.
func Content(seed string, n int) []byte {
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
