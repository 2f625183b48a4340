package fusefs

import (
	"container/list"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kwikfs/kwikfs/transfer"
)

// Extended attributes of regular files, served when Options.Xattrs is set.
//
// XattrCached is the fraction of the file held locally, at the version the
// mount currently knows, as "F.FFF (H/N chunks)": F.FFF is H/N rounded
// down to three decimals (so "1.000" means every chunk is held), H the
// chunks held in the Store, the memory cache or the queue to the Store, N
// the file's chunks. An empty file is "1.000 (0/0 chunks)".
//
// XattrSources is, one line per server, "ADDR BYTES\n" sorted by address:
// the bytes of this file's data each server delivered to this mount (as
// Remote.ReadChunks returns them), whatever the version. It is empty until data of the
// file was fetched. It is kept in memory only, for the maxSourceFiles
// files most recently fetched from, and starts empty at each mount.
const (
	XattrCached  = "user.kwikfs.cached"
	XattrSources = "user.kwikfs.sources"
)

// ControlPathMax is the size of ControlIoctl's answer: a NUL-terminated
// path, as long as a Unix socket address may be.
const ControlPathMax = 108

// ControlIoctl asks the root directory of a kwikfs mount for the path of
// its daemon's control socket (Options.ControlSocket): _IOR('k', 1,
// [ControlPathMax]byte), answered NUL-terminated.
const ControlIoctl = 2<<30 | ControlPathMax<<16 | 'k'<<8 | 1

// maxSourceFiles bounds the files whose sources an FS remembers; the least
// recently fetched are forgotten first.
const maxSourceFiles = 4096

// sourceLog remembers per file path the bytes each server delivered. Its
// zero value is empty and ready for use.
type sourceLog struct {
	mu sync.Mutex               // guards the fields below
	ll *list.List               // front = most recently updated; holds *sourceEntry
	m  map[string]*list.Element // by file path
}

type sourceEntry struct {
	path     string
	byServer transfer.Sources
}

// add adds byServer's counts to path's and marks path most recently used;
// an empty byServer changes nothing. It does not retain byServer.
func (l *sourceLog) add(path string, byServer transfer.Sources) {
	if len(byServer) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.ll, l.m = list.New(), make(map[string]*list.Element)
	}
	e, ok := l.m[path]
	if !ok {
		e = l.ll.PushFront(&sourceEntry{path: path, byServer: make(transfer.Sources, len(byServer))})
		l.m[path] = e
		for l.ll.Len() > maxSourceFiles {
			delete(l.m, l.ll.Remove(l.ll.Back()).(*sourceEntry).path)
		}
	} else {
		l.ll.MoveToFront(e)
	}
	ent := e.Value.(*sourceEntry)
	for k, v := range byServer {
		ent.byServer[k] += v
	}
}

// get returns a copy of path's counts (nil when none are known).
func (l *sourceLog) get(path string) transfer.Sources {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[path]
	if !ok {
		return nil
	}
	return maps.Clone(e.Value.(*sourceEntry).byServer)
}

// formatSources renders XattrSources' value.
func formatSources(byServer transfer.Sources) []byte {
	var b strings.Builder
	for _, addr := range slices.Sorted(maps.Keys(byServer)) {
		b.WriteString(addr)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(byServer[addr], 10))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// formatCached renders XattrCached's value for have of n chunks.
func formatCached(have, n int) []byte {
	permille := 1000
	if n > 0 {
		permille = have * 1000 / n
	}
	return fmt.Appendf(nil, "%d.%03d (%d/%d chunks)", permille/1000, permille%1000, have, n)
}

// knownManifest returns the manifest of path the mount knows: the memory
// copy whatever its age, else the one kept in the Store, without asking
// the Remote; only when neither exists is it fetched like Open does
// (bounded by FetchTimeout).
func (f *FS) knownManifest(ctx context.Context, path string) (*transfer.Manifest, error) {
	if it, ok := f.meta.items.Get(string(kindManifest) + path); ok {
		return it.manifest, nil
	}
	if it, ok := f.meta.load(kindManifest, path); ok {
		return it.manifest, nil
	}
	return f.meta.manifest(ctx, path)
}

// heldChunks counts the chunks of m held locally: in the memory cache, on
// their way to the Store, or in the Store (asked with storeHas: an index
// look-up for a *chunkstore.Store). A Store error counts as not held.
func (f *FS) heldChunks(m *transfer.Manifest) int {
	held := 0
	for i, h := range m.Hashes {
		if _, ok := f.mem.Get(h); ok {
			held++
		} else if _, ok := f.writer.get(h); ok {
			held++
		} else if ok, err := f.storeHas(m, i); err == nil && ok {
			held++
		}
	}
	return held
}

// fileXattr returns the value of extended attribute attr of file path.
func (f *FS) fileXattr(ctx context.Context, path, attr string) ([]byte, syscall.Errno) {
	switch attr {
	case XattrCached:
		m, err := f.knownManifest(ctx, path)
		if err != nil {
			return nil, f.toErrno("getxattr", path, err)
		}
		return formatCached(f.heldChunks(m), len(m.Hashes)), 0
	case XattrSources:
		return formatSources(f.sources.get(path)), 0
	}
	return nil, syscall.ENODATA
}

// fileXattrNames is the Listxattr answer of every regular file.
var fileXattrNames = []byte(XattrCached + "\x00" + XattrSources + "\x00")
