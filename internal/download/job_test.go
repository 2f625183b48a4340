package download

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

const testChunk = transfer.MinChunkSize

var mtime0 = time.Date(2022, 6, 7, 8, 9, 10, 123456789, time.UTC)

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// serve starts a primary on root with testChunk chunks and returns a
// client of it.
func serve(t *testing.T, root string) *transfer.Client {
	t.Helper()
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: testChunk}})
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sameFile fails the test unless local has the content, permission bits
// and mtime of remote.
func sameFile(t *testing.T, remote, local string) {
	t.Helper()
	want, err := os.ReadFile(remote)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(local)
	if err != nil {
		t.Errorf("%s: %v", local, err)
		return
	}
	wi, _ := os.Stat(remote)
	gi, _ := os.Stat(local)
	if !bytes.Equal(got, want) || gi.Mode() != wi.Mode() || !gi.ModTime().Equal(wi.ModTime()) {
		t.Errorf("%s: %d bytes, mode %v, mtime %v; want %d bytes, %v, %v", local, len(got), gi.Mode(), gi.ModTime(), len(want), wi.Mode(), wi.ModTime())
	}
}

func absent(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v), want it absent", p, err)
	}
}

// TestRunDestinationRules checks where Run puts each remote path: the
// rules of cp -r, the part directory of a new directory copy, and what it
// refuses.
func TestRunDestinationRules(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "d", "f1"), randomData(3*testChunk+1, 1), 0o640, mtime0)
	writeFile(t, filepath.Join(root, "d", "sub", "f2"), randomData(10, 2), 0o600, mtime0.Add(time.Hour))
	writeFile(t, filepath.Join(root, "file"), randomData(testChunk, 3), 0o644, mtime0.Add(2*time.Hour))
	if err := os.Symlink("file", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	c := serve(t, root)
	r := func(rel string) string { return filepath.Join(root, rel) }

	// Cases whose Run fails, or records failures, say so in their check;
	// the others must do neither.
	fails := map[string]bool{"directory over a file fails": true, "one name twice": true, "several onto a file": true, "missing remote": true}
	tests := []struct {
		name    string
		remotes []string
		prepare func(t *testing.T, dest string)
		check   func(t *testing.T, dest string, res Result, err error)
	}{
		{"directory to a new name", []string{"d"}, nil, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("d/f1"), filepath.Join(dest, "f1"))
			sameFile(t, r("d/sub/f2"), filepath.Join(dest, "sub/f2"))
			absent(t, dest+transfer.PartSuffix)
		}},
		{"directory into a directory", []string{"d/"}, func(t *testing.T, dest string) { os.Mkdir(dest, 0o755) }, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("d/sub/f2"), filepath.Join(dest, "d/sub/f2"))
		}},
		{"several into a new directory", []string{"d", "/file", "link"}, nil, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("d/f1"), filepath.Join(dest, "d/f1"))
			sameFile(t, r("file"), filepath.Join(dest, "file"))
			if target, err := os.Readlink(filepath.Join(dest, "link")); err != nil || target != "file" {
				t.Errorf("link: %q, %v", target, err)
			}
		}},
		{"root merged into a directory", []string{"/"}, func(t *testing.T, dest string) {
			os.Mkdir(dest, 0o711)
			os.Chmod(dest, 0o711)
			writeFile(t, filepath.Join(dest, "mine"), []byte("kept"), 0o644, mtime0)
		}, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("d/f1"), filepath.Join(dest, "d/f1"))
			sameFile(t, r("file"), filepath.Join(dest, "file"))
			if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o711 {
				t.Errorf("destination's mode changed: %v, %v", fi.Mode(), err)
			}
			if b, err := os.ReadFile(filepath.Join(dest, "mine")); err != nil || string(b) != "kept" {
				t.Errorf("a file of the destination was touched: %q, %v", b, err)
			}
		}},
		{"root merged through a link to a directory", []string{""}, func(t *testing.T, dest string) {
			real := dest + "-real"
			os.Mkdir(real, 0o755)
			os.Symlink(real, dest)
		}, func(t *testing.T, dest string, res Result, err error) {
			if fi, err := os.Lstat(dest); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link at the destination was replaced: %v, %v", fi.Mode(), err)
			}
			sameFile(t, r("d/f1"), filepath.Join(dest+"-real", "d/f1"))
		}},
		{"root to a new name, parents made", []string{""}, nil, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("d/sub/f2"), filepath.Join(dest, "d/sub/f2"))
			if target, err := os.Readlink(filepath.Join(dest, "link")); err != nil || target != "file" {
				t.Errorf("link: %q, %v", target, err)
			}
		}},
		{"file over a file", []string{"file"}, func(t *testing.T, dest string) { writeFile(t, dest, []byte("old"), 0o600, time.Now()) }, func(t *testing.T, dest string, res Result, err error) {
			sameFile(t, r("file"), dest)
		}},
		{"link to a new name", []string{"link"}, nil, func(t *testing.T, dest string, res Result, err error) {
			if target, err := os.Readlink(dest); err != nil || target != "file" {
				t.Errorf("link: %q, %v", target, err)
			}
		}},
		{"directory over a file fails", []string{"d"}, func(t *testing.T, dest string) { writeFile(t, dest, []byte("mine"), 0o644, mtime0) }, func(t *testing.T, dest string, res Result, err error) {
			if err != nil || len(res.Failures) != 1 || res.Failures[0].Path != "d" {
				t.Errorf("Run = %v, failures %v; want one failure for d", err, res.Failures)
			}
			if b, _ := os.ReadFile(dest); string(b) != "mine" {
				t.Errorf("the file in the way was changed: %q", b)
			}
		}},
		{"one name twice", []string{"d", "./d"}, nil, func(t *testing.T, dest string, res Result, err error) {
			if err != nil || len(res.Failures) != 1 || !strings.Contains(res.Failures[0].Err.Error(), "goes to") {
				t.Errorf("Run = %v, failures %v; want the second d refused", err, res.Failures)
			}
			sameFile(t, r("d/f1"), filepath.Join(dest, "d/f1"))
		}},
		{"several onto a file", []string{"d", "file"}, func(t *testing.T, dest string) { writeFile(t, dest, []byte("mine"), 0o644, mtime0) }, func(t *testing.T, dest string, res Result, err error) {
			if err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("Run = %v, want a not-a-directory error", err)
			}
		}},
		{"missing remote", []string{"nope"}, nil, func(t *testing.T, dest string, res Result, err error) {
			if err != nil || len(res.Failures) != 1 || !errors.Is(res.Failures[0].Err, transfer.ErrNotFound) {
				t.Errorf("Run = %v, failures %v; want nope not found", err, res.Failures)
			}
			absent(t, dest)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "new", "dest")
			if tt.prepare != nil {
				os.MkdirAll(filepath.Dir(dest), 0o755)
				tt.prepare(t, dest)
			}
			res, err := New(nil).Run(testCtx(t), c, tt.remotes, dest)
			if !fails[tt.name] && (err != nil || len(res.Failures) > 0) {
				t.Fatalf("Run = %v, failures %v", err, res.Failures)
			}
			tt.check(t, dest, res, err)
		})
	}
}

