package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// PartSuffix is appended to the local path of a download in progress.
const PartSuffix = ".kwikpart"

// maxStaleRetries bounds how often DownloadFile starts over with a new
// manifest because the file changed on the server.
const maxStaleRetries = 3

// DownloadFile copies regular file remotePath to localPath. It writes
// localPath+PartSuffix, and when every chunk is there and verified sets the
// file's permission bits and mtime from the manifest and renames it to
// localPath. If the part file exists (an earlier attempt was interrupted),
// every chunk in it that verifies against the current manifest is kept and
// only the others are fetched. A failed or cancelled download leaves the
// part file for the next attempt. When the file changes on the server
// during the download, it starts over (keeping what still verifies) with
// the new manifest, a few times at most.
//
// progress, if not nil, is called with the verified bytes present and the
// file size: once after the part file was examined and after every chunk
// written. It is called from the calling goroutine.
func (c *Client) DownloadFile(ctx context.Context, remotePath, localPath string, progress func(done, total int64)) error {
	if progress == nil {
		progress = func(int64, int64) {}
	}
	for attempt := 0; ; attempt++ {
		m, err := c.Manifest(ctx, remotePath)
		if err != nil {
			return fmt.Errorf("download %q: %w", remotePath, err)
		}
		err = c.download(ctx, remotePath, localPath, m, progress)
		if errors.Is(err, ErrStale) && attempt+1 < maxStaleRetries && ctx.Err() == nil {
			c.log.Debug("file changed during download; starting over", "path", remotePath)
			continue
		}
		if err != nil {
			return fmt.Errorf("download %q: %w", remotePath, err)
		}
		return nil
	}
}

func (c *Client) download(ctx context.Context, remotePath, localPath string, m *Manifest, progress func(done, total int64)) (err error) {
	part := localPath + PartSuffix
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	have, done, err := c.verifyPart(ctx, f, m)
	if err != nil {
		return err
	}
	if err := f.Truncate(m.Size); err != nil {
		return err
	}
	progress(done, m.Size)

	// The chunks are written before the next is read: one buffer will do.
	bp := c.buffer(int(m.ChunkSize))
	defer c.bufs.Put(bp)
	n := m.NumChunks()
	for i := 0; i < n; {
		if have[i] {
			i++
			continue
		}
		j := i
		for j < n && !have[j] {
			j++
		}
		err := c.readChunks(ctx, remotePath, m, i, j-i, *bp, func(k int, data []byte) error {
			if _, err := f.WriteAt(data, m.ChunkOffset(k)); err != nil {
				return fmt.Errorf("write %s: %w", part, err)
			}
			done += int64(len(data))
			progress(done, m.Size)
			return nil
		})
		if err != nil {
			return err
		}
		i = j
	}

	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(fileMode(m.Mode)); err != nil {
		return err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return err
	}
	mtime := time.Unix(0, m.MtimeNs)
	if err := os.Chtimes(part, mtime, mtime); err != nil {
		return err
	}
	return os.Rename(part, localPath)
}

// verifyPart reports which chunks of m the part file f already holds
// (whole and verified) and how many bytes they make.
func (c *Client) verifyPart(ctx context.Context, f *os.File, m *Manifest) (have []bool, done int64, err error) {
	have = make([]bool, m.NumChunks())
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if fi.Size() == 0 || len(have) == 0 {
		return have, 0, nil
	}
	bp := c.buffer(int(m.ChunkSize))
	defer c.bufs.Put(bp)
	for i := range have {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		l := m.ChunkLen(i)
		if m.ChunkOffset(i)+int64(l) > fi.Size() {
			break
		}
		data := (*bp)[:l]
		if _, err := f.ReadAt(data, m.ChunkOffset(i)); err != nil && err != io.EOF {
			return nil, 0, err
		}
		if m.Verify(i, data) == nil {
			have[i] = true
			done += int64(l)
		}
	}
	return have, done, nil
}

// fileMode converts the permission bits of a Unix mode to an os.FileMode.
func fileMode(mode uint32) os.FileMode {
	fm := os.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}
