package chunkstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kwikfs/kwikfs/internal/directio"
	"golang.org/x/sys/unix"
)

// segmentsDir is the directory, inside the store's directory, that holds
// the segment files.
const segmentsDir = "segments"

// Default limits of the segment files.
const (
	// defaultSegmentSize is the size past which the appender starts a new
	// segment: a batch that would take the active segment beyond it goes
	// to a new one (a single batch larger than this makes a segment of its
	// own, as large as the batch). A segment file is deleted once none of
	// its chunks is left.
	defaultSegmentSize = 256 << 20
	// defaultMaxOpenSegments bounds the read descriptors kept open.
	defaultMaxOpenSegments = 64
	// minLimitedSegmentSize is the smallest segment size a store with a
	// Limit uses (it uses Limit/8, up to defaultSegmentSize).
	minLimitedSegmentSize = 1 << 20
)

// segmentName returns the file name of segment id, e.g. "000001.seg".
func segmentName(id uint32) string { return fmt.Sprintf("%06d.seg", id) }

// parseSegmentName returns the id of a segment file name. It accepts
// exactly the names segmentName makes.
func parseSegmentName(name string) (uint32, bool) {
	digits, ok := strings.CutSuffix(name, ".seg")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 32)
	if err != nil || id == 0 || segmentName(uint32(id)) != name {
		return 0, false
	}
	return uint32(id), true
}

// appender appends chunks to the active segment with positioned writes (no
// memory mapping). With align set, every non-empty chunk starts at a
// multiple of chunkAlign (the gap before it is zeros, or a hole before the
// first chunk of an append), so each chunk owns whole blocks.
//
// # Direct I/O
//
// Where the file system supports it (statx's STATX_DIOALIGN), the active
// segment is also open with O_DIRECT, and every buffer whose address,
// offset and length are multiples of the file system's direct-I/O
// alignments (a whole chunk in a buffer of its own, as the transfer client
// allocates them, always is) goes to the disk from the caller's memory: no
// copy into the page cache, no page cache to allocate for data the reader
// already holds, and no write-back later. The rest (a file's short last
// chunk, the zeros before the next aligned chunk) is written through the
// page cache. The two never share a page (chunks start on chunkAlign
// boundaries), and the kernel keeps the page cache coherent with direct
// writes, so reads see either.
//
// It is not safe for concurrent use: the Store serializes writers with
// writeMu.
type appender struct {
	dir   string // the segments directory
	limit int64  // defaultSegmentSize unless a test or Options.Limit lowers it
	align bool   // start every non-empty chunk at a multiple of chunkAlign
	sync  bool   // Options.SyncWrites: fdatasync after every append

	f    *os.File // the active segment, open for writing; nil before the first append into segment id
	df   *os.File // the active segment open with O_DIRECT; nil when f is, or direct I/O is not to be had
	id   uint32   // the active segment, or the one the next append creates when f is nil
	size int64    // bytes in f: where the last chunk ends

	dio    directio.Alignment // of dir's file system, probed at the first segment opened
	probed bool               // dio is set
}

// openDirect opens the active segment f a second time, with O_DIRECT, when
// its file system allows it; a.df stays nil otherwise.
func (a *appender) openDirect(f *os.File) {
	a.df = nil
	if !a.probed {
		a.dio, a.probed = directio.Probe(f), true
	}
	if a.dio.OK() && a.dio.Off <= chunkAlign {
		if df, err := directio.Open(f, os.O_WRONLY); err == nil {
			a.df = df
		}
	}
}

// direct reports whether b may be written at off through a.df.
func (a *appender) direct(b []byte, off int64) bool { return a.df != nil && a.dio.Fits(b, off) }

// closeFiles closes the active segment's descriptors and forgets them.
func (a *appender) closeFiles() error {
	if a.df != nil {
		a.df.Close()
		a.df = nil
	}
	f := a.f
	a.f = nil
	return f.Close()
}

// placed says where one append went.
type placed struct {
	seg    uint32
	before int64   // the segment's size before the append: undo cuts back to it
	offs   []int64 // where each buffer starts
	end    int64   // the segment's size after the append
}

