package directio

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// evictedFile writes size random bytes to a new file, flushes them and
// drops them from the page cache; it returns the file, open for reading,
// and its bytes.
func evictedFile(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(data)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n := cachedPages(t, f, 0, size); n != 0 {
		t.Fatalf("%d pages still cached after FADV_DONTNEED", n)
	}
	return f, data
}

func cachedPages(t *testing.T, f *os.File, off int64, n int) uint64 {
	t.Helper()
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &cs, 0); err != nil {
		t.Skipf("no cachestat(2): %v", err)
	}
	return cs.Cache
}

// TestReaderColdRangeBypassesPageCache: chunks of a file the page
// cache does not hold are read right, and the page cache still holds none
// of them afterwards (they went straight from the disk to the buffer).
func TestReaderColdRangeBypassesPageCache(t *testing.T) {
	const chunk = 1 << 20
	f, data := evictedFile(t, 4*chunk)
	r := NewReader(f)
	defer r.Close()
	buf := make([]byte, chunk)
	for off := 0; off < len(data); off += chunk {
		n, err := r.ReadAt(buf, int64(off))
		if err != nil || n != chunk || !bytes.Equal(buf[:n], data[off:off+chunk]) {
			t.Fatalf("chunk at %d: n %d, err %v, bytes equal %v", off, n, err, bytes.Equal(buf[:n], data[off:off+n]))
		}
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, f.Name(), 0, unix.STATX_DIOALIGN, &st); err != nil || st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 {
		t.Skipf("the file system of the test directory offers no direct I/O (statx: %v)", err)
	}
	if !r.Direct() {
		t.Fatal("no O_DIRECT descriptor on a file system that offers direct I/O")
	}
	if n := cachedPages(t, f, 0, len(data)); n != 0 {
		t.Errorf("%d pages cached after reading the cold file, want 0 (read past the page cache)", n)
	}
}

// TestReaderCachedRangeFromPageCache: a range the page cache holds is
// read from it (the reader does not even open its O_DIRECT descriptor).
func TestReaderCachedRangeFromPageCache(t *testing.T) {
	const chunk = 1 << 20
	f, data := evictedFile(t, 2*chunk)
	if _, err := io.ReadAll(f); err != nil { // fills the page cache
		t.Fatal(err)
	}
	if n := cachedPages(t, f, 0, len(data)); n != uint64(len(data)/os.Getpagesize()) {
		t.Fatalf("%d pages cached after reading the whole file", n)
	}
	r := NewReader(f)
	defer r.Close()
	buf := make([]byte, chunk)
	n, err := r.ReadAt(buf, chunk)
	if err != nil || n != chunk || !bytes.Equal(buf, data[chunk:]) {
		t.Fatalf("cached chunk: n %d, err %v", n, err)
	}
	if r.Direct() {
		t.Error("the reader opened an O_DIRECT descriptor for a range the page cache holds")
	}
}

// TestReaderShortTailAndEnd: the last, short chunk of a file reads
// whole from a buffer with room to spare (the direct read rounds its
// length up), and a read past the end returns what is there and io.EOF.
func TestReaderShortTailAndEnd(t *testing.T) {
	const chunk = 1 << 20
	tail := 100<<10 + 7
	f, data := evictedFile(t, chunk+tail)
	r := NewReader(f)
	defer r.Close()
	buf := make([]byte, chunk)
	n, err := r.ReadAt(buf[:tail], chunk)
	if err != nil || n != tail || !bytes.Equal(buf[:n], data[chunk:]) {
		t.Fatalf("tail: n %d, err %v, want %d bytes and no error", n, err, tail)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	// The file is shorter than the chunk asked for (it shrank).
	n, err = r.ReadAt(buf[:tail+4096], chunk)
	if err != io.EOF || n != tail || !bytes.Equal(buf[:n], data[chunk:]) {
		t.Fatalf("past the end: n %d, err %v, want %d bytes and io.EOF", n, err, tail)
	}
}

// TestReaderRefusedDirectReadFallsBack: a direct read the file system
// refuses (here: an alignment made up to let an odd buffer address
// through) is read through the page cache instead, and the Reader stops
// reading direct.
func TestReaderRefusedDirectReadFallsBack(t *testing.T) {
	const chunk = 1 << 20
	f, data := evictedFile(t, 2*chunk)
	r := NewReader(f)
	defer r.Close()
	buf := make([]byte, chunk)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !r.Direct() {
		t.Skip("no direct I/O on the test directory's file system")
	}
	r.align = Alignment{Mem: 1, Off: 1}
	raw := make([]byte, chunk+1)
	odd := raw[1:]
	n, err := r.ReadAt(odd, chunk)
	if err != nil || n != chunk || !bytes.Equal(odd, data[chunk:]) {
		t.Fatalf("read into an odd address: n %d, err %v", n, err)
	}
	if !r.off.Load() {
		t.Skip("this device takes direct I/O from any address: nothing was refused")
	}
}
