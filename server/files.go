package server

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/kwikfs/kwikfs/transfer"
)

// Files answers a FILES request (see transfer.Files): for names[0], the
// manifest of the file, whatever its size, and its first chunk if it fits
// in maxBytes; for each further name that is a regular file of one chunk
// at most, its manifest and content while they fit in what is left of
// maxBytes. A file still at the version known gives for it (known is nil
// or parallel to names; the zero Hash: none) comes without content.
// Every other name is skipped (a nil Manifest): the client then
// asks for it the usual way and gets the usual answer, an error included.
// It fails only when dir is not a readable directory within the root.
// The manifests it computes are cached as Manifest's are.
func (c *Catalog) Files(ctx context.Context, dir string, names []string, known []transfer.Hash, maxBytes int) ([]transfer.FileData, error) {
	name, err := rootName(dir)
	if err != nil {
		return nil, err
	}
	fi, err := c.root.Stat(name)
	if err != nil {
		return nil, c.mapErr("files", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("files %q: %w", dir, transfer.ErrNotDir)
	}
	out := make([]transfer.FileData, len(names))
	left := maxBytes
	for i, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("files %q: %w", dir, err)
		}
		if i > 0 && left <= 0 {
			break
		}
		var have transfer.Hash
		if known != nil {
			have = known[i]
		}
		fd, cost := c.fileData(ctx, joinName(dir, n), i == 0, have, left)
		out[i] = fd
		left -= cost
	}
	return out, nil
}

// joinName returns the path of entry name of directory dir.
func joinName(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// fileData returns what a FILES reply carries for path and what it costs
// against the budget left: the manifest and first chunk of a file of one
// chunk at most when both fit in left; for the first name (first set),
// the manifest of a file of any size, with its first chunk if it fits;
// no first chunk when the manifest's version is have. A name that is
// skipped costs nothing.
func (c *Catalog) fileData(ctx context.Context, path string, first bool, have transfer.Hash, left int) (transfer.FileData, int) {
	f, fi, err := c.openRegular("files", path)
	if err != nil {
		return transfer.FileData{}, 0
	}
	defer f.Close()
	if fi.Size() > int64(c.chunkSize) {
		if !first {
			return transfer.FileData{}, 0
		}
		m, err := c.manifestOf(ctx, path, f, fi)
		if err != nil {
			return transfer.FileData{}, 0
		}
		fd := transfer.FileData{Manifest: m}
		if cost := transfer.FilesCost(m, true); cost <= left && m.Version != have {
			if data := c.readFirst(f, m); data != nil {
				fd.First = data
				return fd, cost
			}
		}
		return fd, transfer.FilesCost(m, false)
	}
	m, data, err := c.small(path, f, fi)
	if err != nil {
		return transfer.FileData{}, 0
	}
	if cost := transfer.FilesCost(m, true); cost <= left && m.Version != have {
		return transfer.FileData{Manifest: m, First: data}, cost
	}
	if first || m.Version == have && transfer.FilesCost(m, false) <= left {
		return transfer.FileData{Manifest: m}, transfer.FilesCost(m, false)
	}
	return transfer.FileData{}, 0
}

// readFirst reads chunk 0 of f and returns it if it matches m, else nil
// (the file changed since m was taken).
func (c *Catalog) readFirst(f *os.File, m *transfer.Manifest) []byte {
	data := make([]byte, m.ChunkLen(0))
	if n, _ := f.ReadAt(data, 0); n < len(data) {
		return nil
	}
	if m.Verify(0, data) != nil {
		return nil
	}
	return data
}

// small reads the whole of f, a regular file of one chunk at most, hashes
// it into its manifest (cached as compute caches), and returns both. It
// fails with ErrStale when the file changed while it was read.
func (c *Catalog) small(path string, f *os.File, fi os.FileInfo) (*transfer.Manifest, []byte, error) {
	a, _ := attrOf(fi)
	data := make([]byte, fi.Size())
	if n, err := f.ReadAt(data, 0); n < len(data) {
		if err == io.EOF {
			return nil, nil, fmt.Errorf("files %q: shrank while read: %w", path, transfer.ErrStale)
		}
		return nil, nil, c.mapErr("files", path, err)
	}
	fi2, err := f.Stat()
	if err != nil {
		return nil, nil, c.mapErr("files", path, err)
	}
	if fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		return nil, nil, fmt.Errorf("files %q: changed while read: %w", path, transfer.ErrStale)
	}
	m := &transfer.Manifest{Size: fi.Size(), MtimeNs: a.MtimeNs, Mode: a.Mode, ChunkSize: c.chunkSize, Alg: c.alg}
	if m.Size > 0 {
		m.Hashes = []transfer.Hash{m.Sum(data)}
	}
	m.Version = transfer.ComputeVersion(m.Alg, m.Size, m.ChunkSize, m.Hashes)
	c.computed.Add(1)
	c.cache.put(path, manifestKey{size: m.Size, mtimeNs: m.MtimeNs}, m)
	return m, data, nil
}