// resume makes segment id, holding size bytes, the active segment when it
// has room left, so that a reopened store keeps filling it; otherwise the
// next append starts segment id+1.
func (a *appender) resume(id uint32, size int64) error {
	if size >= a.limit {
		a.id = id + 1
		return nil
	}
	f, err := os.OpenFile(filepath.Join(a.dir, segmentName(id)), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	a.f, a.id, a.size = f, id, size
	a.openDirect(f)
	return nil
}

// layout returns where bufs go when appended to a segment holding size
// bytes, and where the last one ends. An empty buffer takes no room and is
// placed where the previous one ended.
func (a *appender) layout(size int64, bufs [][]byte) (offs []int64, end int64) {
	offs = make([]int64, len(bufs))
	end = size
	for k, b := range bufs {
		if len(b) == 0 {
			offs[k] = end
			continue
		}
		off := end
		if a.align {
			off = alignUp(end)
		}
		offs[k] = off
		end = off + int64(len(b))
	}
	return offs, end
}

// append writes bufs at the end of the active segment, each non-empty one
// aligned when a.align is set, with one pwritev (a loop on short writes),
// and returns where they went. It starts a new segment first when the
// batch would take a non-empty active segment beyond the limit. With sync
// it fdatasyncs the segment before returning. After an error the segment
// is as before the call (or sealed, if it could not be restored).
func (a *appender) append(bufs [][]byte) (placed, error) {
	offs, end := a.layout(a.size, bufs)
	if a.f != nil && a.size > 0 && end > a.limit {
		if err := a.seal(); err != nil {
			return placed{}, err
		}
	}
	if a.f == nil {
		if err := a.create(); err != nil {
			return placed{}, err
		}
		offs, end = a.layout(0, bufs)
	}
	p := placed{seg: a.id, before: a.size, offs: offs, end: end}
	if err := a.write(bufs, offs); err != nil {
		a.rollback(p.before)
		return placed{}, fmt.Errorf("append to segment %s: %w", segmentName(a.id), err)
	}
	if a.sync {
		if err := fdatasync(a.f); err != nil {
			a.rollback(p.before)
			return placed{}, fmt.Errorf("sync segment %s: %w", segmentName(a.id), err)
		}
	}
	a.size = end
	return p, nil
}

// write writes each non-empty bufs[k] at offs[k], preceded by zeros up to
// its aligned start (none before the first: the write starts there). Runs
// of buffers that may go direct (see appender.direct) are written with one
// pwritev on a.df, the others with one pwritev on a.f.
func (a *appender) write(bufs [][]byte, offs []int64) error {
	var (
		iovs      [][]byte
		runStart  int64 = -1 // where the pending run of iovs starts
		runDirect bool
		at        int64 = -1 // where the pending run ends
	)
	flush := func() error {
		if len(iovs) == 0 {
			return nil
		}
		var err error
		if runDirect && a.df != nil {
			err = pwritevAll(a.df, iovs, runStart)
			if errors.Is(err, unix.EINVAL) {
				// The file system refused a write statx said it takes:
				// no more direct writes to this store.
				a.df.Close()
				a.df, a.dio = nil, directio.Alignment{}
				err = pwritevAll(a.f, iovs, runStart)
			}
		} else {
			err = pwritevAll(a.f, iovs, runStart)
		}
		iovs = iovs[:0]
		return err
	}
	for k, b := range bufs {
		if len(b) == 0 {
			continue
		}
		off := offs[k]
		d := a.direct(b, off)
		if at >= 0 && off > at {
			// The gap before b: zeros, through the page cache.
			if runDirect {
				if err := flush(); err != nil {
					return err
				}
				runStart, runDirect = at, false
			}
			iovs = append(iovs, zeros[:off-at])
		}
		if len(iovs) > 0 && d != runDirect {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(iovs) == 0 {
			runStart, runDirect = off, d
		}
		iovs = append(iovs, b)
		at = off + int64(len(b))
	}
	return flush()
}

// zeros pads the gap between aligned chunks of one append.
var zeros = make([]byte, chunkAlign)

// undo removes append p after its index entries could not be committed:
// the bytes would be unindexed garbage.
func (a *appender) undo(p placed) {
	if a.f != nil && a.id == p.seg && p.before <= a.size {
		a.rollback(p.before)
	}
}

// rollback truncates the active segment to off. If it cannot, the segment
// is sealed (whatever lies past off is unindexed and is cut at the next
// Open).
func (a *appender) rollback(off int64) {
	if err := a.f.Truncate(off); err != nil {
		a.closeFiles()
		a.size = 0
		a.id++
		return
	}
	a.size = off
}

// seal closes the active segment; the next append starts a new one. It is
// a no-op when no segment is open.
func (a *appender) seal() error {
	if a.f == nil {
		return nil
	}
	a.size = 0
	a.id++
	if err := a.closeFiles(); err != nil {
		return fmt.Errorf("close segment: %w", err)
	}
	return nil
}

// active reports whether seg is the segment appends go to now.
func (a *appender) active(seg uint32) bool { return a.f != nil && a.id == seg }

// create starts segment a.id. With sync it also syncs the directory, so
// that the new file's name survives a machine crash.
func (a *appender) create() error {
	p := filepath.Join(a.dir, segmentName(a.id))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	if a.sync {
		if err := syncDir(a.dir); err != nil {
			f.Close()
			os.Remove(p)
			return err
		}
	}
	a.f, a.size = f, 0
	a.openDirect(f)
	return nil
}

// close syncs and closes the active segment, if any. The sync makes a
// cleanly closed store durable whatever Options.SyncWrites says.
func (a *appender) close() error {
	if a.f == nil {
		return nil
	}
	err := fdatasync(a.f)
	if cerr := a.closeFiles(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("close segment %s: %w", segmentName(a.id), err)
	}
	return nil
}

// pwritevAll writes bufs back to back at off with pwritev, looping on
// short writes.
func pwritevAll(f *os.File, bufs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	// Skip empty buffers: they cost an iovec and mean nothing.
	iovs := make([][]byte, 0, len(bufs))
	for _, b := range bufs {
		if len(b) > 0 {
			iovs = append(iovs, b)
		}
	}
	for len(iovs) > 0 {
		var (
			n    int
			werr error
		)
		// Regular files are never registered with the poller, so the
		// callback runs once.
		err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), iovs, off)
			return true
		})
		if err != nil {
			return err
		}
		if errors.Is(werr, unix.EINTR) {
			continue
		}
		if werr != nil {
			return werr
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		for n > 0 {
			if n >= len(iovs[0]) {
				n -= len(iovs[0])
				iovs = iovs[1:]
				continue
			}
			iovs[0] = iovs[0][n:]
			n = 0
		}
	}
	return nil
}

