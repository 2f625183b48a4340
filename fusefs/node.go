package fusefs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kwikfs/kwikfs/transfer"
)

// node is what every node type shares: its FS and its path relative to the
// exported root ("" for the root). Both are immutable.
type node struct {
	fs.Inode
	fsys *FS
	path string
}

// dirNode is a directory; the root is the dirNode whose path is "".
type dirNode struct {
	node
}

// fileNode is a regular file at one version: the size and mtime of the
// listing entry it was made for (ver, immutable). When the file changes on
// the server, its name gets a new fileNode (a new inode for the kernel),
// while descriptors opened before keep the old one: its own page cache and
// size, so that they never see bytes or the size of another version.
type fileNode struct {
	node
	ver transfer.Attr // the listing entry this node stands for
	// retired is set when the file's content changed on the server with
	// its size and mtime kept: the name then gets a new node all the same.
	retired atomic.Bool

	mu          sync.Mutex // guards lastVersion and opened
	lastVersion transfer.Hash
	opened      bool // lastVersion is set
}

// symlinkNode is a symbolic link.
type symlinkNode struct {
	node
}

var (
	_ fs.NodeLookuper    = (*dirNode)(nil)
	_ fs.NodeReaddirer   = (*dirNode)(nil)
	_ fs.NodeGetattrer   = (*dirNode)(nil)
	_ fs.NodeStatfser    = (*dirNode)(nil)
	_ fs.NodeGetxattrer  = (*dirNode)(nil)
	_ fs.NodeListxattrer = (*dirNode)(nil)
	_ fs.NodeIoctler     = (*dirNode)(nil)

	_ fs.NodeGetattrer   = (*fileNode)(nil)
	_ fs.NodeOpener      = (*fileNode)(nil)
	_ fs.NodeFlusher     = (*fileNode)(nil)
	_ fs.NodeStatfser    = (*fileNode)(nil)
	_ fs.NodeGetxattrer  = (*fileNode)(nil)
	_ fs.NodeListxattrer = (*fileNode)(nil)

	_ fs.NodeGetattrer  = (*symlinkNode)(nil)
	_ fs.NodeReadlinker = (*symlinkNode)(nil)
	_ fs.NodeStatfser   = (*symlinkNode)(nil)
)

// attr returns the node's current Attr from its parent's listing, and how
// much longer that listing is trusted (see FS.ttl). A node whose entry is
// gone or changed type is reported as not found. It is not for the root.
func (n *node) attr(ctx context.Context, typ uint32) (transfer.Attr, time.Duration, error) {
	dir, name := splitPath(n.path)
	it, err := n.fsys.meta.list(ctx, dir)
	if err != nil {
		return transfer.Attr{}, 0, err
	}
	a, ok := it.lookup(name)
	if !ok || a.Mode&transfer.ModeTypeMask != typ {
		return transfer.Attr{}, 0, fmt.Errorf("%q: %w", n.path, transfer.ErrNotFound)
	}
	return a, n.fsys.ttl(it), nil
}

// getattr answers Getattr for a directory (other than the root) or a
// symlink: typ is its type.
func (n *node) getattr(ctx context.Context, typ uint32, out *fuse.AttrOut) syscall.Errno {
	a, ttl, err := n.attr(ctx, typ)
	if err != nil {
		return n.fsys.toErrno("getattr", n.path, err)
	}
	n.fsys.fillAttr(&out.Attr, a)
	out.SetTimeout(ttl)
	return 0
}

// minKernelTTL is the shortest time the kernel is told to keep a name or
// attributes (zero would make go-fuse apply its default).
const minKernelTTL = 10 * time.Millisecond

// ttl is how long the kernel may keep names and attributes taken from it:
// the rest of its AttrTimeout, so that a change on the server shows through
// the mount within AttrTimeout of the FS's asking for it, not within two
// (the FS's memory plus the kernel's).
func (f *FS) ttl(it *metaItem) time.Duration {
	left := f.opts.AttrTimeout - f.now().Sub(it.checked)
	return min(max(left, minKernelTTL), f.opts.AttrTimeout)
}

