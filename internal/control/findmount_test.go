package control

import "testing"

// TestMountRel: paths inside a mount are made relative to its root.
func TestMountRel(t *testing.T) {
	m := Mount{Root: "/mnt/k"}
	for in, want := range map[string]string{"/mnt/k": "", "/mnt/k/": "", "/mnt/k/a/b": "a/b", "/mnt/k/a/../c": "c"} {
		if got, err := m.Rel(in); err != nil || got != want {
			t.Errorf("Rel(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/mnt", "/mnt/kk", "/mnt/k/.."} {
		if got, err := m.Rel(in); err == nil {
			t.Errorf("Rel(%q) = %q, want an error", in, got)
		}
	}
}

// TestFindMountPlainDirectory: a directory outside any kwikfs mount has no
// daemon.
func TestFindMountPlainDirectory(t *testing.T) {
	dir := t.TempDir()
	if m, err := FindMount(dir); err == nil {
		t.Errorf("FindMount(%s) = %+v, want an error", dir, m)
	} else if want := dir + " is not inside a kwikfs mount"; err.Error() != want {
		t.Errorf("FindMount(%s): %q, want %q", dir, err, want)
	}
}

// TestMountOf picks the mountinfo entry of a device that holds a path:
// the longest mount point among bind mounts, escapes undone, the owner
// from user_id=.
func TestMountOf(t *testing.T) {
	info := []byte(`22 1 0:21 / /proc rw,nosuid - proc proc rw
40 1 0:52 / /mnt/kwik\040data ro,nosuid,nodev shared:1 - fuse.kwikfs kwikfs rw,user_id=1000,group_id=1000
41 1 0:52 /sub /srv/bind ro - fuse.kwikfs kwikfs rw,user_id=1000,group_id=1000
42 40 0:53 / /mnt/kwik\040data/inner rw - fuse.sshfs host:/ rw,user_id=0,group_id=0
`)
	for _, c := range []struct {
		path       string
		dev        [2]uint32
		mountpoint string
		fsType     string
		owner      int
		ok         bool
	}{
		{"/mnt/kwik data/a/b", [2]uint32{0, 52}, "/mnt/kwik data", "fuse.kwikfs", 1000, true},
		{"/mnt/kwik data", [2]uint32{0, 52}, "/mnt/kwik data", "fuse.kwikfs", 1000, true},
		{"/srv/bind/x", [2]uint32{0, 52}, "/srv/bind", "fuse.kwikfs", 1000, true},
		{"/mnt/kwik data/inner/x", [2]uint32{0, 53}, "/mnt/kwik data/inner", "fuse.sshfs", 0, true},
		{"/mnt/kwik datax/a", [2]uint32{0, 52}, "", "", 0, false},
		{"/proc/1", [2]uint32{0, 52}, "", "", 0, false},
	} {
		e, ok := mountOf(info, c.path, c.dev[0], c.dev[1])
		if ok != c.ok || ok && (e.mountpoint != c.mountpoint || e.fsType != c.fsType || e.owner != c.owner) {
			t.Errorf("mountOf(%q, %d:%d) = %+v, %v; want %q %q owner %d, %v",
				c.path, c.dev[0], c.dev[1], e, ok, c.mountpoint, c.fsType, c.owner, c.ok)
		}
	}
}
