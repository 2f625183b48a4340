package fusefs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// testChunk is the chunk size of the test trees: small, so that files of
// many chunks stay small.
const testChunk = 64 << 10

// fakeClock is a settable clock for FS.now.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The real store is the one the daemon uses.
var _ Store = (*chunkstore.Store)(nil)

// openStore opens a real chunk store in dir, closed at cleanup.
func openStore(t testing.TB, dir string) *chunkstore.Store {
	t.Helper()
	s, err := chunkstore.Open(dir, &chunkstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testOptions are Options for tests: metadata trusted for a long time (the
// fake clock decides), quick failure when the remote is down.
func testOptions() *Options {
	return &Options{
		AttrTimeout:  time.Minute,
		EntryTimeout: time.Minute,
		FetchTimeout: 5 * time.Second,
	}
}

// mounted is a mounted FS, unmounted at cleanup even when the test fails.
type mounted struct {
	t      testing.TB
	fsys   *FS
	dir    string
	server *fuse.Server
	once   sync.Once
}

// mountFS mounts a new FS over r and store in a temporary directory. setup,
// if not nil, runs before mounting.
func mountFS(t testing.TB, r Remote, store Store, opts *Options, setup func(*FS)) *mounted {
	t.Helper()
	fsys := New(r, store, opts)
	if setup != nil {
		setup(fsys)
	}
	dir := t.TempDir()
	server, err := fsys.Mount(dir, false)
	if err != nil {
		fsys.Close()
		t.Fatalf("mount: %v", err)
	}
	m := &mounted{t: t, fsys: fsys, dir: dir, server: server}
	t.Cleanup(m.unmount)
	return m
}

// unmount unmounts (lazily if the mount is busy) and closes the FS; it may
// be called more than once.
func (m *mounted) unmount() {
	m.once.Do(func() {
		if err := m.server.Unmount(); err != nil {
			m.t.Logf("unmount %s: %v; detaching", m.dir, err)
			if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
				m.t.Errorf("detach %s: %v", m.dir, err)
			}
		}
		m.fsys.Close()
	})
}

func (m *mounted) path(p string) string { return filepath.Join(m.dir, p) }

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// buildTree fills r with the reference tree and returns its file contents.
func buildTree(r *remotetest.Remote) map[string][]byte {
	files := map[string][]byte{
		"empty":                          {},
		"one":                            {'x'},
		"chunk-minus-one":                remotetest.Content("cm1", testChunk-1),
		"chunk":                          remotetest.Content("c", testChunk),
		"chunk-plus-one":                 remotetest.Content("cp1", testChunk+1),
		"big":                            remotetest.Content("big", 5*testChunk+123),
		"dir a/sub dir/nested file.txt":  []byte("nested\n"),
		"dir a/ünïcødé 文件":               remotetest.Content("uni", 3000),
		"dir a/sub dir/deeper/zeros.bin": make([]byte, 3*testChunk),
	}
	mtime := int64(1_700_000_000_000_000_000)
	for p, data := range files {
		mtime += 1_234_567_891
		r.File(p, 0o644, mtime, data)
	}
	r.File("secret", 0o600, 1_690_000_000_987_654_321, []byte("top secret"))
	files["secret"] = []byte("top secret")
	r.Mkdir("dir a/empty dir", 0o750)
	r.Symlink("link", "dir a/sub dir/nested file.txt", 1_680_000_000_000_000_001)
	return files
}

// checkTree compares the tree under root with r: names, types, modes,
// sizes, mtimes, owners, symlink targets and file contents.
func checkTree(t *testing.T, r *remotetest.Remote, root string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		seen[rel] = true
		want := r.Entry(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode != want.Attr.Mode {
			t.Errorf("%q: mode %o, want %o", rel, st.Mode, want.Attr.Mode)
		}
		if st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
			t.Errorf("%q: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		if got := st.Mtim.Sec*1e9 + st.Mtim.Nsec; got != want.Attr.MtimeNs {
			t.Errorf("%q: mtime %d, want %d", rel, got, want.Attr.MtimeNs)
		}
		switch {
		case want.Attr.IsRegular():
			if st.Size != want.Attr.Size {
				t.Errorf("%q: size %d, want %d", rel, st.Size, want.Attr.Size)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if sha(data) != sha(want.Data) {
				t.Errorf("%q: content differs (%d bytes, want %d)", rel, len(data), len(want.Data))
			}
		case want.Attr.IsSymlink():
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if target != want.Attr.Target {
				t.Errorf("%q: target %q, want %q", rel, target, want.Attr.Target)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	for _, p := range r.Names() {
		if !seen[p] {
			t.Errorf("%q missing from the mount", p)
		}
	}
}

func TestTreeReadsBackIdentical(t *testing.T) {
	r := remotetest.New(testChunk)
	buildTree(r)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	checkTree(t, r, m.dir)
	// A second walk is served from memory and the kernel: no new fetch.
	fetched := m.fsys.Stats().ChunksFetched
	checkTree(t, r, m.dir)
	if got := m.fsys.Stats().ChunksFetched; got != fetched {
		t.Errorf("second walk fetched %d more chunks", got-fetched)
	}
	// Distinct chunks are fetched once each; the zero file has one.
	if got, want := m.fsys.Stats().ChunksFetched, r.ChunksSent.Load(); got != want {
		t.Errorf("Stats.ChunksFetched = %d, remote sent %d", got, want)
	}
}

func TestCopyRecursiveIsIdentical(t *testing.T) {
	r := remotetest.New(testChunk)
	files := buildTree(r)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := runCommand("cp", "-r", m.dir+"/.", dst); err != nil {
		t.Fatalf("cp -r: %v\n%s", err, out)
	}
	for p, data := range files {
		got, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil {
			t.Errorf("copy of %q: %v", p, err)
			continue
		}
		if sha(got) != sha(data) {
			t.Errorf("copy of %q differs", p)
		}
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "dir a/sub dir/nested file.txt" {
		t.Errorf("copied link: %q, %v", target, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "dir a/empty dir")); err != nil || !fi.IsDir() {
		t.Errorf("copied empty dir: %v", err)
	}
}

func TestReaddirOfLargeDirectoryIsOneList(t *testing.T) {
	r := remotetest.New(testChunk)
	for i := range 1000 {
		r.File(filepath.Join("many", "file "+string(rune('a'+i%26))+"-"+strconv.Itoa(i)), 0o644, int64(i)*1e9, []byte(strconv.Itoa(i)))
	}
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	entries, err := os.ReadDir(m.path("many"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1000 {
		t.Fatalf("%d entries, want 1000", len(entries))
	}
	// ls -l: lstat every entry.
	for _, e := range entries {
		fi, err := os.Lstat(m.path(filepath.Join("many", e.Name())))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 || !fi.Mode().IsRegular() {
			t.Fatalf("%s: mode %v", e.Name(), fi.Mode())
		}
	}
	if got := r.ListsOf("many"); got != 1 {
		t.Errorf("List(many) called %d times, want 1", got)
	}
	if got := r.Manifests.Load() + r.Readlinks.Load() + r.ReadCalls.Load(); got != 0 {
		t.Errorf("%d other remote calls, want 0", got)
	}
}

func TestListingRefreshedAfterAttrTimeout(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/a", 0o644, 1, []byte("a"))
	clk := newFakeClock()
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), func(f *FS) { f.now = clk.Now })
	names := func() []string {
		t.Helper()
		es, err := os.ReadDir(m.path("d"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	if got := names(); len(got) != 1 {
		t.Fatalf("names %q", got)
	}
	r.File("d/b", 0o644, 2, []byte("b"))
	if got := names(); len(got) != 1 || r.ListsOf("d") != 1 {
		t.Fatalf("within AttrTimeout: names %q after %d lists, want the cached one", got, r.ListsOf("d"))
	}
	clk.Advance(time.Minute)
	if got := names(); len(got) != 2 || r.ListsOf("d") != 2 {
		t.Fatalf("after AttrTimeout: names %q after %d lists, want a new listing", got, r.ListsOf("d"))
	}
}

// TestMissingNameAppearsWithTheListing: the kernel keeps a name's absence
// only for what is left of the cached listing's AttrTimeout, not for a
// whole EntryTimeout more, so that a file added on the server shows once
// the listing is asked for again.
func TestMissingNameAppearsWithTheListing(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/a", 0o644, 1, []byte("a"))
	clk := newFakeClock()
	opts := testOptions() // AttrTimeout and EntryTimeout: a minute
	m := mountFS(t, r, openStore(t, t.TempDir()), opts, func(f *FS) { f.now = clk.Now })
	if _, err := os.ReadDir(m.path("d")); err != nil {
		t.Fatal(err)
	}
	// The listing has 50 ms of trust left when b is looked up, missing.
	clk.Advance(opts.AttrTimeout - 50*time.Millisecond)
	if _, err := os.Stat(m.path("d/b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing name: %v, want ErrNotExist", err)
	}
	r.File("d/b", 0o644, 2, []byte("b"))
	clk.Advance(time.Minute)
	// The kernel asks again within about 50 ms (real time), and the new
	// listing has b; before, it kept the absence for a minute.
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, err := os.Stat(m.path("d/b"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("d/b still missing 2 s after the listing expired (%v); %d lists of d", err, r.ListsOf("d"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWritesFailReadOnly(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("f", 0o644, 1, []byte("data"))
	r.Mkdir("d", 0o755)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	checks := map[string]func() error{
		"create":   func() error { return os.WriteFile(m.path("new"), []byte("x"), 0o644) },
		"write":    func() error { return os.WriteFile(m.path("f"), []byte("x"), 0o644) },
		"append":   func() error { f, err := os.OpenFile(m.path("f"), os.O_WRONLY|os.O_APPEND, 0); closeIf(f); return err },
		"mkdir":    func() error { return os.Mkdir(m.path("d/sub"), 0o755) },
		"remove":   func() error { return os.Remove(m.path("f")) },
		"rmdir":    func() error { return os.Remove(m.path("d")) },
		"rename":   func() error { return os.Rename(m.path("f"), m.path("g")) },
		"chmod":    func() error { return os.Chmod(m.path("f"), 0o600) },
		"symlink":  func() error { return os.Symlink("f", m.path("l")) },
		"truncate": func() error { return os.Truncate(m.path("f"), 0) },
		"setxattr": func() error { return syscall.Setxattr(m.path("f"), "user.x", []byte("y"), 0) },
	}
	for name, fn := range checks {
		if err := fn(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if got, err := os.ReadFile(m.path("f")); err != nil || string(got) != "data" {
		t.Errorf("after the writes: %q, %v", got, err)
	}
}

// TestControlIoctl asks the root for Options.ControlSocket with
// ControlIoctl, and checks that other directories and other requests get
// ENOTTY.
func TestControlIoctl(t *testing.T) {
	r := remotetest.New(testChunk)
	r.Mkdir("sub", 0o755)
	store := openStore(t, t.TempDir())
	opts := testOptions()
	opts.ControlSocket = "/run/kwikfs/ctl.sock"
	m := mountFS(t, r, store, opts, nil)
	ask := func(dir string, cmd uintptr) (string, error) {
		t.Helper()
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var buf [ControlPathMax]byte
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), cmd, uintptr(unsafe.Pointer(&buf))); errno != 0 {
			return "", errno
		}
		return string(buf[:bytes.IndexByte(buf[:], 0)]), nil
	}
	if got, err := ask(m.dir, ControlIoctl); err != nil || got != "/run/kwikfs/ctl.sock" {
		t.Errorf("ControlIoctl on the root: %q, %v", got, err)
	}
	if _, err := ask(m.path("sub"), ControlIoctl); !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("ControlIoctl on a subdirectory: %v, want ENOTTY", err)
	}
	if _, err := ask(m.dir, ControlIoctl+1); !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("another ioctl on the root: %v, want ENOTTY", err)
	}
}

// TestNoXattrsByDefault checks that without Options.Xattrs the mount
// answers no extended attribute, and that the kernel then answers for it:
// EOPNOTSUPP, or for a POSIX ACL no ACL (ENODATA), for files and
// directories alike.
func TestNoXattrsByDefault(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/f", 0o644, 1, []byte("x"))
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	buf := make([]byte, 256)
	for _, p := range []string{m.dir, m.path("d"), m.path("d/f")} {
		for attr, want := range map[string]error{
			XattrCached:               syscall.EOPNOTSUPP,
			"security.selinux":        syscall.EOPNOTSUPP,
			"system.posix_acl_access": syscall.ENODATA,
		} {
			if _, err := syscall.Getxattr(p, attr, buf); !errors.Is(err, want) {
				t.Errorf("getxattr(%s, %s): %v, want %v", p, attr, err, want)
			}
		}
		if _, err := syscall.Listxattr(p, buf); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Errorf("listxattr(%s): %v, want EOPNOTSUPP", p, err)
		}
	}
}

func TestMissingPathIsENOENT(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("d/f", 0o644, 1, []byte("x"))
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	for _, p := range []string{"nope", "d/nope", "d/f/below"} {
		if _, err := os.Stat(m.path(p)); !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
}

func TestMountIsReadOnlyWithLargeReads(t *testing.T) {
	r := remotetest.New(testChunk)
	store := openStore(t, t.TempDir())
	m := mountFS(t, r, store, testOptions(), nil)
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Namelen != 255 || st.Flags&0x1 /* ST_RDONLY */ == 0 {
		t.Errorf("statfs: namelen %d, flags %#x; want 255 and read-only", st.Namelen, st.Flags)
	}
	dev, err := mountDevice(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := os.ReadFile("/sys/class/bdi/" + dev + "/read_ahead_kb")
	if err != nil || strings.TrimSpace(string(ra)) != "1024" {
		t.Errorf("kernel read-ahead: %q, %v; want 1024 KiB", ra, err)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == m.dir {
			found = true
			if f[0] != "kwikfs" || f[2] != "fuse.kwikfs" || !strings.Contains(","+f[3]+",", ",ro,") || !strings.Contains(f[3], "max_read=1048576") {
				t.Errorf("mount entry %q", line)
			}
		}
	}
	if !found {
		t.Errorf("%s not in /proc/self/mounts", m.dir)
	}
}

// TestMountReadAheadOffKeepsKernelDefault: with read-ahead disabled, the
// mount's kernel read-ahead stays at the kernel's default for FUSE (128
// KiB) instead of being raised to a chunk.
func TestMountReadAheadOffKeepsKernelDefault(t *testing.T) {
	opts := testOptions()
	opts.ReadAheadMax = -1
	m := mountFS(t, remotetest.New(testChunk), openStore(t, t.TempDir()), opts, nil)
	dev, err := mountDevice(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	ra, err := os.ReadFile("/sys/class/bdi/" + dev + "/read_ahead_kb")
	if err != nil || strings.TrimSpace(string(ra)) != "128" {
		t.Errorf("kernel read-ahead: %q, %v; want the default 128 KiB", ra, err)
	}
}

// runCommand runs a program with no file of the mount open (see go-fuse's
// notes on fork deadlocks) and returns its combined output.
func runCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func closeIf(f *os.File) {
	if f != nil {
		f.Close()
	}
}

// readAll reads a whole file through the mount.
func readAll(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return data
}

// TestMountSourceAndNoExec: Options.Source is the mount's source in the
// mount table, and NoExec mounts with noexec: an executable file of the
// tree cannot be run.
func TestMountSourceAndNoExec(t *testing.T) {
	r := remotetest.New(testChunk)
	r.File("run.sh", 0o755, 1, []byte("#!/bin/sh\nexit 0\n"))
	opts := testOptions()
	opts.Source, opts.NoExec = "primary.example.net:4433", true
	m := mountFS(t, r, openStore(t, t.TempDir()), opts, nil)
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var entry []string
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == m.dir {
			entry = f
		}
	}
	if len(entry) < 4 || entry[0] != "primary.example.net:4433" || entry[2] != "fuse.kwikfs" || !strings.Contains(","+entry[3]+",", ",noexec,") {
		t.Fatalf("mount entry %q, want source primary.example.net:4433 and noexec", entry)
	}
	if err := exec.Command(m.path("run.sh")).Run(); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("running a file of a noexec mount: %v, want EACCES", err)
	}
}
