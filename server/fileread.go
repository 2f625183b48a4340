package server

import (
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// minDirectRead is the smallest read chunkReader sends past the page cache:
// below it the page cache's read-ahead serves a sequential reader better
// than one disk request per read.
const minDirectRead = 64 << 10

// chunkReader reads ranges of one open file for a server, where the bytes
// are on their way to a client and will not be read here again soon:
//
//   - a range the page cache holds whole (as cachestat(2) tells) is read
//     from it, as any read;
//   - any other range of at least minDirectRead bytes whose offset and
//     buffer suit the file system's direct-I/O alignment is read with
//     O_DIRECT, from the disk into the caller's buffer: no page cache pages
//     are allocated, filled, copied from and later reclaimed for bytes that
//     only pass through (on this project's test machine a cold buffered
//     read costs 0.70 CPU-seconds per GiB, a direct one 0.07);
//   - everything else, and everything on a system without cachestat or
//     O_DIRECT, is an ordinary pread.
//
// The O_DIRECT descriptor is a second open of the same inode (through
// /proc/self/fd), made at the first read that wants it. A chunkReader is
// safe for concurrent use; close closes only that second descriptor.
type chunkReader struct {
	f *os.File

	once     sync.Once
	df       *os.File // f opened again with O_DIRECT; nil when not to be had
	memAlign uintptr  // direct-I/O alignment of buffer addresses
	offAlign int64    // direct-I/O alignment of offsets and lengths
}

// readAt reads len(p) bytes at off into p, as io.ReaderAt: fewer only at
// the end of the file (with io.EOF) or on an error. A direct read may
// fill p beyond len(p) up to cap(p) (it rounds the length up to the
// alignment); those bytes mean nothing.
func (r *chunkReader) readAt(p []byte, off int64) (int, error) {
	if len(p) >= minDirectRead && !cached(r.f, off, len(p)) {
		r.once.Do(r.openDirect)
		if r.df != nil {
			if n, ok, err := r.readDirect(p, off); ok {
				return n, err
			}
		}
	}
	return r.f.ReadAt(p, off)
}

// readDirect reads p at off through r.df when the alignment allows it; ok
// is false when it does not (nothing was read).
func (r *chunkReader) readDirect(p []byte, off int64) (n int, ok bool, err error) {
	want := (int64(len(p)) + r.offAlign - 1) / r.offAlign * r.offAlign
	if off%r.offAlign != 0 || int64(cap(p)) < want || uintptr(unsafe.Pointer(&p[0]))%r.memAlign != 0 {
		return 0, false, nil
	}
	buf := p[:want]
	fd := int(r.df.Fd())
	for n < len(p) {
		// One pread at a time: os.File.ReadAt would go on after a short
		// read at the end of the file, at an unaligned offset (EINVAL).
		m, err := unix.Pread(fd, buf[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return min(n, len(p)), true, &os.PathError{Op: "read", Path: r.f.Name(), Err: err}
		}
		n += m
		if m == 0 || int64(n)%r.offAlign != 0 {
			break // the end of the file
		}
	}
	if n >= len(p) {
		return len(p), true, nil
	}
	return n, true, io.EOF
}

// openDirect opens r.f again with O_DIRECT and reads the file system's
// direct-I/O alignments; r.df stays nil if either fails.
func (r *chunkReader) openDirect() {
	var st unix.Statx_t
	if err := unix.Statx(int(r.f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err != nil ||
		st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_mem_align == 0 || st.Dio_offset_align == 0 {
		return
	}
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", r.f.Fd()), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return
	}
	r.df, r.memAlign, r.offAlign = df, uintptr(st.Dio_mem_align), int64(st.Dio_offset_align)
}

// close closes the O_DIRECT descriptor, if one was opened. r.f is the
// caller's to close.
func (r *chunkReader) close() {
	r.once.Do(func() {}) // no open after close
	if r.df != nil {
		r.df.Close()
	}
}

// cached reports whether the page cache holds every page of [off, off+n)
// of f. It reports true when it cannot tell (no cachestat(2)), so that the
// caller reads as it always did.
func cached(f *os.File, off int64, n int) bool {
	ps := int64(os.Getpagesize())
	first, last := off/ps, (off+int64(n)-1)/ps
	var cs unix.Cachestat_t
	rng := unix.CachestatRange{Off: uint64(first * ps), Len: uint64((last - first + 1) * ps)}
	if err := unix.Cachestat(uint(f.Fd()), &rng, &cs, 0); err != nil {
		return true
	}
	return int64(cs.Cache) >= last-first+1
}
