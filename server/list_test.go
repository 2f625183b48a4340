package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// makeEntries creates n entries in dir named by name(i): hard links to
// one empty file next to dir (faster than creating files).
func makeEntries(t *testing.T, dir string, n int, name func(int) string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := dir + ".source"
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.Link(src, filepath.Join(dir, name(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// hugeEntries is the size of the directories the refusal tests list: its
// listing would take over 2 MiB (an Attr of 56 bytes and a name of 20
// per entry), a batch of listBatch names a tenth of that.
const hugeEntries = 30000

func hugeName(i int) string { return fmt.Sprintf("entry-%014d", i) }

// A directory of too many entries is refused while it is read: the
// listing costs a batch of names, not the directory.
func TestCatalogListRefusesTooManyEntries(t *testing.T) {
	root := t.TempDir()
	makeEntries(t, filepath.Join(root, "d"), hugeEntries, hugeName)
	c := newTestCatalog(t, root)
	c.maxEntries = 1000
	var err error
	n := allocated(func() { _, err = c.List("d") })
	if !errors.Is(err, transfer.ErrTooLarge) || !strings.Contains(err.Error(), `list "d": more than 1000 entries`) {
		t.Fatalf("List of %d entries, at most 1000: %v; want ErrTooLarge, more than 1000 entries", hugeEntries, err)
	}
	if n > 512<<10 {
		t.Fatalf("refusing the listing allocated %d KiB, more than 512 KiB", n>>10)
	}
}

// A directory whose listing cannot be encoded within the byte bound is
// refused while it is read, once its names alone exceed the bound.
func TestCatalogListRefusesLongListingWhileReading(t *testing.T) {
	root := t.TempDir()
	makeEntries(t, filepath.Join(root, "d"), hugeEntries, hugeName)
	c := newTestCatalog(t, root)
	c.maxListLen = 16 << 10
	var err error
	n := allocated(func() { _, err = c.List("d") })
	if !errors.Is(err, transfer.ErrTooLarge) || !strings.Contains(err.Error(), `list "d": listing of more than 16384 bytes`) {
		t.Fatalf("List of %d entries within 16 KiB: %v; want ErrTooLarge", hugeEntries, err)
	}
	if n > 512<<10 {
		t.Fatalf("refusing the listing allocated %d KiB, more than 512 KiB", n>>10)
	}
}

// The byte bound counts the exact encoded length: a listing of exactly
// maxListLen bytes is served, one byte less refuses it.
func TestCatalogListByteBoundIsExact(t *testing.T) {
	root, _ := testTree(t)
	makeEntries(t, filepath.Join(root, "d"), 100, func(i int) string { return fmt.Sprintf("file-%03d", i) })
	if err := os.Symlink("file-001", filepath.Join(root, "d", "link")); err != nil {
		t.Fatal(err)
	}
	c := newTestCatalog(t, root)
	entries, err := c.List("d")
	if err != nil || len(entries) != 101 {
		t.Fatalf("List = %d entries, %v", len(entries), err)
	}
	exact := len(transfer.EncodeAttrs(entries))
	c.maxListLen = int64(exact)
	if got, err := c.List("d"); err != nil || len(got) != 101 {
		t.Fatalf("List within %d bytes = %d entries, %v; want all 101", exact, len(got), err)
	}
	c.maxListLen = int64(exact - 1)
	if _, err := c.List("d"); !errors.Is(err, transfer.ErrTooLarge) || !strings.Contains(err.Error(), "listing of more than") {
		t.Fatalf("List within %d bytes: %v; want ErrTooLarge", exact-1, err)
	}
}

func TestAttrLen(t *testing.T) {
	for _, a := range []transfer.Attr{
		{Name: "a", Mode: transfer.ModeRegular | 0o644},
		{Name: strings.Repeat("x", 300), Mode: transfer.ModeDir | 0o755, Size: 4096, MtimeNs: time.Now().UnixNano()},
		{Name: "l", Mode: transfer.ModeSymlink | 0o777, Size: 200, MtimeNs: -1, Target: strings.Repeat("t", 200)},
		{Name: "big", Mode: transfer.ModeRegular | 0o4755, Size: 1 << 50, MtimeNs: 1<<62 + 5},
	} {
		if got, want := attrLen(&a), int64(len(transfer.EncodeAttr(a))); got != want {
			t.Errorf("attrLen(%.20q...) = %d, want %d", a.Name, got, want)
		}
	}
}

// A listing is charged its listSize.cost, measured before it is built,
// and waits for it.
func TestCatalogListChargesBudget(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "d")
	makeEntries(t, dir, 3, func(i int) string { return strings.Repeat("f", i+1) }) // f, ff, fff
	if err := os.Symlink("target", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil { // not listed, not charged
		t.Fatal(err)
	}
	c := newTestCatalog(t, root)
	want := listSize{entries: 4, strings: int64(1 + 2 + 3 + 1 + len("target"))}.cost()
	if want != 4*(attrSize+stringOverhead)+13+3*(10+4*50+13) {
		t.Fatalf("listSize.cost = %d", want)
	}
	var waits atomic.Int64
	b := newBudget(1<<20, &waits)
	h := b.newHold()
	entries, err := c.list(t.Context(), "d", h)
	if err != nil || len(entries) != 4 {
		t.Fatalf("list = %d entries, %v", len(entries), err)
	}
	if h.n != want || b.inUse() != want || waits.Load() != 0 {
		t.Fatalf("listing holds %d (%d in use, %d waits), want %d", h.n, b.inUse(), waits.Load(), want)
	}
	h.release()

	// With the budget taken, the listing waits, as long as its context
	// allows.
	other := b.newHold()
	other.resize(t.Context(), 1<<20-want+1)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	h = b.newHold()
	if _, err := c.list(ctx, "d", h); !errors.Is(err, transfer.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("list without budget: %v; want ErrUnavailable after its context", err)
	}
	if h.n != 0 || waits.Load() != 1 {
		t.Fatalf("after the wait: holds %d, %d waits; want 0 and 1", h.n, waits.Load())
	}
	other.release()
}
