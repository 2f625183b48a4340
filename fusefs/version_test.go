package fusefs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// versionOptions are Options for tests of changing files: the kernel and
// the FS trust attributes for a short real time, so that a change on the
// server shows up quickly.
func versionOptions() *Options {
	return &Options{
		AttrTimeout:  200 * time.Millisecond,
		EntryTimeout: 200 * time.Millisecond,
		FetchTimeout: 5 * time.Second,
		ReadAheadMax: -1,
	}
}

// waitContent polls until the file at p (opened anew each time) reads as
// want, for at most d.
func waitContent(t *testing.T, p string, want []byte, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := os.ReadFile(p)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d bytes (%v) after %v, want the new %d bytes", p, len(got), err, d, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOpenFileKeepsVersionWhileOthersReadNew: a descriptor opened before
// the file changed on the server reads the old version whole (all of it was
// read once, so it is cached), even after another open has read the new
// version, with the same size or a smaller one.
func TestOpenFileKeepsVersionWhileOthersReadNew(t *testing.T) {
	for _, tc := range []struct {
		name     string
		newSize  int
		newMtime int64
	}{
		{"same size", 32 * testChunk, 2_000},
		{"shrunk", 10*testChunk + 7, 2_000},
		{"grown", 40*testChunk + 3, 2_000},
		// Only the manifest tells the versions apart.
		{"same size and mtime", 32 * testChunk, 1_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := remotetest.New(testChunk)
			v1 := remotetest.Content("v1", 32*testChunk)
			r.File("f", 0o644, 1_000, v1)
			m := mountFS(t, r, openStore(t, t.TempDir()), versionOptions(), nil)

			fd1, err := os.Open(m.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			defer fd1.Close()
			if got, err := io.ReadAll(fd1); err != nil || !bytes.Equal(got, v1) {
				t.Fatalf("first read: %d bytes, %v", len(got), err)
			}

			v2 := remotetest.Content("v2", tc.newSize)
			r.File("f", 0o644, tc.newMtime, v2)
			waitContent(t, m.path("f"), v2, 5*time.Second)

			got := make([]byte, len(v1)+testChunk)
			n, err := fd1.ReadAt(got, 0)
			if err != io.EOF {
				t.Errorf("read of the old descriptor after the change: %v, want EOF", err)
			}
			if !bytes.Equal(got[:n], v1) {
				t.Errorf("old descriptor after the change: %d bytes, equal to the old version: %v, want the old %d bytes",
					n, bytes.Equal(got[:n], v1[:min(n, len(v1))]), len(v1))
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(fd1.Fd()), &st); err != nil || st.Size != int64(len(v1)) || st.Mtim.Nano() != 1_000 {
				t.Errorf("fstat of the old descriptor: size %d mtime %d (%v), want %d, 1000", st.Size, st.Mtim.Nano(), err, len(v1))
			}
			if err := syscall.Stat(m.path("f"), &st); err != nil || st.Size != int64(len(v2)) || st.Mtim.Nano() != tc.newMtime {
				t.Errorf("stat of the path: size %d mtime %d (%v), want %d, %d", st.Size, st.Mtim.Nano(), err, len(v2), tc.newMtime)
			}
			// A new open reads the new version again (the page cache
			// of the path's node holds it).
			if got := readAll(t, m.path("f")); !bytes.Equal(got, v2) {
				t.Errorf("another open: %d bytes, not the new version", len(got))
			}
		})
	}
}

// TestOpenFileUncachedOldVersionFailsStale: a descriptor opened before the
// file changed (or was removed) on the server, whose old version is only
// partly cached, reads the cached part of the old version and then fails
// with ESTALE (the server no longer has the old version), promptly, never
// returning bytes of the new one. Its fstat keeps the old attributes.
func TestOpenFileUncachedOldVersionFailsStale(t *testing.T) {
	for _, removed := range []bool{false, true} {
		name := "changed"
		if removed {
			name = "removed"
		}
		t.Run(name, func(t *testing.T) {
			r := remotetest.New(testChunk)
			v1 := remotetest.Content("v1", 32*testChunk)
			r.File("f", 0o644, 1_000, v1)
			m := mountFS(t, r, openStore(t, t.TempDir()), versionOptions(), nil)

			fd1, err := os.Open(m.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			defer fd1.Close()
			head := make([]byte, 2*testChunk)
			if _, err := io.ReadFull(fd1, head); err != nil || !bytes.Equal(head, v1[:len(head)]) {
				t.Fatalf("first read: %v", err)
			}

			if removed {
				r.Remove("f")
				deadline := time.Now().Add(5 * time.Second)
				for _, err := os.Stat(m.path("f")); !errors.Is(err, os.ErrNotExist); _, err = os.Stat(m.path("f")) {
					if time.Now().After(deadline) {
						t.Fatalf("stat of the removed file: %v after 5s, want ENOENT", err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				v2 := remotetest.Content("v2", len(v1))
				r.File("f", 0o644, 2_000, v2)
				waitContent(t, m.path("f"), v2, 5*time.Second)
			}

			start := time.Now()
			rest, err := io.ReadAll(fd1)
			if !errors.Is(err, syscall.ESTALE) {
				t.Errorf("read of the old descriptor's uncached part: %d bytes, %v, want ESTALE", len(rest), err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("stale read failed after %v, want at once", took)
			}
			if !bytes.Equal(rest, v1[len(head):len(head)+len(rest)]) {
				t.Errorf("the %d bytes read before the error are not the old version's", len(rest))
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(fd1.Fd()), &st); err != nil || st.Size != int64(len(v1)) || st.Mtim.Nano() != 1_000 {
				t.Errorf("fstat of the old descriptor: size %d mtime %d (%v), want %d, 1000", st.Size, st.Mtim.Nano(), err, len(v1))
			}
		})
	}
}

// TestOpenAfterChangeGetsNewVersion: a name the kernel still holds (within
// EntryTimeout) for the old version of a changed file opens at the new
// version at once when the FS learns of the change at Open: the node is
// stale, Open fails with ESTALE, and the kernel looks the name up again and
// retries, so the caller sees neither the error nor the old version.
func TestOpenAfterChangeGetsNewVersion(t *testing.T) {
	r := remotetest.New(testChunk)
	v1 := remotetest.Content("v1", 3*testChunk)
	r.File("f", 0o644, 1_000, v1)
	clk := newFakeClock()
	m := mountFS(t, r, openStore(t, t.TempDir()), testOptions(), func(f *FS) { f.now = clk.Now })

	// The kernel and the FS hold the listing (one minute) but no manifest.
	if st, err := os.Stat(m.path("f")); err != nil || st.Size() != int64(len(v1)) {
		t.Fatalf("stat: %v, %v", st, err)
	}
	v2 := remotetest.Content("v2", 5*testChunk+1)
	r.File("f", 0o644, 2_000, v2)
	if got := readAll(t, m.path("f")); !bytes.Equal(got, v2) {
		t.Fatalf("open after the change: %d bytes, want the new %d bytes", len(got), len(v2))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(m.path("f"), &st); err != nil || st.Size != int64(len(v2)) || st.Mtim.Nano() != 2_000 {
		t.Errorf("stat after the open: size %d mtime %d (%v), want %d, 2000", st.Size, st.Mtim.Nano(), err, len(v2))
	}
	if n := r.Lists.Load(); n != 2 {
		t.Errorf("%d List calls, want 2 (the first and one at the open)", n)
	}
}
