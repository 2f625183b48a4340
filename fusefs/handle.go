package fusefs

import (
	"context"
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
// with.
type fileHandle struct {
	fsys *FS
	path string
	m    *transfer.Manifest // immutable

	mu      sync.Mutex // guards lastEnd and window
	lastEnd int64      // end of the previous read; -1 before the first
	window  int        // read-ahead window in chunks; 0 = none
}

var _ fs.FileReader = (*fileHandle)(nil)

func newFileHandle(f *FS, path string, m *transfer.Manifest) *fileHandle {
	return &fileHandle{fsys: f, path: path, m: m, lastEnd: -1}
}

// Read returns bytes [off, off+len(dest)) of the pinned version, short at
// its end.
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
	aheadLast := min(last+h.advance(off, end), m.NumChunks()-1)

	chunks, err := h.fsys.readChunks(ctx, h.path, m, first, last, aheadLast)
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

// advance records a read of [off, end) and returns the read-ahead window in
// chunks: a read starting where the previous one ended (within the slack)
// doubles it, up to ReadAheadMax; any other read resets it to zero.
func (h *fileHandle) advance(off, end int64) int {
	slack := min(int64(h.m.ChunkSize), maxSeqSlack)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastEnd >= 0 && off >= h.lastEnd-slack && off <= h.lastEnd+slack {
		h.window = min(max(2*h.window, 1), h.fsys.opts.ReadAheadMax)
		h.lastEnd = max(h.lastEnd, end)
	} else {
		h.window = 0
		h.lastEnd = end
	}
	return h.window
}