// TestRunResumesInterruptedTreeCopy interrupts the copy of a directory to
// a new name midway: the copy is left in the part directory, and a second
// Run completes it, renames it into place and fetches only what the first
// left out (skipped files and kept part-file chunks account for the rest).
func TestRunResumesInterruptedTreeCopy(t *testing.T) {
	root := t.TempDir()
	const files = 24
	var total int64
	for i := range files {
		data := randomData((i%5)*testChunk+100*i+1, uint64(i))
		total += int64(len(data))
		writeFile(t, filepath.Join(root, "tree", string(rune('a'+i))+".bin"), data, 0o644, mtime0.Add(time.Duration(i)*time.Second))
	}
	c := serve(t, root)
	dest := filepath.Join(t.TempDir(), "copy")

	ctx, cancel := context.WithCancel(testCtx(t))
	// Cancelled once half of the files are fetched whole.
	var whole atomic.Int64
	job := New(&Options{Workers: 2})
	job.progressHook = func(_ string, done, total int64) {
		if done == total && whole.Add(1) == files/2 {
			cancel()
		}
	}
	res, err := job.Run(ctx, c, []string{"tree"}, dest)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Run = %v, want context.Canceled", err)
	}
	absent(t, dest)
	if _, err := os.Stat(dest + transfer.PartSuffix); err != nil {
		t.Fatalf("part directory: %v", err)
	}
	first := res.BytesFetched
	if first == 0 || first >= total {
		t.Fatalf("interrupted Run fetched %d of %d bytes", first, total)
	}

	res, err = New(nil).Run(testCtx(t), c, []string{"tree"}, dest)
	if err != nil || len(res.Failures) > 0 {
		t.Fatalf("resumed Run = %v, %v", err, res.Failures)
	}
	absent(t, dest+transfer.PartSuffix)
	for i := range files {
		name := string(rune('a'+i)) + ".bin"
		sameFile(t, filepath.Join(root, "tree", name), filepath.Join(dest, name))
	}
	if res.FilesSkipped == 0 || res.FilesCopied+res.FilesSkipped != files {
		t.Errorf("resumed Run: %d copied, %d skipped of %d; want some skipped", res.FilesCopied, res.FilesSkipped, files)
	}
	// Every byte comes from one place: nothing the first Run left is
	// fetched again.
	if got := res.BytesFetched + res.BytesFromParts + res.BytesSkipped; got != total || res.BytesFetched >= total {
		t.Errorf("resumed Run: fetched %d, kept %d from parts, skipped %d (sum %d, want %d); the first fetched %d",
			res.BytesFetched, res.BytesFromParts, res.BytesSkipped, got, total, first)
	}
	if res.BytesDone != total || res.BytesTotal != total {
		t.Errorf("resumed Run: %d of %d bytes done, want %d", res.BytesDone, res.BytesTotal, total)
	}
}

