package fusefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestToErrno(t *testing.T) {
	f := New(remotetest.New(testChunk), nil, nil)
	defer f.Close()
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("list a: %w", transfer.ErrNotFound), syscall.ENOENT},
		{fmt.Errorf("list a: %w", transfer.ErrNotDir), syscall.ENOTDIR},
		{fmt.Errorf("read: %w", transfer.ErrPermission), syscall.EACCES},
		{fmt.Errorf("read: %w", transfer.ErrOutsideRoot), syscall.EACCES},
		{fmt.Errorf("chunk 3: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("chunk 3: %w", transfer.ErrUnavailable), syscall.EIO},
		{fmt.Errorf("chunk 3: %w", transfer.ErrCorrupt), syscall.EIO},
		{errFetchTimeout, syscall.EIO},
		{ErrClosed, syscall.EIO},
		{errors.New("anything"), syscall.EIO},
	} {
		if got := f.toErrno("op", "p", tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	c := newLRU[string](10, func(b []byte) int64 { return int64(len(b)) })
	c.Add("a", make([]byte, 4))
	c.Add("b", make([]byte, 4))
	if _, ok := c.Get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.Add("c", make([]byte, 4)) // 12 > 10: evicts b
	if _, ok := c.Get("b"); ok {
		t.Error("b not evicted")
	}
	for _, k := range []string{"a", "c"} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("%s evicted", k)
		}
	}
	if used, n := c.Used(); used != 8 || n != 2 {
		t.Errorf("Used = %d, %d; want 8, 2", used, n)
	}
	c.Add("a", make([]byte, 1)) // replace
	if used, n := c.Used(); used != 5 || n != 2 {
		t.Errorf("after replace: Used = %d, %d; want 5, 2", used, n)
	}
	c.Add("huge", make([]byte, 11)) // larger than the bound: not kept
	if _, ok := c.Get("huge"); ok {
		t.Error("value over the bound kept")
	}
	c.Remove("c")
	if used, n := c.Used(); used != 1 || n != 1 {
		t.Errorf("after remove: Used = %d, %d; want 1, 1", used, n)
	}
}

func TestSplitJoinPath(t *testing.T) {
	for _, tc := range []struct{ path, dir, name string }{
		{"a", "", "a"},
		{"a/b", "a", "b"},
		{"a/b c/ü", "a/b c", "ü"},
	} {
		dir, name := splitPath(tc.path)
		if dir != tc.dir || name != tc.name {
			t.Errorf("splitPath(%q) = %q, %q", tc.path, dir, name)
		}
		if got := joinPath(dir, name); got != tc.path {
			t.Errorf("joinPath(%q, %q) = %q", dir, name, got)
		}
	}
}

func TestMetaKeyBounded(t *testing.T) {
	long := string(make([]byte, 10000))
	if k := metaKey(kindList, long); len(k) > 100 {
		t.Errorf("key of a long path has %d bytes", len(k))
	}
	if metaKey(kindList, "a") == metaKey(kindManifest, "a") || metaKey(kindList, "") == metaKey(kindList, "#") {
		t.Error("meta keys collide")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/plain":               "/mnt/plain",
		`/mnt/with\040space`:       "/mnt/with space",
		`/mnt/tab\011nl\012bs\134`: "/mnt/tab\tnl\nbs\\",
		`/mnt/bad\04`:              `/mnt/bad\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