// sameVersion reports whether listing entries (or a manifest's attributes)
// a and b describe the same version of a regular file: the server's
// manifests are keyed by size and mtime alike.
func sameVersion(a, b transfer.Attr) bool {
	return a.Size == b.Size && a.MtimeNs == b.MtimeNs
}

// manifestAttr returns the attributes of the version m describes.
func manifestAttr(m *transfer.Manifest) transfer.Attr {
	return transfer.Attr{Mode: m.Mode, Size: m.Size, MtimeNs: m.MtimeNs}
}

// Statfs reports a read-only filesystem of unknown capacity.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{}
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

// fillAttr converts a to the kernel's attributes: the exported mode, size
// and mtime (also used as atime and ctime), owned by the mounting process.
func (f *FS) fillAttr(out *fuse.Attr, a transfer.Attr) {
	out.Mode = a.Mode
	out.Size = uint64(max(a.Size, 0))
	if a.IsSymlink() {
		out.Size = uint64(len(a.Target))
	}
	sec, nsec := uint64(a.MtimeNs/1e9), uint32(a.MtimeNs%1e9)
	if a.MtimeNs < 0 {
		sec, nsec = 0, 0
	}
	out.Mtime, out.Mtimensec = sec, nsec
	out.Atime, out.Atimensec = sec, nsec
	out.Ctime, out.Ctimensec = sec, nsec
	out.Nlink = 1
	if a.IsDir() {
		out.Nlink = 2
	}
	out.Uid, out.Gid = f.uid, f.gid
}

// Getattr reports the directory's attributes. The root is always a
// directory, and its attributes never wait long for the server (see
// metaCache.statRoot): after rootStatWait (1 s) without an answer they are
// the last known ones or, when no copy is kept, mode 0555 with mtime 0, so
// that cached entries stay reachable.
func (n *dirNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.path != "" {
		return n.getattr(ctx, transfer.ModeDir, out)
	}
	a, err := n.fsys.meta.statRoot(ctx)
	if err != nil && unavailable(err) {
		a, err = transfer.Attr{Mode: transfer.ModeDir | 0o555}, nil
	}
	if err == nil && !a.IsDir() {
		err = fmt.Errorf("exported root: %w", transfer.ErrNotDir)
	}
	if err != nil {
		return n.fsys.toErrno("getattr", "", err)
	}
	n.fsys.fillAttr(&out.Attr, a)
	return 0
}

// Lookup finds name in the directory's listing.
func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	it, err := n.fsys.meta.list(ctx, n.path)
	if err != nil {
		return nil, n.fsys.toErrno("lookup", joinPath(n.path, name), err)
	}
	ttl := n.fsys.ttl(it)
	a, ok := it.lookup(name)
	if !ok {
		// The kernel keeps the name's absence for what is left of the
		// listing's trust too (go-fuse keeps a timeout set here, else it
		// would apply the full NegativeTimeout), so that a name added on
		// the server appears within AttrTimeout.
		out.SetEntryTimeout(min(ttl, n.fsys.opts.EntryTimeout))
		return nil, syscall.ENOENT
	}
	child := n.child(ctx, name, a)
	if child == nil {
		return nil, syscall.ENOENT
	}
	n.fsys.fillAttr(&out.Attr, a)
	out.SetAttrTimeout(ttl)
	out.SetEntryTimeout(min(ttl, n.fsys.opts.EntryTimeout))
	return child, 0
}

// child returns the inode for entry a called name: the existing child when
// it has the same type (and, for a regular file, the same version), else a
// new one. Types other than directory, regular file and symlink give nil.
func (n *dirNode) child(ctx context.Context, name string, a transfer.Attr) *fs.Inode {
	typ := a.Mode & transfer.ModeTypeMask
	if ch := n.GetChild(name); ch != nil && ch.Mode() == typ {
		if f, ok := ch.Operations().(*fileNode); !ok || sameVersion(f.ver, a) && !f.retired.Load() {
			return ch
		}
	}
	fsys, path := n.fsys, joinPath(n.path, name)
	var emb fs.InodeEmbedder
	switch typ {
	case transfer.ModeDir:
		emb = &dirNode{node: node{fsys: fsys, path: path}}
	case transfer.ModeRegular:
		emb = &fileNode{node: node{fsys: fsys, path: path}, ver: a}
	case transfer.ModeSymlink:
		emb = &symlinkNode{node: node{fsys: fsys, path: path}}
	default:
		return nil
	}
	return n.NewInode(ctx, emb, fs.StableAttr{Mode: typ})
}

