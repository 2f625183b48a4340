package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"golang.org/x/sys/unix"
)

// helperLink is where the tests put kwikfs for `mount -t fuse.kwikfs` to
// find: mount(8) runs fuse3's mount.fuse, which runs `kwikfs SOURCE
// MOUNTPOINT -o OPTIONS` through /bin/sh with no PATH, and the shell's
// default path starts with /usr/local/sbin (an installed
// /usr/local/bin/kwikfs comes after it and is left alone).
const helperLink = "/usr/local/sbin/kwikfs"

// useMountHelper makes `mount -t fuse.kwikfs` run the kwikfs the tests
// built (with -race), until the test ends.
func useMountHelper(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mount(8) of a FUSE file system needs root")
	}
	if _, err := os.Stat("/sbin/mount.fuse3"); err != nil {
		t.Fatal("/sbin/mount.fuse3 missing: run make deps (Debian package fuse3)")
	}
	if _, err := os.Lstat(helperLink); err == nil {
		// A link an interrupted run left behind, to a binary since
		// removed, is replaced; anything else is not the tests'.
		if _, err := os.Stat(helperLink); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s exists: remove it to run this test", helperLink)
		}
		os.Remove(helperLink)
	}
	if err := os.Symlink(bin("kwikfs"), helperLink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(helperLink) })
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct{ source, fstype string }

// mountsOn returns the mounts on dir, bottom first.
func mountsOn(t *testing.T, dir string) []mountEntry {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []mountEntry
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) > 4 && sep > 0 && sep+2 < len(f) && unescapeMountinfo(f[4]) == dir {
			out = append(out, mountEntry{source: f[sep+2], fstype: f[sep+1]})
		}
	}
	return out
}

// kwikfsProcs returns the running kwikfs processes whose command line
// names dir (zombies have none).
func kwikfsProcs(dir string) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kwikfs" && slices.Contains(args, dir) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits until no kwikfs process names dir.
func waitGone(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(kwikfsProcs(dir)) == 0 {
			return
		}
	}
	t.Fatalf("kwikfs processes %v still serve %s", kwikfsProcs(dir), dir)
}

// mountSetup is a primary exporting a tree, and a mount point and cache
// for `mount -t fuse.kwikfs`, cleaned up (unmounted, daemon killed) at
// the end of the test.
type mountSetup struct {
	root, certDir, mnt, cache string
	addr                      string // the primary's
}

func newMountSetup(t *testing.T, treeBytes int) *mountSetup {
	t.Helper()
	useMountHelper(t)
	base := t.TempDir()
	s := &mountSetup{root: filepath.Join(base, "tree"), mnt: filepath.Join(base, "mnt"), cache: filepath.Join(base, "cache")}
	makeTree(t, s.root, treeBytes)
	if err := os.Mkdir(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s.certDir = certs(t)
	s.addr = startPrimary(t, s.root, s.certDir).addr
	t.Cleanup(func() {
		for len(mountsOn(t, s.mnt)) > 0 {
			if err := unix.Unmount(s.mnt, unix.MNT_DETACH); err != nil {
				break
			}
		}
		for _, pid := range kwikfsProcs(s.mnt) {
			unix.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(s.cache, "kwikfs.log"))
			t.Logf("daemon log:\n%s", tail(log))
		}
	})
	return s
}

// options returns the -o options of a mount of s, and extra.
func (s *mountSetup) options(extra ...string) string {
	return strings.Join(append([]string{
		"ca=" + filepath.Join(s.certDir, certgen.CAFile),
		"cert=" + filepath.Join(s.certDir, certgen.ClientCertFile),
		"key=" + filepath.Join(s.certDir, certgen.ClientKeyFile),
		"cache=" + s.cache,
	}, extra...), ",")
}

// mountTool runs mount(8) or umount(8) with args and returns its combined
// output and exit code.
func mountTool(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	return "", 0
}

