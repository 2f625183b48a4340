package fusefs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kwikfs/kwikfs/transfer"
)

// maxSeqSlack bounds how far a read may start from where the previous one
// ended and still count as sequential: the kernel issues reads in parallel
// and they may arrive slightly out of order.
const maxSeqSlack = 512 << 10

// fileHandle is an open regular file, pinned to the manifest it was opened
// with. Its chunks are pinned in the Store (when it is a Pinner) until
// Release.
type fileHandle struct {
	fsys  *FS
	path  string
	m     *transfer.Manifest // immutable
	unpin func()             // undoes the chunks' pin; safe to call more than once

	mu       sync.Mutex // guards lastEnd, window and aheadEnd
	lastEnd  int64      // end of the previous read; -1 before the first
	window   int        // read-ahead window in chunks; 0 = none
	aheadEnd int        // last chunk read or read ahead since the window opened
}

var (
	_ fs.FileReader   = (*fileHandle)(nil)
	_ fs.FileReleaser = (*fileHandle)(nil)
)

// newFileHandle returns the handle of the file at path opened at version
// m, with m's chunks pinned (see PinFile).
func newFileHandle(f *FS, path string, m *transfer.Manifest) *fileHandle {
	return &fileHandle{fsys: f, path: path, m: m, unpin: f.PinFile(m), lastEnd: -1}
}

// PinFile keeps the chunks of m in the Store, if it is a Pinner, until the
// returned unpin is called (more than once is fine): for open files, and
// for the file a prefetch job is fetching. A file larger than half the
// Store's limit is not pinned: it cannot be kept whole anyway, and pinning
// it would push the Store past its limit by the whole file as it is read;
// its chunks are evicted oldest first instead.
func (f *FS) PinFile(m *transfer.Manifest) (unpin func()) {
	p, ok := f.store.(Pinner)
	if !ok || len(m.Hashes) == 0 || p.Limit() > 0 && m.Size > p.Limit()/2 {
		return func() {}
	}
	sums := make([][32]byte, len(m.Hashes))
	for i, h := range m.Hashes {
		sums[i] = h
	}
	return p.Pin(sums...)
}

// Release unpins the file's chunks: the kernel has closed the last
// descriptor of this open.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.unpin()
	if h.fsys.hookRelease != nil {
		h.fsys.hookRelease(h.path)
	}
	return 0
}

// Read returns bytes [off, off+len(dest)) of the pinned version, short at
// its end. Chunks of it that are not cached and that the server no longer
// has (the file changed or is gone) fail the read with ESTALE: an open file
// never reads bytes of another version.
func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	m := h.m
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= m.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), m.Size)
	cs := int64(m.ChunkSize)
	first, last := int(off/cs), int((end-1)/cs)
	aheadFirst, aheadLast := h.advance(off, end, last)

	chunks, err := h.fsys.readChunks(ctx, h.path, m, first, last, aheadFirst, aheadLast)
	if errors.Is(err, transfer.ErrNotFound) {
		// The file is gone from the server: its version cannot be read
		// any more, like one that changed.
		err = fmt.Errorf("%w: %v", transfer.ErrStale, err)
	}
	if err != nil {
		return nil, h.fsys.toErrno("read", h.path, err)
	}
	// The chunks go to the kernel as they are (writev), without a copy.
	base := int64(first) * cs
	vecs := make([][]byte, len(chunks))
	for k, c := range chunks {
		lo, hi := int64(0), int64(len(c))
		if k == 0 {
			lo = off - base
		}
		if k == len(chunks)-1 {
			hi = end - (base + int64(k)*cs)
		}
		vecs[k] = c[lo:hi]
	}
	return fuse.ReadResultVector(vecs), 0
}

// advance records a read of [off, end), whose last chunk is last, and
// returns the chunks to read ahead, aheadFirst..aheadLast (none when
// aheadFirst > aheadLast). A read starting where the previous one ended
// (within the slack) doubles the read-ahead window, up to ReadAheadMax; any
// other read resets it to zero. The window's chunks are requested in
// batches of at least a quarter of it, so that one fetch carries several
// chunks and a few fetches are under way at once.
func (h *fileHandle) advance(off, end int64, last int) (aheadFirst, aheadLast int) {
	slack := min(int64(h.m.ChunkSize), maxSeqSlack)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastEnd < 0 || off < h.lastEnd-slack || off > h.lastEnd+slack {
		h.window = 0
		h.lastEnd = end
		h.aheadEnd = last
		return 0, -1
	}
	h.window = min(max(2*h.window, 1), h.fsys.opts.ReadAheadMax)
	h.lastEnd = max(h.lastEnd, end)
	if h.window == 0 {
		h.aheadEnd = max(h.aheadEnd, last)
		return 0, -1
	}
	aheadFirst = max(last, h.aheadEnd) + 1
	aheadLast = min(last+h.window, h.m.NumChunks()-1)
	if aheadLast-aheadFirst+1 < max(h.window/4, 1) && aheadLast < h.m.NumChunks()-1 {
		return 0, -1 // not enough for a batch yet
	}
	h.aheadEnd = max(h.aheadEnd, aheadLast)
	return aheadFirst, aheadLast
}