// Readdir lists the directory from its (cached) listing. A walk of the
// tree comes next: it starts the listings of the first subdirectories and
// of the directory's next siblings (see metaCache.listAhead) and, while
// files are being opened, the FILES request of the directory's first
// files (see opener.walking).
func (n *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	it, err := n.fsys.meta.list(ctx, n.path)
	if err != nil {
		return nil, n.fsys.toErrno("readdir", n.path, err)
	}
	n.fsys.meta.listAhead(n.path, it)
	n.fsys.ahead.walking(n.path, it)
	entries := make([]fuse.DirEntry, 0, len(it.entries))
	for _, a := range it.entries {
		switch a.Mode & transfer.ModeTypeMask {
		case transfer.ModeDir, transfer.ModeRegular, transfer.ModeSymlink:
			entries = append(entries, fuse.DirEntry{Name: a.Name, Mode: a.Mode})
		}
	}
	return fs.NewListDirStream(entries), 0
}

// Getxattr answers ENOSYS unless Options.Xattrs is set (see there);
// directories have no attributes of their own.
func (n *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !n.fsys.opts.Xattrs {
		return 0, syscall.ENOSYS
	}
	return 0, syscall.ENODATA
}

// Listxattr answers ENOSYS unless Options.Xattrs is set, and an empty list
// when it is.
func (n *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if !n.fsys.opts.Xattrs {
		return 0, syscall.ENOSYS
	}
	return 0, 0
}

// Ioctl answers ControlIoctl on the root directory with
// Options.ControlSocket; other requests, and any on another directory,
// get ENOTTY.
func (n *dirNode) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	sock := n.fsys.opts.ControlSocket
	if n.path != "" || cmd != ControlIoctl || sock == "" {
		return 0, syscall.ENOTTY
	}
	if len(sock) >= len(output) {
		return 0, syscall.ENAMETOOLONG
	}
	clear(output)
	copy(output, sock)
	return 0, 0
}

// Getattr reports the file's attributes from its parent's listing while
// they describe the node's version. Once the file has changed on the server
// (or is gone), the node stands for a past version, still read through
// descriptors opened before: it keeps that version's attributes (those of
// the open handle fh, when there is one), so that the kernel never takes
// another version's size for it.
func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	want := n.ver
	if h, ok := fh.(*fileHandle); ok {
		want = manifestAttr(h.m)
	}
	a, ttl, err := n.attr(ctx, transfer.ModeRegular)
	switch {
	case err == nil && sameVersion(a, want):
		n.fsys.fillAttr(&out.Attr, a)
		out.SetTimeout(ttl)
	case err == nil || errors.Is(err, transfer.ErrNotFound) || fh != nil:
		// A past version: its attributes do not change.
		n.fsys.fillAttr(&out.Attr, want)
	default:
		return n.fsys.toErrno("getattr", n.path, err)
	}
	return 0
}

// openAttempts bounds how many times Open asks for the file's manifest when
// it does not describe the node's version.
const openAttempts = 3

// Open pins the manifest of the node's version in a new handle. Opening for
// writing fails with EROFS. The kernel keeps its page cache when the node
// was opened before (at the same version, necessarily). When the file has
// changed on the server since the node was made (another size or mtime in
// the listing, or another content in the manifest than at the node's last
// open), Open fails with ESTALE, on which the kernel looks the name up
// again, finding a new node for the new version, and retries the open.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	n.fsys.ahead.opening(ctx, n.path)
	m, err := n.manifest(ctx)
	if err != nil {
		return nil, 0, n.fsys.toErrno("open", n.path, err)
	}
	var fuseFlags uint32
	n.mu.Lock()
	if n.opened && n.lastVersion != m.Version {
		// Same size and mtime, other content: the node's page cache
		// and its open descriptors belong to the version opened before.
		n.mu.Unlock()
		n.retired.Store(true)
		return nil, 0, n.fsys.toErrno("open", n.path, fmt.Errorf("open %q: content changed with size and mtime kept: %w", n.path, transfer.ErrStale))
	}
	if n.opened {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	n.lastVersion, n.opened = m.Version, true
	n.mu.Unlock()
	return newFileHandle(n.fsys, n.path, m), fuseFlags, 0
}

