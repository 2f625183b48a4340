package integration

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// treeDataBytes returns the total size of the regular files under root.
func treeDataBytes(t *testing.T, root string) int64 {
	t.Helper()
	var total int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			info, _ := d.Info()
			total += info.Size()
		}
		return nil
	})
	return total
}

// TestCopyOutOfMountAndRemount copies the test tree out of a real mount with
// cp -r, cp -rp and rsync -a, checks every copy byte for byte with modes and
// mtimes, then remounts on the same cache and checks that copying again
// fetches no file data at all.
func TestCopyOutOfMountAndRemount(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 100<<20)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144")
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, p.addr, ca, cache)
	out := t.TempDir()

	t.Run("cp -r", func(t *testing.T) {
		dst := filepath.Join(out, "cp")
		run(t, 5*time.Minute, "cp", "-r", m.dir, dst)
		compareTrees(t, root, dst, compareOptions{})
	})
	t.Run("cp -rp", func(t *testing.T) {
		dst := filepath.Join(out, "cp-p")
		run(t, 5*time.Minute, "cp", "-rp", m.dir, dst)
		compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	})
	t.Run("rsync -a", func(t *testing.T) {
		dst := filepath.Join(out, "rsync")
		run(t, 5*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
		compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	})
	// Every chunk was fetched exactly once over the three copies.
	st := m.status(t)
	if want := treeDataBytes(t, root); st.FS.BytesFetched != want {
		t.Errorf("bytes fetched over three copies: %d, want exactly the tree's %d", st.FS.BytesFetched, want)
	}
	m.unmount(t)

	m2 := startMount(t, p.addr, ca, cache)
	dst := filepath.Join(out, "again")
	run(t, 5*time.Minute, "rsync", "-a", m2.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	if st := m2.status(t); st.FS.BytesFetched != 0 || st.Transfer.DataBytes != 0 {
		t.Errorf("after remount on the same cache: fetched %d bytes (client counted %d), want 0",
			st.FS.BytesFetched, st.Transfer.DataBytes)
	}

	// An unmount from outside ends the daemon with status 0.
	run(t, 30*time.Second, "umount", m2.dir)
	if err := waitExit(t, m2.proc, 20*time.Second); err != nil {
		t.Fatalf("kwikfs mount after umount: %v\n%s", err, m2.Output())
	}
}

// TestMountIsReadOnly checks that every kind of write fails with EROFS.
func TestMountIsReadOnly(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	checks := map[string]func() error{
		"create":   func() error { return os.WriteFile(filepath.Join(m.dir, "new"), nil, 0o644) },
		"write":    func() error { f, err := os.OpenFile(filepath.Join(m.dir, "f"), os.O_WRONLY, 0); f.Close(); return err },
		"mkdir":    func() error { return os.Mkdir(filepath.Join(m.dir, "nd"), 0o755) },
		"remove":   func() error { return os.Remove(filepath.Join(m.dir, "f")) },
		"rename":   func() error { return os.Rename(filepath.Join(m.dir, "f"), filepath.Join(m.dir, "g")) },
		"chmod":    func() error { return os.Chmod(filepath.Join(m.dir, "f"), 0o600) },
		"symlink":  func() error { return os.Symlink("f", filepath.Join(m.dir, "l")) },
		"truncate": func() error { return os.Truncate(filepath.Join(m.dir, "f"), 0) },
	}
	for name, op := range checks {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if out, err := exec.Command("cat", filepath.Join(m.dir, "f")).Output(); err != nil || string(out) != "x" {
		t.Errorf("read after refused writes: %q, %v", out, err)
	}
}
