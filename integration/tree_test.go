package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// chunkSize is the chunk size the tests give kwik-primary, small enough that
// the chunk-boundary files stay small.
const chunkSize = 256 << 10

// makeTree writes the test tree into dir: an empty file, 1 byte,
// chunk-1 / chunk / chunk+1 bytes, a bigLen-byte file, 1,000 small files,
// nested directories, names with spaces and non-ASCII letters, a symlink and
// a 0600 file. Every file gets a distinct mtime with a nanosecond part.
func makeTree(t *testing.T, dir string, bigLen int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				b[i+k] = byte(v >> (8 * k))
			}
		}
		for i := n - n%8; i < n; i++ {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	write := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		n++
		mt := base.Add(time.Duration(n)*time.Minute + time.Duration(n*7919)*time.Nanosecond)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	write("empty", nil, 0o644)
	write("one-byte", []byte{'x'}, 0o644)
	write("sizes/chunk-minus-1", random(chunkSize-1), 0o644)
	write("sizes/chunk", random(chunkSize), 0o644)
	write("sizes/chunk-plus-1", random(chunkSize+1), 0o644)
	write("big/big.bin", random(bigLen), 0o644)
	for i := range 1000 {
		write(fmt.Sprintf("many/%d/f%04d.txt", i/100, i), random(1+rng.IntN(3000)), 0o644)
	}
	write("a/b/c/d/e/deep.txt", []byte("deep\n"), 0o644)
	write("names with spaces/file with spaces.txt", []byte("spaces\n"), 0o644)
	write("ünïcödé/日本語 ファイル.txt", []byte("non-ASCII\n"), 0o644)
	write("private/secret", []byte("0600\n"), 0o600)
	write("scripts/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	if err := os.Symlink("a/b/c/d/e/deep.txt", filepath.Join(dir, "link-to-deep")); err != nil {
		t.Fatal(err)
	}
	// Directories get fixed mtimes after their content is written.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			os.Chtimes(p, base, base)
		}
		return nil
	})
}

// entry is what compareTrees checks of one path.
type entry struct {
	mode   fs.FileMode
	size   int64
	mtime  time.Time
	sha    [32]byte
	target string
}

func scanTree(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := entry{mode: info.Mode(), mtime: info.ModTime()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.target, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case info.Mode().IsRegular():
			e.size = info.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			copy(e.sha[:], h.Sum(nil))
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

// compareOptions says which attributes a copy is expected to keep.
type compareOptions struct {
	modes, mtimes bool
}

// compareTrees fails the test unless dst holds exactly the entries of src,
// byte-identical (sha256), with the same sizes, types and symlink targets,
// and, as asked, the same permission bits and file mtimes.
func compareTrees(t *testing.T, src, dst string, opts compareOptions) {
	t.Helper()
	want, got := scanTree(t, src), scanTree(t, dst)
	for rel, w := range want {
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s: missing from the copy", rel)
			continue
		}
		if w.mode.Type() != g.mode.Type() {
			t.Errorf("%s: type %v, want %v", rel, g.mode.Type(), w.mode.Type())
			continue
		}
		if w.size != g.size || w.sha != g.sha {
			t.Errorf("%s: size %d sha %x, want size %d sha %x", rel, g.size, g.sha[:6], w.size, w.sha[:6])
		}
		if w.target != g.target {
			t.Errorf("%s: symlink target %q, want %q", rel, g.target, w.target)
		}
		if opts.modes && w.mode.Type()&fs.ModeSymlink == 0 && w.mode.Perm() != g.mode.Perm() {
			t.Errorf("%s: mode %v, want %v", rel, g.mode.Perm(), w.mode.Perm())
		}
		if opts.mtimes && w.mode.IsRegular() && !w.mtime.Equal(g.mtime) {
			t.Errorf("%s: mtime %v, want %v", rel, g.mtime, w.mtime)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: in the copy but not in the source", rel)
		}
	}
}