// checkMounted fails unless s.mnt holds exactly one kwikfs mount of the
// primary, served by one daemon in a session of its own (in the
// background), and returns the daemon's PID.
func (s *mountSetup) checkMounted(t *testing.T) int {
	t.Helper()
	if got, want := mountsOn(t, s.mnt), []mountEntry{{s.addr, "fuse.kwikfs"}}; !slices.Equal(got, want) {
		t.Fatalf("mounts on %s right after mount returned: %v, want %v", s.mnt, got, want)
	}
	pids := kwikfsProcs(s.mnt)
	if len(pids) != 1 {
		t.Fatalf("kwikfs processes serving %s: %v, want one daemon", s.mnt, pids)
	}
	if sid, err := unix.Getsid(pids[0]); err != nil || sid != pids[0] {
		t.Errorf("daemon %d: session %d (%v), want a session of its own", pids[0], sid, err)
	}
	return pids[0]
}

// checkUnmounted runs umount on s.mnt and checks that the daemon exits
// having logged the unmount, and that nothing is left mounted.
func (s *mountSetup) checkUnmounted(t *testing.T) {
	t.Helper()
	if out, code := mountTool(t, "umount", s.mnt); code != 0 {
		t.Fatalf("umount %s: exit %d\n%s", s.mnt, code, out)
	}
	waitGone(t, s.mnt)
	if got := mountsOn(t, s.mnt); len(got) != 0 {
		t.Fatalf("mounts on %s after umount: %v", s.mnt, got)
	}
	log, err := os.ReadFile(filepath.Join(s.cache, "kwikfs.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"msg=mounted ", `msg="unmounted from outside"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("daemon log lacks %q", want)
		}
	}
	for _, bad := range []string{"level=ERROR", "WARNING: DATA RACE", "kwikfs: "} {
		if strings.Contains(string(log), bad) {
			t.Errorf("daemon log holds %q", bad)
		}
	}
}

// TestMountCommand mounts with `mount -t fuse.kwikfs`, which must return
// only once the mount is up, with the daemon in the background; copies the
// tree out of it; and unmounts with umount, which must end the daemon.
func TestMountCommand(t *testing.T) {
	s := newMountSetup(t, 16<<20)
	out, code := mountTool(t, "mount", "-t", "fuse.kwikfs", s.addr, s.mnt, "-o", s.options())
	if code != 0 || out != "" {
		t.Fatalf("mount: exit %d, output %q; want 0 and nothing", code, out)
	}
	s.checkMounted(t)
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 3*time.Minute, "cp", "-r", s.mnt, dst)
	compareTrees(t, s.root, dst, compareOptions{})
	s.checkUnmounted(t)
}

// TestMountLogReopensOnHangup: the daemon of a mount(8) mount reopens its
// log at SIGHUP, as logrotate's postrotate asks of it, and goes on
// serving: the log moved away holds what came before, and the file anew
// at the log's path what came after, the unmount included.
func TestMountLogReopensOnHangup(t *testing.T) {
	s := newMountSetup(t, 4<<20)
	if out, code := mountTool(t, "mount", "-t", "fuse.kwikfs", s.addr, s.mnt, "-o", s.options()); code != 0 || out != "" {
		t.Fatalf("mount: exit %d, output %q; want 0 and nothing", code, out)
	}
	pid := s.checkMounted(t)
	logFile := filepath.Join(s.cache, "kwikfs.log")
	rotated := logFile + ".1"
	if err := os.Rename(logFile, rotated); err != nil {
		t.Fatal(err)
	}
	// The postrotate command of the logrotate example, for this mount.
	example, err := os.ReadFile(filepath.Join("..", "dist", "examples", "logrotate"))
	if err != nil {
		t.Fatal(err)
	}
	var postrotate string
	for line := range strings.Lines(string(example)) {
		if strings.Contains(line, "pkill -HUP") {
			postrotate = strings.ReplaceAll(strings.TrimSpace(line), "/mnt/data", s.mnt)
		}
	}
	if postrotate == "" {
		t.Fatalf("no pkill -HUP in dist/examples/logrotate:\n%s", example)
	}
	run(t, time.Minute, "sh", "-c", postrotate)
	if got := kwikfsProcs(s.mnt); !slices.Equal(got, []int{pid}) {
		t.Fatalf("kwikfs processes serving %s after SIGHUP: %v, want %d", s.mnt, got, pid)
	}
	const reopened = `msg="log reopened"`
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(logFile); strings.Contains(string(b), reopened) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in a new %s 10 s after SIGHUP", reopened, logFile)
		}
	}
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 3*time.Minute, "cp", "-r", s.mnt, dst)
	compareTrees(t, s.root, dst, compareOptions{})
	if out, code := mountTool(t, "umount", s.mnt); code != 0 {
		t.Fatalf("umount %s: exit %d\n%s", s.mnt, code, out)
	}
	waitGone(t, s.mnt)
	old, err := os.ReadFile(rotated)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(old), "msg=mounted ") || strings.Contains(string(old), reopened) {
		t.Errorf("the rotated log holds %q; want the mount's start and not the reopening", old)
	}
	if !strings.Contains(string(cur), `msg="unmounted from outside"`) || strings.Contains(string(cur), "msg=mounted ") {
		t.Errorf("the new log holds %q; want the unmount and not the mount's start", cur)
	}
}

