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

// ChunkCache is a store of verified chunks keyed by their hash, which
// DownloadFileWith consults before it fetches a chunk and fills with every
// chunk it fetches (the chunk store of a mount's cache, for one). Its
// methods may be called from several downloads at once.
type ChunkCache interface {
	// LoadChunk returns the chunk whose hash under alg is sum, read into
	// buf when it is large enough, or an error when it does not hold it
	// (any error: the chunk is then fetched). DownloadFileWith verifies
	// what it returns against the manifest before it uses it.
	LoadChunk(sum Hash, alg HashAlg, buf []byte) ([]byte, error)
	// StoreChunk keeps data, the chunk whose hash under alg is sum,
	// which the caller has verified. It must not retain data. An error
	// does not fail the download: it is logged, once per download.
	StoreChunk(sum Hash, alg HashAlg, data []byte) error
}

// DownloadOptions are the optional parts of DownloadFileWith. The zero
// value is valid.
type DownloadOptions struct {
	// Progress, if not nil, is called with the verified bytes present and
	// the file size: once after the part file was examined (done is then
	// what the part file held), once after chunks were taken from Cache
	// (when it held some), and after every chunk fetched and written. It
	// is called from the calling goroutine. When the file changes on the
	// server the download starts over and done may go down, and total
	// change, on the next call.
	Progress func(done, total int64)
	// Cache, if not nil, is asked for every chunk the part file lacks
	// before it is fetched, and given every chunk fetched.
	Cache ChunkCache
}

// DownloadFile copies regular file remotePath to localPath. It writes
// localPath+PartSuffix, and when every chunk is there and verified sets the
// file's permission bits and mtime from the manifest and renames it to
// localPath. If the part file exists (an earlier attempt was interrupted),
// every chunk in it that verifies against the current manifest is kept and
// only the others are fetched. A failed or cancelled download leaves the
// part file for the next attempt. When the file changes on the server
// during the download, it starts over (keeping what still verifies) with
// the new manifest, a few times at most, and fails with an error wrapping
// ErrStale after that: the file written is always one version, whole.
//
// progress, if not nil, is called with the verified bytes present and the
// file size: once after the part file was examined and after every chunk
// written. It is called from the calling goroutine.
func (c *Client) DownloadFile(ctx context.Context, remotePath, localPath string, progress func(done, total int64)) error {
	_, err := c.DownloadFileWith(ctx, remotePath, localPath, &DownloadOptions{Progress: progress})
	return err
}

// DownloadFileWith is DownloadFile with options (nil: none): a progress
// function and a cache of chunks that is consulted before the network.
// Chunks taken from opts.Cache are verified against the manifest like the
// others. It returns which servers delivered the chunks it fetched, over
// all its attempts (see Client.ReadChunks), with an error too.
func (c *Client) DownloadFileWith(ctx context.Context, remotePath, localPath string, opts *DownloadOptions) (Sources, error) {
	var o DownloadOptions
	if opts != nil {
		o = *opts
	}
	if o.Progress == nil {
		o.Progress = func(int64, int64) {}
	}
	var src Sources
	for attempt := 0; ; attempt++ {
		m, err := c.Manifest(ctx, remotePath)
		if err != nil {
			return src, fmt.Errorf("download %q: %w", remotePath, err)
		}
		err = c.download(ctx, remotePath, localPath, m, &o, &src)
		if errors.Is(err, ErrStale) && attempt+1 < maxStaleRetries && ctx.Err() == nil {
			c.log.Debug("file changed during download; starting over", "path", remotePath)
			continue
		}
		if err != nil {
			return src, fmt.Errorf("download %q: %w", remotePath, err)
		}
		return src, nil
	}
}

// download is one attempt of DownloadFileWith at the version of m; it
// adds the sources of the chunks it fetches to *src.
func (c *Client) download(ctx context.Context, remotePath, localPath string, m *Manifest, o *DownloadOptions, src *Sources) (err error) {
	progress := o.Progress
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
	if o.Cache != nil {
		found, err := c.fromCache(ctx, f, m, have, o.Cache, *bp)
		if err != nil {
			return fmt.Errorf("write %s: %w", part, err)
		}
		if found > 0 {
			done += found
			progress(done, m.Size)
		}
	}
	storeFailed := false
	for i := 0; i < n; {
		if have[i] {
			i++
			continue
		}
		j := i
		for j < n && !have[j] {
			j++
		}
		run, err := c.readChunks(ctx, remotePath, m, i, j-i, *bp, func(k int, data []byte) error {
			if _, err := f.WriteAt(data, m.ChunkOffset(k)); err != nil {
				return fmt.Errorf("write %s: %w", part, err)
			}
			if o.Cache != nil && !storeFailed {
				if err := o.Cache.StoreChunk(m.Hashes[k], m.Alg, data); err != nil {
					storeFailed = true // once per download: the cache is likely full or broken
					c.log.Warn("chunk not cached", "path", remotePath, "chunk", k, "err", err)
				}
			}
			done += int64(len(data))
			progress(done, m.Size)
			return nil
		})
		src.Add(run)
		if err != nil {
			return err
		}
		i = j
	}

	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(FileMode(m.Mode)); err != nil {
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

// fromCache writes into f every chunk of m that have lacks and cache holds
// (verified against m), marks it in have and returns the bytes written.
// buf is a chunk buffer it may use.
func (c *Client) fromCache(ctx context.Context, f *os.File, m *Manifest, have []bool, cache ChunkCache, buf []byte) (int64, error) {
	var found int64
	for i := range have {
		if have[i] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return found, err
		}
		data, err := cache.LoadChunk(m.Hashes[i], m.Alg, buf)
		if err != nil || m.Verify(i, data) != nil {
			continue
		}
		if _, err := f.WriteAt(data, m.ChunkOffset(i)); err != nil {
			return found, err
		}
		have[i] = true
		found += int64(len(data))
	}
	return found, nil
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

// FileMode converts the permission bits of a Unix mode (Attr.Mode,
// Manifest.Mode: rwx and setuid, setgid, sticky) to an os.FileMode, as
// DownloadFile sets them on the file it writes; the type bits are ignored.
func FileMode(mode uint32) os.FileMode {
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