// TestRunSkipsByQuickCheck: a file at the destination with the remote's
// size and mtime is skipped (its mode corrected), whatever its content;
// one whose mtime differs is fetched again.
func TestRunSkipsByQuickCheck(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a"), randomData(2*testChunk, 1), 0o644, mtime0)
	writeFile(t, filepath.Join(root, "b"), randomData(2*testChunk, 2), 0o640, mtime0)
	writeFile(t, filepath.Join(root, "c"), randomData(2*testChunk, 3), 0o644, mtime0)
	c := serve(t, root)
	dest := filepath.Join(t.TempDir(), "copy")
	if _, err := New(nil).Run(testCtx(t), c, []string{""}, dest); err != nil {
		t.Fatal(err)
	}
	// a: same size and mtime, other bytes: not noticed (the documented
	// limit of the quick check). b: mode changed. c: mtime changed.
	writeFile(t, filepath.Join(dest, "a"), randomData(2*testChunk, 9), 0o644, mtime0)
	os.Chmod(filepath.Join(dest, "b"), 0o777)
	os.Chtimes(filepath.Join(dest, "c"), time.Now(), time.Now())

	res, err := New(nil).Run(testCtx(t), c, []string{""}, dest)
	if err != nil || len(res.Failures) > 0 {
		t.Fatalf("Run = %v, %v", err, res.Failures)
	}
	if res.FilesSkipped != 2 || res.FilesCopied != 1 || res.BytesFetched != 2*testChunk {
		t.Errorf("%d skipped, %d copied, %d bytes fetched; want a and b skipped, c fetched", res.FilesSkipped, res.FilesCopied, res.BytesFetched)
	}
	sameFile(t, filepath.Join(root, "b"), filepath.Join(dest, "b"))
	sameFile(t, filepath.Join(root, "c"), filepath.Join(dest, "c"))
}