// TestForegroundMountEndsAtHangup: a mount in the foreground, logging to
// its terminal, ends at the terminal's hangup as at SIGINT: exit 0 and
// nothing left mounted.
func TestForegroundMountEndsAtHangup(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeSmallTree(t, root)
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	m.unmountBy(t, syscall.SIGHUP)
}

// TestMountCommandWaitsForTheMount: mount(8) returns only once the mount
// is up, also when the daemon takes seconds to get there: here its
// primary never answers, and the daemon mounts (serving its cache) once
// its first contact times out.
func TestMountCommandWaitsForTheMount(t *testing.T) {
	s := newMountSetup(t, 1<<10)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s.addr = silent.LocalAddr().String()
	begin := time.Now()
	out, code := mountTool(t, "mount", "-t", "fuse.kwikfs", s.addr, s.mnt, "-o", s.options())
	if code != 0 || out != "" {
		t.Fatalf("mount: exit %d, output %q; want 0 and nothing", code, out)
	}
	s.checkMounted(t)
	t.Logf("mount returned after %v", time.Since(begin).Round(time.Millisecond))
	s.checkUnmounted(t)
}

// TestMountFstab mounts an fstab line with `mount MOUNTPOINT` (from an
// alternative fstab), with the options fstab lines carry for mount(8) and
// systemd; `mount -a` then leaves it be: the noauto line, and an auto line
// for the same mount, which is mounted already (its source is the
// primary's address, as the line names it).
func TestMountFstab(t *testing.T) {
	s := newMountSetup(t, 4<<20)
	dir := t.TempDir()
	line := func(extra string) string {
		return fmt.Sprintf("%s %s fuse.kwikfs %s 0 0\n", s.addr, s.mnt,
			s.options(extra, "_netdev", "nofail", "x-systemd.automount", "x-systemd.idle-timeout=10min", "defaults", "nodev", "nosuid", "noatime"))
	}
	fstab, fstabAuto := filepath.Join(dir, "fstab"), filepath.Join(dir, "fstab.auto")
	if err := os.WriteFile(fstab, []byte("# kwikfs\n"+line("noauto")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fstabAuto, []byte(line("auto")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := mountTool(t, "mount", "--fstab", fstab, s.mnt); code != 0 || out != "" {
		t.Fatalf("mount --fstab %s %s: exit %d, output %q; want 0 and nothing", fstab, s.mnt, code, out)
	}
	pid := s.checkMounted(t)
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 3*time.Minute, "cp", "-r", s.mnt, dst)
	compareTrees(t, s.root, dst, compareOptions{})

	for _, f := range []string{fstab, fstabAuto} {
		if out, code := mountTool(t, "mount", "-a", "--fstab", f); code != 0 || out != "" {
			t.Fatalf("mount -a --fstab %s: exit %d, output %q; want 0 and nothing", f, code, out)
		}
		if got := s.checkMounted(t); got != pid {
			t.Fatalf("mount -a --fstab %s: daemon %d, want still %d", f, got, pid)
		}
	}
	s.checkUnmounted(t)
}

// TestMountCommandFails: a mount that cannot be made makes mount(8) exit
// non-zero with the daemon's error, and leaves nothing mounted and no
// daemon behind.
func TestMountCommandFails(t *testing.T) {
	s := newMountSetup(t, 1<<20)
	for _, tc := range []struct {
		name, options, out string
		code               int
	}{
		{"bad CA path", strings.Replace(s.options(), "ca="+filepath.Join(s.certDir, certgen.CAFile), "ca=/nonexistent/ca.pem", 1),
			"kwikfs: kwik: read CA file: open /nonexistent/ca.pem: no such file or directory\n", 1},
		{"unknown option", s.options("bogus=1"), "kwikfs: usage: unknown option \"bogus\"\n", 2},
		{"option without its value", s.options("fetch-timeout"), "kwikfs: usage: option \"fetch-timeout\" needs a value (fetch-timeout=...)\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := mountTool(t, "mount", "-t", "fuse.kwikfs", s.addr, s.mnt, "-o", tc.options)
			if code != tc.code || out != tc.out {
				t.Errorf("mount: exit %d, output %q; want %d, %q", code, out, tc.code, tc.out)
			}
			if got := mountsOn(t, s.mnt); len(got) != 0 {
				t.Errorf("mounted: %v", got)
			}
			if pids := kwikfsProcs(s.mnt); len(pids) != 0 {
				t.Errorf("kwikfs processes left: %v", pids)
			}
		})
	}
}

// TestServersNotifySystemd: kwik-primary and kwik-secondary tell the
// service manager READY=1 once they listen and STOPPING=1 once told to
// stop (sd_notify over the datagram socket NOTIFY_SOCKET names), as units
// of Type=notify need.
func TestServersNotifySystemd(t *testing.T) {
	root := t.TempDir()
	certDir := certs(t)
	for _, binary := range []string{"kwik-primary", "kwik-secondary"} {
		t.Run(binary, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "notify")
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			t.Setenv("NOTIFY_SOCKET", sock)
			read := func() string {
				t.Helper()
				conn.SetReadDeadline(time.Now().Add(20 * time.Second))
				buf := make([]byte, 512)
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("read notification: %v", err)
				}
				return string(buf[:n])
			}
			srv := startServer(t, binary, root, certDir) // returns once it says it listens
			if got := read(); got != "READY=1" {
				t.Fatalf("first notification %q, want READY=1", got)
			}
			if err := srv.stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
				t.Fatalf("%s exited with %v after SIGTERM", binary, err)
			}
			if got := read(); got != "STOPPING=1" {
				t.Fatalf("notification after SIGTERM %q, want STOPPING=1", got)
			}
		})
	}
}