// fdatasync flushes f's data (and its size) to the disk.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// syncDir fsyncs directory dir, making the names created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// errNoPunch reports a filesystem that cannot punch holes in files
// (fallocate with FALLOC_FL_PUNCH_HOLE fails with EOPNOTSUPP).
var errNoPunch = errors.New("filesystem cannot punch holes")

// punchHole releases the blocks of [off, off+n) of f, keeping its size:
// the range reads as zeros afterwards. A filesystem without hole punching
// gives an error wrapping errNoPunch.
func punchHole(f *os.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	if err := rc.Control(func(fd uintptr) {
		for {
			perr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if !errors.Is(perr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(perr, unix.EOPNOTSUPP) || errors.Is(perr, unix.ENOSYS) {
		return fmt.Errorf("punch %d bytes at %d of %s: %w", n, off, filepath.Base(f.Name()), errNoPunch)
	}
	if perr != nil {
		return fmt.Errorf("punch %d bytes at %d of %s: %w", n, off, filepath.Base(f.Name()), perr)
	}
	return nil
}

// holdsData reports whether [off, off+n) of f may hold data blocks (it
// is not known to be a hole), from lseek(SEEK_DATA). When the filesystem
// cannot tell, it answers true.
func holdsData(f *os.File, off, n int64) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	data := true
	rc.Control(func(fd uintptr) {
		next, err := unix.Seek(int(fd), off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			data = false // nothing but holes from off to the end
		case err == nil:
			data = next < off+n
		}
	})
	return data
}