func TestWaves(t *testing.T) {
	var files []node
	for _, name := range []string{"f.kwikpart", "g", "f", "f.kwikpart.kwikpart", "h.kwikpart"} {
		files = append(files, node{local: filepath.Join("/x", name)})
	}
	var got [][]string
	for _, w := range waves(files) {
		var names []string
		for _, n := range w {
			names = append(names, filepath.Base(n.local))
		}
		got = append(got, names)
	}
	want := [][]string{{"g", "f"}, {"f.kwikpart", "h.kwikpart"}, {"f.kwikpart.kwikpart"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("waves = %q, want %q", got, want)
	}
}

func TestCleanPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""}, {"/", ""}, {".", ""}, {"a", "a"}, {"/a/b/", "a/b"}, {"a//b/./c", "a/b/c"}, {"ü ß/x y", "ü ß/x y"},
	} {
		if got, err := CleanPath(tt.in); err != nil || got != tt.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"..", "a/../b", "/../x", "a\x00b", strings.Repeat("n", transfer.MaxPathLen+1)} {
		if got, err := CleanPath(in); !errors.Is(err, ErrBadPath) {
			t.Errorf("CleanPath(%q) = %q, %v; want ErrBadPath", in, got, err)
		}
	}
}

// TestRunFileChangedDuringDownload changes a file on the server between
// two READs of its download: the download starts over with the new
// manifest, and the file written is the new version whole (nothing of the
// old one mixed in, though the part file held old chunks).
func TestRunFileChangedDuringDownload(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "f")
	v1 := randomData(10*testChunk, 1)
	v2 := randomData(10*testChunk, 2)
	writeFile(t, src, v1, 0o644, mtime0)
	c := serve(t, root)
	dest := filepath.Join(t.TempDir(), "f")
	// An earlier attempt left chunks 0-2 and 4 of v1: this one reads chunk
	// 3, then 5-9, in two READs.
	part := append([]byte(nil), v1...)
	clear(part[3*testChunk : 4*testChunk])
	if err := os.WriteFile(dest+transfer.PartSuffix, part[:5*testChunk], 0o600); err != nil {
		t.Fatal(err)
	}
	// Changed once chunk 3 is fetched, before the READ of 5-9.
	var changed atomic.Bool
	job := New(nil)
	job.progressHook = func(_ string, done, _ int64) {
		if done > 4*testChunk && changed.CompareAndSwap(false, true) {
			writeFile(t, src, v2, 0o600, mtime0.Add(time.Minute))
		}
	}
	res, err := job.Run(testCtx(t), c, []string{"f"}, dest)
	if err != nil || len(res.Failures) > 0 {
		t.Fatalf("Run = %v, %v", err, res.Failures)
	}
	if !changed.Load() {
		t.Fatal("the file was not changed during the download")
	}
	sameFile(t, src, dest)
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, v2) {
		t.Fatal("the file written is not the new version")
	}
	if res.BytesTotal != int64(len(v2)) || res.BytesDone != res.BytesTotal {
		t.Errorf("%d of %d bytes done, want %d", res.BytesDone, res.BytesTotal, len(v2))
	}
}

// TestRunCountsSources: the bytes each server delivered, as the downloads
// return them, are the bytes fetched: here all from the primary, none for
// what a part file held or a skipped file.
func TestRunCountsSources(t *testing.T) {
	root := t.TempDir()
	a := randomData(5*testChunk+7, 1)
	writeFile(t, filepath.Join(root, "t", "a"), a, 0o644, mtime0)
	writeFile(t, filepath.Join(root, "t", "b"), randomData(testChunk, 2), 0o644, mtime0)
	writeFile(t, filepath.Join(root, "t", "c"), randomData(3, 3), 0o644, mtime0)
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: testChunk}})
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { c.Close() })
	dest := filepath.Join(t.TempDir(), "t")
	// The destination holds c complete, and two chunks of a from an
	// earlier attempt.
	writeFile(t, filepath.Join(dest, "c"), randomData(3, 3), 0o644, mtime0)
	if err := os.WriteFile(filepath.Join(dest, "a")+transfer.PartSuffix, a[:2*testChunk], 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := New(nil).Run(testCtx(t), c, []string{"t/"}, filepath.Dir(dest))
	if err != nil || len(res.Failures) > 0 {
		t.Fatalf("Run = %v, %v", err, res.Failures)
	}
	want := uint64(len(a) - 2*testChunk + testChunk)
	if res.Primary != srv.Addr || len(res.BySource) != 1 || res.BySource[srv.Addr] != want || int64(want) != res.BytesFetched {
		t.Fatalf("primary %q, by source %v, fetched %d; want all %d bytes from %s", res.Primary, res.BySource, res.BytesFetched, want, srv.Addr)
	}
}
