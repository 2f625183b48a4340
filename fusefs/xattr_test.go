package fusefs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

// getxattr returns the value of attr on p, failing the test on an error.
func getxattr(t *testing.T, p, attr string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := syscall.Getxattr(p, attr, buf)
	if err != nil {
		t.Fatalf("getxattr(%s, %s): %v", p, attr, err)
	}
	return string(buf[:n])
}

// TestFileXattrCached follows user.kwikfs.cached of an 8-chunk file from
// nothing held, through 3 chunks fetched, to the whole file read, and
// checks that once the manifest is known the xattr never asks the Remote,
// even when it is down.
func TestFileXattrCached(t *testing.T) {
	r := remotetest.New(testChunk)
	data := remotetest.Content("f", 8*testChunk-100)
	r.File("d/f", 0o644, 1, data)
	r.File("d/empty", 0o644, 1, nil)
	store := openStore(t, t.TempDir())
	opts := testOptions()
	opts.Xattrs = true
	opts.ReadAheadMax = -1
	opts.MemoryCacheBytes = testChunk // one chunk
	m := mountFS(t, r, store, opts, nil)
	p := m.path("d/f")

	if got, want := getxattr(t, p, XattrCached), "0.000 (0/8 chunks)"; got != want {
		t.Fatalf("cached before any read = %q, want %q", got, want)
	}
	manifests := r.Manifests.Load()
	man, err := m.fsys.Manifest(context.Background(), "d/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.fsys.FetchBackground(context.Background(), "d/f", man, 2, 4); err != nil {
		t.Fatal(err)
	}
	if got, want := getxattr(t, p, XattrCached), "0.375 (3/8 chunks)"; got != want {
		t.Fatalf("cached after fetching chunks 2..4 = %q, want %q", got, want)
	}
	if got := readAll(t, p); string(got) != string(data) {
		t.Fatal("wrong file content")
	}
	if got, want := getxattr(t, p, XattrCached), "1.000 (8/8 chunks)"; got != want {
		t.Fatalf("cached after reading the file = %q, want %q", got, want)
	}
	// Flushed: the memory cache holds one chunk, the Store's index
	// answers for the others.
	if err := m.fsys.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := m.fsys.Stats(); st.MemoryChunks != 1 || st.PendingChunks != 0 {
		t.Fatalf("memory chunks %d, pending %d; want 1, 0", st.MemoryChunks, st.PendingChunks)
	}
	if got, want := getxattr(t, p, XattrCached), "1.000 (8/8 chunks)"; got != want {
		t.Fatalf("cached from the Store alone = %q, want %q", got, want)
	}
	r.Down.Store(remotetest.Fail)
	if got, want := getxattr(t, p, XattrCached), "1.000 (8/8 chunks)"; got != want {
		t.Fatalf("cached with the remote down = %q, want %q", got, want)
	}
	if n := r.Manifests.Load(); n != manifests {
		t.Errorf("%d manifest calls after the first getxattr, want none", n-manifests)
	}
	// A file whose manifest was never fetched, with the remote down:
	// an error at once, not a hang.
	start := time.Now()
	if _, err := syscall.Getxattr(m.path("d/empty"), XattrCached, make([]byte, 64)); !errors.Is(err, syscall.EIO) {
		t.Errorf("cached of an unknown manifest with the remote down: %v, want EIO", err)
	}
	if d := time.Since(start); d > opts.FetchTimeout {
		t.Errorf("answer took %v", d)
	}
	r.Down.Store(remotetest.Up)
	if got, want := getxattr(t, m.path("d/empty"), XattrCached), "1.000 (0/0 chunks)"; got != want {
		t.Errorf("cached of an empty file = %q, want %q", got, want)
	}
}

// TestFileXattrNamesAndSources checks listxattr, that the sources are
// what the Remote's ReadChunks returned, their format, the size probe and
// ENODATA for directories and unknown names.
func TestFileXattrNamesAndSources(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/f", 0o644, 1, remotetest.Content("f", 3*testChunk))
	opts := testOptions()
	opts.Xattrs = true
	m := mountFS(t, r, openStore(t, t.TempDir()), opts, nil)
	p := m.path("d/f")
	buf := make([]byte, 256)
	n, err := syscall.Listxattr(p, buf)
	if err != nil || string(buf[:n]) != XattrCached+"\x00"+XattrSources+"\x00" {
		t.Errorf("listxattr = %q, %v", buf[:n], err)
	}
	if got := getxattr(t, p, XattrSources); got != "" {
		t.Errorf("sources before any fetch = %q, want empty", got)
	}
	readAll(t, p)
	// The fetch records its sources when ReadChunks returns, which may be
	// just after the read was answered.
	want := fmt.Sprintf("%s %d\n", remotetest.DefaultSource, 3*testChunk)
	deadline := time.Now().Add(5 * time.Second)
	for got := getxattr(t, p, XattrSources); got != want; got = getxattr(t, p, XattrSources) {
		if time.Now().After(deadline) {
			t.Fatalf("sources after reading the file = %q, want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.BytesSent.Load(); got != 3*testChunk {
		t.Fatalf("the remote sent %d bytes, want %d", got, 3*testChunk)
	}
	m.fsys.sources.add("d/f", transfer.Sources{"127.0.0.1:4433": 100, "10.0.0.2:4434": 7})
	m.fsys.sources.add("d/f", transfer.Sources{"127.0.0.1:4433": 28})
	m.fsys.sources.add("d/other", transfer.Sources{"127.0.0.1:4433": 1})
	want = fmt.Sprintf("10.0.0.2:4434 7\n127.0.0.1:4433 128\n%s %d\n", remotetest.DefaultSource, 3*testChunk)
	if got := getxattr(t, p, XattrSources); got != want {
		t.Errorf("sources = %q, want %q", got, want)
	}
	if n, err := syscall.Getxattr(p, XattrSources, nil); err != nil || n != len(want) {
		t.Errorf("size probe = %d, %v; want %d", n, err, len(want))
	}
	if _, err := syscall.Getxattr(p, XattrSources, make([]byte, 3)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("short buffer: %v, want ERANGE", err)
	}
	for _, c := range []struct{ path, attr string }{{m.path("d"), XattrCached}, {m.path("d"), XattrSources}, {p, "user.other"}} {
		if _, err := syscall.Getxattr(c.path, c.attr, buf); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("getxattr(%s, %s) = %v, want ENODATA", c.path, c.attr, err)
		}
	}
}

// TestSourceLogBound checks that the log keeps the maxSourceFiles files
// most recently updated.
func TestSourceLogBound(t *testing.T) {
	var l sourceLog
	for i := range maxSourceFiles + 1 {
		l.add(fmt.Sprint(i), transfer.Sources{"a": uint64(i)})
	}
	l.add("1", transfer.Sources{"a": 1, "b": 2}) // most recent again
	l.add("new", transfer.Sources{"a": 5})       // evicts "2"
	l.add("2", nil)                              // nothing delivered: no entry
	if got := l.get("0"); got != nil {
		t.Errorf("oldest entry kept: %v", got)
	}
	if got := l.get("2"); got != nil {
		t.Errorf("entry 2 kept: %v", got)
	}
	if got, want := l.get("1"), (transfer.Sources{"a": 2, "b": 2}); !maps.Equal(got, want) {
		t.Errorf("entry 1 = %v, want %v", got, want)
	}
	if n := len(l.m); n != maxSourceFiles || l.ll.Len() != maxSourceFiles {
		t.Errorf("%d entries, want %d", n, maxSourceFiles)
	}
}
