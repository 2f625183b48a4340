package fusefs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"

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

// fileNode is a regular file.
type fileNode struct {
	node

	mu          sync.Mutex // guards lastVersion
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

	_ fs.NodeGetattrer   = (*fileNode)(nil)
	_ fs.NodeOpener      = (*fileNode)(nil)
	_ fs.NodeStatfser    = (*fileNode)(nil)
	_ fs.NodeGetxattrer  = (*fileNode)(nil)
	_ fs.NodeListxattrer = (*fileNode)(nil)

	_ fs.NodeGetattrer  = (*symlinkNode)(nil)
	_ fs.NodeReadlinker = (*symlinkNode)(nil)
	_ fs.NodeStatfser   = (*symlinkNode)(nil)
)

// attr returns the node's current Attr: the root's from Stat, any other's
// from its parent's listing. A node whose entry is gone or changed type is
// reported as not found.
func (n *node) attr(ctx context.Context, typ uint32) (transfer.Attr, error) {
	if n.path == "" {
		return n.fsys.meta.statRoot(ctx)
	}
	dir, name := splitPath(n.path)
	it, err := n.fsys.meta.list(ctx, dir)
	if err != nil {
		return transfer.Attr{}, err
	}
	a, ok := it.lookup(name)
	if !ok || a.Mode&transfer.ModeTypeMask != typ {
		return transfer.Attr{}, fmt.Errorf("%q: %w", n.path, transfer.ErrNotFound)
	}
	return a, nil
}

// getattr answers Getattr for a node of type typ.
func (n *node) getattr(ctx context.Context, typ uint32, out *fuse.AttrOut) syscall.Errno {
	a, err := n.attr(ctx, typ)
	if err != nil {
		return n.fsys.toErrno("getattr", n.path, err)
	}
	n.fsys.fillAttr(&out.Attr, a)
	return 0
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
	a, ok := it.lookup(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	child := n.child(ctx, name, a)
	if child == nil {
		return nil, syscall.ENOENT
	}
	n.fsys.fillAttr(&out.Attr, a)
	return child, 0
}

// child returns the inode for entry a called name: the existing child when
// it has the same type, else a new one. Types other than directory, regular
// file and symlink give nil.
func (n *dirNode) child(ctx context.Context, name string, a transfer.Attr) *fs.Inode {
	typ := a.Mode & transfer.ModeTypeMask
	if ch := n.GetChild(name); ch != nil && ch.Mode() == typ {
		return ch
	}
	fsys, path := n.fsys, joinPath(n.path, name)
	var emb fs.InodeEmbedder
	switch typ {
	case transfer.ModeDir:
		emb = &dirNode{node: node{fsys: fsys, path: path}}
	case transfer.ModeRegular:
		emb = &fileNode{node: node{fsys: fsys, path: path}}
	case transfer.ModeSymlink:
		emb = &symlinkNode{node: node{fsys: fsys, path: path}}
	default:
		return nil
	}
	return n.NewInode(ctx, emb, fs.StableAttr{Mode: typ})
}

// Readdir lists the directory from its (cached) listing.
func (n *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	it, err := n.fsys.meta.list(ctx, n.path)
	if err != nil {
		return nil, n.fsys.toErrno("readdir", n.path, err)
	}
	entries := make([]fuse.DirEntry, 0, len(it.entries))
	for _, a := range it.entries {
		switch a.Mode & transfer.ModeTypeMask {
		case transfer.ModeDir, transfer.ModeRegular, transfer.ModeSymlink:
			entries = append(entries, fuse.DirEntry{Name: a.Name, Mode: a.Mode})
		}
	}
	return fs.NewListDirStream(entries), 0
}

// Getxattr serves Options.Xattrs on the root; other directories have none.
func (n *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.path != "" {
		return 0, syscall.ENODATA
	}
	v, ok := n.fsys.opts.Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the names of Options.Xattrs on the root.
func (n *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.path != "" {
		return 0, 0
	}
	names := make([]string, 0, len(n.fsys.opts.Xattrs))
	for k := range n.fsys.opts.Xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	var list []byte
	for _, k := range names {
		list = append(append(list, k...), 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// Getattr reports the file's attributes from its parent's listing.
func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.getattr(ctx, transfer.ModeRegular, out)
}

// Open pins the file's current manifest (fresh within AttrTimeout) in a new
// handle. Opening for writing fails with EROFS. The kernel keeps its page
// cache when the version is the one opened last time.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	m, err := n.fsys.meta.manifest(ctx, n.path)
	if err != nil {
		return nil, 0, n.fsys.toErrno("open", n.path, err)
	}
	var fuseFlags uint32
	n.mu.Lock()
	if n.opened && n.lastVersion == m.Version {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	n.lastVersion, n.opened = m.Version, true
	n.mu.Unlock()
	return newFileHandle(n.fsys, n.path, m), fuseFlags, 0
}

// Getxattr serves XattrCached and XattrSources (see xattr.go); other
// names give ENODATA.
func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, errno := n.fsys.fileXattr(ctx, n.path, attr)
	if errno != 0 {
		return 0, errno
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists XattrCached and XattrSources.
func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
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
	a, err := n.attr(ctx, transfer.ModeSymlink)
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
