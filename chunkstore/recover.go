package chunkstore

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// recover reconciles the chunk records with the segment files and sets
// Stats.Chunks and Stats.ChunkBytes; Open calls it before s is shared.
//
// Writers append a batch's bytes before committing its records and hold
// writeMu until the commit, so after a crash the only bytes without a
// record are those of the last batch, at the end of the last segment (and
// the space of deleted chunks). Records without their bytes can exist only
// after a machine crash with SyncWrites false: Badger's commit reached the
// disk, the segment's pages did not.
func (s *Store) recover() error {
	dir := s.app.dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list segments: %w", err)
	}
	sizes := map[uint32]int64{} // segment file sizes
	var maxID uint32
	for _, e := range entries {
		id, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			s.log.Warn("chunkstore: ignoring unexpected file among the segments", "name", e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("stat segment: %w", err)
		}
		sizes[id] = info.Size()
		maxID = max(maxID, id)
	}

	type lost struct {
		key   []byte
		cause string
	}
	var (
		drop          []lost
		ends          = map[uint32]int64{} // end of the last chunk recorded in each segment
		chunks, bytes int64
	)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsInfo}, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var loc location
			err := item.Value(func(v []byte) error {
				var err error
				loc, err = decodeInfo(v)
				return err
			})
			cause := ""
			size, haveSeg := sizes[loc.seg]
			switch {
			case err != nil:
				cause = err.Error()
			case !haveSeg:
				cause = fmt.Sprintf("%s: %v", segmentName(loc.seg), errNoSegment)
			case loc.end() > size:
				cause = fmt.Sprintf("%s ends at %d, before the chunk's end at %d", segmentName(loc.seg), size, loc.end())
			}
			if cause != "" {
				drop = append(drop, lost{item.KeyCopy(nil), cause})
				continue
			}
			chunks++
			bytes += loc.n
			ends[loc.seg] = max(ends[loc.seg], loc.end())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read chunk records: %w", err)
	}

	// Records first, files second: if a crash comes between the two, the
	// next Open finds the files without records and finishes the job.
	for _, d := range drop {
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(d.key) }); err != nil {
			return fmt.Errorf("remove chunk record: %w", err)
		}
		s.log.Warn("chunkstore: removed chunk whose bytes are lost", "sum", fmt.Sprintf("%x", d.key[1:]), "cause", d.cause)
	}
	for id, size := range sizes {
		p := filepath.Join(dir, segmentName(id))
		end, used := ends[id]
		switch {
		case !used:
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove unused segment: %w", err)
			}
			s.log.Debug("chunkstore: removed segment without chunks", "segment", segmentName(id), "bytes", size)
		case size > end:
			if err := os.Truncate(p, end); err != nil {
				return fmt.Errorf("truncate segment: %w", err)
			}
			s.log.Debug("chunkstore: cut unindexed bytes at a segment's end", "segment", segmentName(id), "from", size, "to", end)
		}
	}

	s.stats.Chunks, s.stats.ChunkBytes = chunks, bytes
	s.stats.Corrupt = int64(len(drop))
	if end, used := ends[maxID]; used {
		return s.app.resume(maxID, end)
	}
	s.app.id = maxID + 1
	return nil
}
