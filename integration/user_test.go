package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"golang.org/x/sys/unix"
)

// nobody is the unprivileged user the test mounts as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}

// TestMountAsNormalUser mounts as an unprivileged user, which takes go-fuse's
// fusermount3 path instead of a direct mount(2), reads through the mount as
// that user, and stops the daemon with SIGINT.
func TestMountAsNormalUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to an unprivileged user")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 missing: run make deps (Debian package fuse3)")
	}
	// fusermount3 opens /dev/fuse as the calling user. Debian makes it
	// world-accessible (0666); containers often leave it 0600. Grant access
	// for the test and put the mode back afterwards.
	st, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o006 != 0o006 {
		if err := os.Chmod("/dev/fuse", st.Mode().Perm()|0o006); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod("/dev/fuse", st.Mode().Perm()) })
	}

	base, err := os.MkdirTemp("", "kwikfs-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(base, "tree")
	want := "read by an unprivileged user\n"
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(base, "certs")
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(certDir); err != nil {
		t.Fatal(err)
	}
	p := startPrimary(t, root, certDir)

	mnt, cache := filepath.Join(base, "mnt"), filepath.Join(base, "cache")
	for _, d := range []string{mnt, cache} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(nobody.Uid), int(nobody.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if isMounted(mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	// The client key is private to the user who mounts.
	if err := os.Chown(filepath.Join(certDir, certgen.ClientKeyFile), int(nobody.Uid), int(nobody.Gid)); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", "--primary", p.addr, "--ca", filepath.Join(certDir, certgen.CAFile)}, clientCertArgs(certDir)...)
	m := startAs(t, nobody, "kwikfs", append(args, "--cache", cache, "--log-level", "warn", mnt)...)
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 20s:\n%s", m.Output())
		}
		select {
		case <-m.done:
			t.Fatalf("kwikfs mount exited: %v\n%s", m.err, m.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cat := exec.Command("cat", filepath.Join(mnt, "hello.txt"))
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	got, err := cat.CombinedOutput()
	if err != nil || string(got) != want {
		t.Fatalf("cat as nobody: %q, %v; want %q", got, err, want)
	}
	if err := m.stop(t, syscall.SIGINT, 20*time.Second); err != nil {
		t.Fatalf("kwikfs mount exited with %v after SIGINT:\n%s", err, m.Output())
	}
	if isMounted(mnt) {
		t.Fatal("still mounted after the daemon exited")
	}
}