// TestInstallVerifyUnits installs with `make install PREFIX=DIR` and runs
// `systemd-analyze verify` on the units it installed and the example
// .mount and .automount units: it must print nothing (it warns of unknown
// directives, bad values and an ExecStart that is not an executable).
// Then `make uninstall` must remove every file.
func TestInstallVerifyUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		run(t, 10*time.Minute, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd")
		if analyze, err = exec.LookPath("systemd-analyze"); err != nil {
			t.Fatal(err)
		}
	}
	prefix := t.TempDir()
	build := filepath.Join(t.TempDir(), "build")
	run(t, 5*time.Minute, "make", "-C", "..", "--no-print-directory", "install", "PREFIX="+prefix, "BIN="+build)

	unitDir := filepath.Join(prefix, "lib/systemd/system")
	examples := filepath.Join(prefix, "share/doc/kwikfs/examples")
	for _, name := range []string{"kwikfs", "kwik-primary", "kwik-secondary"} {
		if st, err := os.Stat(filepath.Join(prefix, "bin", name)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("bin/%s: %v, %v; want an executable", name, st, err)
		}
	}
	units := []string{
		filepath.Join(unitDir, "kwik-primary@.service"),
		filepath.Join(unitDir, "kwik-secondary@.service"),
		filepath.Join(examples, "mnt-data.mount"),
		filepath.Join(examples, "mnt-data.automount"),
	}
	for _, u := range units[:2] {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		binary := strings.TrimSuffix(filepath.Base(u), "@.service")
		if want := "\nExecStart=" + filepath.Join(prefix, "bin", binary) + " --config "; !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %q", u, want)
		}
	}
	for _, dir := range []string{unitDir, examples} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if data, _ := os.ReadFile(p); strings.Contains(string(data), "@BINDIR@") || strings.Contains(string(data), "@DOCDIR@") {
					t.Errorf("%s: a placeholder is left", p)
				}
			}
			return nil
		})
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	run(t, time.Minute, "make", "-C", "..", "--no-print-directory", "uninstall", "PREFIX="+prefix)
	filepath.WalkDir(prefix, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("%s left after make uninstall", p)
		}
		return nil
	})
}
