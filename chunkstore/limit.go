package chunkstore

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// AutoLimit, as Options.Limit, makes Open choose the limit itself: half of
// the space free on the filesystem of the store's directory, counting the
// space the store's chunks take already as free (so that reopening a full
// store does not shrink its limit), and at least 1 byte. Half, because the
// usual reason to read a remote tree is to copy it, and a copy onto the
// same disk needs as much room as the cache takes; a fixed size would be
// too small for a big disk and too big for a small one. The figure is taken
// once, by Open; Store.Limit and Stats.Limit report it.
const AutoLimit int64 = math.MinInt64

// autoLimit is the limit AutoLimit selects for a store in dir, which
// exists: half of free(dir) plus the disk space of the segment files.
func autoLimit(dir string, free func(dir string) (int64, error)) (int64, error) {
	avail, err := free(dir)
	if err != nil {
		return 0, fmt.Errorf("chunkstore: free space of %s: %w", dir, err)
	}
	held, err := segmentsSpace(filepath.Join(dir, segmentsDir))
	if err != nil {
		return 0, fmt.Errorf("chunkstore: space of the segments of %s: %w", dir, err)
	}
	return max((avail+held)/2, 1), nil
}

// segmentsSpace returns the disk space (allocated blocks) of the segment
// files in segDir; none when segDir does not exist yet.
func segmentsSpace(segDir string) (int64, error) {
	ents, err := os.ReadDir(segDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var held int64
	for _, e := range ents {
		if _, ok := parseSegmentName(e.Name()); !ok {
			continue
		}
		var st unix.Stat_t
		switch err := unix.Stat(filepath.Join(segDir, e.Name()), &st); {
		case errors.Is(err, unix.ENOENT):
			// Removed since it was listed: it holds nothing.
		case err != nil:
			return 0, err
		default:
			held += st.Blocks * 512
		}
	}
	return held, nil
}

// statfsFree returns the space free to unprivileged users on the
// filesystem of dir.
func statfsFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
