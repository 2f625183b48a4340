package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The small-files bench's tree: written from a seed, and the check of a
// copy of it against what was written.

// smallFileSize is the size of every file of the tree.
const smallFileSize = 4 << 10

// smallModes are the permissions the tree's files take in turn, so that a
// copy that keeps modes (rsync -a) is checked on more than one.
var smallModes = []fs.FileMode{0o644, 0o600, 0o640, 0o755}

// smallFile is what the bench wrote for one file of the tree.
type smallFile struct {
	sum   [sha256.Size]byte
	mode  fs.FileMode // permission bits
	mtime time.Time   // whole seconds, so any file system can carry it
}

// smallTree is a tree of small files the bench wrote.
type smallTree struct {
	dir   string               // the tree
	files map[string]smallFile // by path relative to dir, slash-separated
	dirs  int                  // directories under dir (dir not counted)
}

// entries returns the files and directories under the tree (the tree
// itself not counted): what ls -lR and find go through.
func (t *smallTree) entries() int { return len(t.files) + t.dirs }

// writeSmallTree writes files files of smallFileSize random bytes (from
// seed) to dir, spread in turn over dirs directories d00, d01, ... (at
// least one), named f0000, f0001, ... by their index. File i gets mode
// smallModes[i%len] and an mtime i seconds before a fixed date.
func writeSmallTree(dir string, files, dirs int, seed uint64) (*smallTree, error) {
	dirs = max(dirs, 1)
	dirName := func(i int) string { return fmt.Sprintf("d%0*d", max(2, len(strconv.Itoa(dirs-1))), i) }
	fileWidth := max(4, len(strconv.Itoa(files-1)))
	for i := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, dirName(i)), 0o755); err != nil {
			return nil, err
		}
	}
	t := &smallTree{dir: dir, files: make(map[string]smallFile, files), dirs: dirs}
	rng := seededRand(seed)
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	buf := make([]byte, smallFileSize)
	for i := range files {
		fillRandom(rng, buf)
		rel := dirName(i%dirs) + "/" + fmt.Sprintf("f%0*d", fileWidth, i)
		f := smallFile{sum: sha256.Sum256(buf), mode: smallModes[i%len(smallModes)], mtime: base.Add(-time.Duration(i) * time.Second)}
		path := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.WriteFile(path, buf, 0o600); err != nil {
			return nil, err
		}
		if err := os.Chmod(path, f.mode); err != nil {
			return nil, err
		}
		if err := os.Chtimes(path, f.mtime, f.mtime); err != nil {
			return nil, err
		}
		t.files[rel] = f
	}
	return t, nil
}

// checkCopy checks that dest holds the tree's files and no others, each
// with the contents written (by sha256) and, with attrs set, the same
// permission bits and mtime. The error lists the first few differences
// and counts them all.
func (t *smallTree) checkCopy(dest string, attrs bool) error {
	var bad []string
	seen := make(map[string]bool, len(t.files))
	err := filepath.WalkDir(dest, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dest, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		want, ok := t.files[rel]
		if !ok {
			bad = append(bad, rel+": not in the source tree")
			return nil
		}
		seen[rel] = true
		if problem, err := want.differs(path, d, attrs); err != nil {
			return err
		} else if problem != "" {
			bad = append(bad, rel+": "+problem)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", dest, err)
	}
	for rel := range t.files {
		if !seen[rel] {
			bad = append(bad, rel+": missing")
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	shown := bad[:min(len(bad), 10)]
	return fmt.Errorf("copy differs from the source in %d of %d files: %s", len(bad), len(t.files), strings.Join(shown, "; "))
}

// differs returns what differs between f and the copy at path (d its
// entry): its contents or type, or with attrs set its permission bits or
// mtime; "" when nothing does.
func (f smallFile) differs(path string, d fs.DirEntry, attrs bool) (string, error) {
	if !d.Type().IsRegular() {
		return fmt.Sprintf("type %v, want a regular file", d.Type()), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if sha256.Sum256(b) != f.sum {
		return fmt.Sprintf("sha256 differs (%d bytes)", len(b)), nil
	}
	if !attrs {
		return "", nil
	}
	info, err := d.Info()
	if err != nil {
		return "", err
	}
	if info.Mode().Perm() != f.mode {
		return fmt.Sprintf("mode %v, want %v", info.Mode().Perm(), f.mode), nil
	}
	if !info.ModTime().Equal(f.mtime) {
		return fmt.Sprintf("mtime %v, want %v", info.ModTime().UTC(), f.mtime), nil
	}
	return "", nil
}