// Flush answers ENOSYS: a read-only file has nothing to flush, and on
// that answer the kernel sends no more FLUSH requests to the mount, which
// saves a round trip to the daemon on every close(2).
func (n *fileNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// manifest returns the manifest of the node's version: the kept one (fresh
// within AttrTimeout) when it is of that version, else a new one. Between
// asking for manifests it asks for the parent's listing again; when that
// has another version of the file, or none, the node is stale and manifest
// fails with an error wrapping transfer.ErrStale; so it does when
// openAttempts manifests all disagree with the listing (the file keeps
// changing).
func (n *fileNode) manifest(ctx context.Context) (*transfer.Manifest, error) {
	dir, name := splitPath(n.path)
	for attempt := 1; ; attempt++ {
		m, err := n.fsys.meta.manifest(ctx, n.path)
		if err != nil {
			return nil, err
		}
		if sameVersion(manifestAttr(m), n.ver) {
			return m, nil
		}
		if attempt == openAttempts {
			return nil, fmt.Errorf("open %q: manifest of size %d mtime %d, listing of size %d mtime %d: %w",
				n.path, m.Size, m.MtimeNs, n.ver.Size, n.ver.MtimeNs, transfer.ErrStale)
		}
		n.fsys.meta.expire(kindManifest, n.path)
		n.fsys.meta.expire(kindList, dir)
		it, err := n.fsys.meta.list(ctx, dir)
		if err != nil {
			return nil, err
		}
		if a, ok := it.lookup(name); !ok || a.Mode&transfer.ModeTypeMask != transfer.ModeRegular || !sameVersion(a, n.ver) {
			return nil, fmt.Errorf("open %q: changed on the server: %w", n.path, transfer.ErrStale)
		}
	}
}

// Getxattr serves XattrCached and XattrSources (see xattr.go) when
// Options.Xattrs is set; other names give ENODATA. Without Options.Xattrs
// it answers ENOSYS.
func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if !n.fsys.opts.Xattrs {
		return 0, syscall.ENOSYS
	}
	v, errno := n.fsys.fileXattr(ctx, n.path, attr)
	if errno != 0 {
		return 0, errno
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists XattrCached and XattrSources when Options.Xattrs is
// set, and answers ENOSYS otherwise.
func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if !n.fsys.opts.Xattrs {
		return 0, syscall.ENOSYS
	}
	if len(dest) < len(fileXattrNames) {
		return uint32(len(fileXattrNames)), syscall.ERANGE
	}
	return uint32(copy(dest, fileXattrNames)), 0
}

// Getattr reports the symlink's attributes from its parent's listing.
func (n *symlinkNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.getattr(ctx, transfer.ModeSymlink, out)
}

// Readlink returns the target from the parent's listing, asking the Remote
// only when the listing has none.
func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	a, _, err := n.attr(ctx, transfer.ModeSymlink)
	if err != nil {
		return nil, n.fsys.toErrno("readlink", n.path, err)
	}
	if a.Target != "" {
		return []byte(a.Target), 0
	}
	rctx, cancel := context.WithTimeout(ctx, n.fsys.opts.FetchTimeout)
	defer cancel()
	target, err := n.fsys.remote.Readlink(rctx, n.path)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Canceled
		}
		return nil, n.fsys.toErrno("readlink", n.path, err)
	}
	return []byte(target), 0
}

// splitPath splits "a/b/c" into "a/b" and "c", and "c" into "" and "c".
func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// joinPath joins a directory path and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
