package chunkstore

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/kwikfs/kwikfs/internal/directio"
)

// readers is a bounded cache of read-only descriptors of segment files,
// most recently used first. A descriptor in use (refs > 0) is never
// closed; when every cached descriptor is in use the cache grows past its
// bound until they are released.
type readers struct {
	dir string // the segments directory
	max int    // descriptors kept open when idle

	// mu guards open, lru and every segReader's refs and elem.
	mu   sync.Mutex
	open map[uint32]*segReader
	lru  list.List // of *segReader, most recently used at the front
}

// segReader is one open segment file.
type segReader struct {
	id   uint32
	f    *os.File
	rd   *directio.Reader // reads f past the page cache unless it holds the range
	refs int              // read calls using f; guarded by readers.mu
	elem *list.Element    // sr's place in readers.lru, nil once forgotten; guarded by readers.mu
}

func newReaders(dir string, max int) *readers {
	return &readers{dir: dir, max: max, open: map[uint32]*segReader{}}
}

// errNoSegment reports a chunk record naming a segment file that does not
// exist: the chunk is lost.
var errNoSegment = errors.New("segment file missing")

// read returns the n bytes at off of segment id, read with pread into
// buf's backing array when cap(buf) >= n, else into a new slice (allocated
// only once the segment is known to hold them, so that a damaged record
// cannot make it allocate more). A short read (the segment ends first) is
// io.ErrUnexpectedEOF; a missing segment file is errNoSegment.
func (r *readers) read(id uint32, off, n int64, buf []byte) ([]byte, error) {
	sr, err := r.acquire(id)
	if err != nil {
		return nil, err
	}
	defer r.release(sr)
	var p []byte
	if int64(cap(buf)) >= n {
		p = buf[:n]
	} else {
		fi, err := sr.f.Stat()
		if err != nil {
			return nil, fmt.Errorf("stat segment %s: %w", segmentName(id), err)
		}
		if off+n > fi.Size() {
			return nil, fmt.Errorf("%d bytes at %d of %s: %w (segment ends at %d)", n, off, segmentName(id), io.ErrUnexpectedEOF, fi.Size())
		}
		// Room up to the next block, so that the read may go direct.
		p = make([]byte, n, alignUp(n))
	}
	got, err := sr.rd.ReadAt(p, off)
	if err == io.EOF && got < len(p) {
		return nil, fmt.Errorf("%d bytes at %d of %s: %w (segment ends at %d)", n, off, segmentName(id), io.ErrUnexpectedEOF, off+int64(got))
	}
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read segment %s: %w", segmentName(id), err)
	}
	return p, nil
}

// acquire returns the open descriptor of segment id, opening it if needed;
// the caller must release it.
func (r *readers) acquire(id uint32) (*segReader, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sr, ok := r.open[id]; ok {
		sr.refs++
		r.lru.MoveToFront(sr.elem)
		return sr, nil
	}
	f, err := os.Open(filepath.Join(r.dir, segmentName(id)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", segmentName(id), errNoSegment)
	}
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	sr := &segReader{id: id, f: f, rd: directio.NewReader(f), refs: 1}
	sr.elem = r.lru.PushFront(sr)
	r.open[id] = sr
	r.evictLocked()
	return sr, nil
}

// release ends a use of sr; an idle descriptor beyond the bound, or of a
// forgotten segment, is closed.
func (r *readers) release(sr *segReader) {
	r.mu.Lock()
	sr.refs--
	if sr.elem == nil && sr.refs == 0 {
		sr.close()
	}
	r.evictLocked()
	r.mu.Unlock()
}

// forget drops the descriptor of segment id, which is being deleted, so
// that no descriptor keeps the file's space: it is closed at once, or by
// the last read using it. The next read of the segment opens it again.
func (r *readers) forget(id uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sr, ok := r.open[id]
	if !ok {
		return
	}
	delete(r.open, id)
	r.lru.Remove(sr.elem)
	sr.elem = nil
	if sr.refs == 0 {
		sr.close()
	}
}

// evictLocked closes idle descriptors, least recently used first, until
// at most max are open or every open one is in use.
func (r *readers) evictLocked() {
	for e := r.lru.Back(); e != nil && len(r.open) > r.max; {
		prev := e.Prev()
		if sr := e.Value.(*segReader); sr.refs == 0 {
			r.lru.Remove(e)
			delete(r.open, sr.id)
			sr.close()
		}
		e = prev
	}
}

// close closes the segment's descriptors.
func (sr *segReader) close() {
	sr.rd.Close()
	sr.f.Close()
}

// openCount returns the number of open descriptors (for tests).
func (r *readers) openCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// close closes every descriptor. The caller guarantees that none is in
// use (Store.Close waits for operations in flight first).
func (r *readers) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, sr := range r.open {
		sr.close()
		delete(r.open, id)
	}
	r.lru.Init()
}
