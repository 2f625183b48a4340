// Package directio reads and writes file data past the page cache
// (O_DIRECT) where that saves work: bytes that pass through a process on
// their way elsewhere (a server's file data on its way to a client, a
// client's verified chunks on their way to its store) need no page cache
// pages allocated, filled, copied and later reclaimed for them. On this
// project's test machine a cold buffered read costs 0.70 CPU-seconds per
// GiB and a direct one 0.07.
//
// Direct I/O needs buffer addresses, file offsets and lengths aligned as
// the file system says (statx STATX_DIOALIGN); Alignment tells, and
// everything that does not fit goes through the page cache as usual. The
// kernel keeps the page cache coherent with direct reads and writes.
package directio

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alignment is what direct I/O on one file system requires: buffer
// addresses aligned to Mem, offsets and lengths to Off. The zero value
// means no direct I/O.
type Alignment struct {
	Mem uintptr
	Off int64
}

// Probe returns the direct-I/O alignment of f's file system, or the zero
// Alignment when it offers none (or the kernel cannot tell).
func Probe(f *os.File) Alignment {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err != nil ||
		st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_mem_align == 0 || st.Dio_offset_align == 0 {
		return Alignment{}
	}
	return Alignment{Mem: uintptr(st.Dio_mem_align), Off: int64(st.Dio_offset_align)}
}

// OK reports whether a allows direct I/O at all.
func (a Alignment) OK() bool { return a.Off > 0 && a.Mem > 0 }

// Fits reports whether b may be read or written at off with direct I/O.
func (a Alignment) Fits(b []byte, off int64) bool {
	return a.OK() && len(b) > 0 && off%a.Off == 0 && int64(len(b))%a.Off == 0 &&
		uintptr(unsafe.Pointer(&b[0]))%a.Mem == 0
}

// Open opens f's inode a second time (through /proc/self/fd, so that it is
// the same file even if its name now means another) with flag|O_DIRECT.
func Open(f *os.File, flag int) (*os.File, error) {
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), flag|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("directio: reopen %s: %w", f.Name(), err)
	}
	return df, nil
}

// Cached reports whether the page cache holds every page of [off, off+n)
// of f. It reports true when it cannot tell (no cachestat(2)), so that
// callers read as they would without this package.
func Cached(f *os.File, off int64, n int) bool {
	ps := int64(os.Getpagesize())
	first, last := off/ps, (off+int64(n)-1)/ps
	var cs unix.Cachestat_t
	rng := unix.CachestatRange{Off: uint64(first * ps), Len: uint64((last - first + 1) * ps)}
	if err := unix.Cachestat(uint(f.Fd()), &rng, &cs, 0); err != nil {
		return true
	}
	return int64(cs.Cache) >= last-first+1
}

// MinRead is the smallest read a Reader sends past the page cache: below
// it the page cache's read-ahead serves a sequential reader better than
// one disk request per read.
const MinRead = 64 << 10

// Reader reads ranges of one open file that will not be read here again
// soon:
//
//   - a range the page cache holds whole (as cachestat(2) tells) is read
//     from it, as any read;
//   - any other range of at least MinRead bytes whose offset and buffer
//     suit the file system's alignment is read with O_DIRECT, from the disk
//     into the caller's buffer;
//   - everything else, and everything on a system without cachestat or
//     O_DIRECT (or whose file system refuses a direct read with EINVAL,
//     from then on), is an ordinary pread.
//
// The O_DIRECT descriptor is opened at the first read that wants it. A
// Reader is safe for concurrent use.
type Reader struct {
	f *os.File

	once  sync.Once
	df    *os.File // f opened again with O_DIRECT; nil when not to be had
	align Alignment
	off   atomic.Bool // no direct reads (none to be had, or the file system refused one): no cachestat either
}

// NewReader returns a Reader of f. Close releases what it opened; f stays
// the caller's.
func NewReader(f *os.File) *Reader { return &Reader{f: f} }

// Direct reports whether the Reader has opened its O_DIRECT descriptor.
func (r *Reader) Direct() bool {
	r.once.Do(func() {}) // a barrier for the fields set in open
	return r.df != nil
}

// ReadAt reads len(p) bytes at off into p, as io.ReaderAt: fewer only at
// the end of the file (with io.EOF) or on an error. A direct read may
// fill p beyond len(p) up to cap(p) (it rounds the length up to the
// alignment); those bytes mean nothing.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) >= MinRead && !r.off.Load() && !Cached(r.f, off, len(p)) {
		r.once.Do(r.open)
		if r.df != nil {
			n, ok, err := r.readDirect(p, off)
			if ok && !errors.Is(err, unix.EINVAL) {
				return n, err
			}
			if ok {
				// The file system refused a read statx said it takes.
				r.off.Store(true)
			}
		}
	}
	return r.f.ReadAt(p, off)
}

// readDirect reads p at off through r.df when the alignment allows it; ok
// is false when it does not (nothing was read).
func (r *Reader) readDirect(p []byte, off int64) (n int, ok bool, err error) {
	want := (int64(len(p)) + r.align.Off - 1) / r.align.Off * r.align.Off
	if int64(cap(p)) < want || !r.align.Fits(p[:want], off) {
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
		if m == 0 || int64(n)%r.align.Off != 0 {
			break // the end of the file
		}
	}
	if n >= len(p) {
		return len(p), true, nil
	}
	return n, true, io.EOF
}

// open opens r.df and reads the alignment; if either fails r.df stays nil
// and r.off is set, so that later reads skip the page-cache check too.
func (r *Reader) open() {
	a := Probe(r.f)
	if !a.OK() {
		r.off.Store(true)
		return
	}
	df, err := Open(r.f, os.O_RDONLY)
	if err != nil {
		r.off.Store(true)
		return
	}
	r.df, r.align = df, a
}

// Close closes the O_DIRECT descriptor, if one was opened; later reads use
// the page cache.
func (r *Reader) Close() error {
	r.once.Do(func() {}) // no open after Close
	if r.df != nil {
		return r.df.Close()
	}
	return nil
}
