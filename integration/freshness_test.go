package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/certgen"
)

// freshAttrTimeout is the --attr-timeout of the freshness tests, and
// freshMargin what a change may take beyond it to show through the mount
// (a round trip to the primary, a manifest, a busy machine).
const (
	freshAttrTimeout = time.Second
	freshMargin      = 2 * time.Second
)

// randomBytes returns n pseudo-random bytes drawn from seed.
func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n:n]
}

// replaceFile replaces the file at path on the server's side the way rsync
// or an editor does: a new file with data and mtime, renamed over the old
// one. It is written outside the exported tree first (staging), so that no
// listing ever shows it under another name.
func replaceFile(t *testing.T, staging, path string, data []byte, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(staging, filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// freshSetup writes files (name to content, with mtime base) under a new
// root, starts a primary (1 MiB chunks, the default) and a mount with
// --attr-timeout freshAttrTimeout plus extra flags, and returns the root,
// a staging directory beside it and the mount.
func freshSetup(t *testing.T, files map[string][]byte, base time.Time, extra ...string) (root, staging string, m *mount) {
	t.Helper()
	dir := t.TempDir()
	root, staging = filepath.Join(dir, "tree"), filepath.Join(dir, "staging")
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, base, base); err != nil {
			t.Fatal(err)
		}
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	args := append([]string{"--attr-timeout", freshAttrTimeout.String(), "--fetch-timeout", "20s"}, extra...)
	m = startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(dir, "cache"), args...)
	return root, staging, m
}

// fileView is what stat, ls and cat show of a file and its directory.
type fileView struct {
	size  int64
	mtime time.Time
	names string   // `ls -1` of the directory
	sum   [32]byte // sha256 of `cat`
	err   string   // the first command that failed, if any
}

// viewFile looks at file name of directory dir (in the mount) with stat,
// ls and cat.
func viewFile(dir, name string) fileView {
	var v fileView
	info, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		v.err = "stat: " + err.Error()
		return v
	}
	v.size, v.mtime = info.Size(), info.ModTime()
	ls := exec.Command("ls", "-1", dir)
	ls.Env = append(os.Environ(), "LC_ALL=C")
	out, err := ls.Output()
	if err != nil {
		v.err = "ls: " + err.Error()
		return v
	}
	v.names = strings.TrimSpace(string(out))
	data, err := exec.Command("cat", filepath.Join(dir, name)).Output()
	if err != nil {
		v.err = "cat: " + err.Error()
		return v
	}
	v.sum = sha256.Sum256(data)
	return v
}

// TestFreshChangesVisibleWithinAttrTimeout: a file replaced on the server
// (new content, size and mtime), a file added and a file removed show
// through the mount, in stat, ls and cat alike, within --attr-timeout and
// a margin, and the old state never shows again after that.
func TestFreshChangesVisibleWithinAttrTimeout(t *testing.T) {
	base := time.Date(2024, 5, 1, 10, 0, 0, 123_456_789, time.UTC)
	v1 := randomBytes(300_000, 1)
	root, staging, m := freshSetup(t, map[string][]byte{
		"d/a.bin":    v1,
		"d/gone.txt": []byte("gone soon\n"),
		"d/keep.txt": []byte("kept\n"),
	}, base)
	dir := filepath.Join(m.dir, "d")
	old := viewFile(dir, "a.bin")
	if want := (fileView{size: int64(len(v1)), mtime: base, names: "a.bin\ngone.txt\nkeep.txt", sum: sha256.Sum256(v1)}); !old.equal(want) {
		t.Fatalf("before the change: %+v, want %+v", old, want)
	}

	v2 := randomBytes(1_500_000, 2)
	mtime2 := base.Add(time.Hour + 987_654_321)
	replaceFile(t, staging, filepath.Join(root, "d/a.bin"), v2, mtime2)
	if err := os.WriteFile(filepath.Join(root, "d/new.txt"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "d/gone.txt")); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	want := fileView{size: int64(len(v2)), mtime: mtime2, names: "a.bin\nkeep.txt\nnew.txt", sum: sha256.Sum256(v2)}

	// Each of stat, ls and cat shows the new state by the deadline and,
	// once it has, never the old one again.
	var statNew, lsNew, catNew time.Duration
	deadline := freshAttrTimeout + freshMargin
	for {
		v := viewFile(dir, "a.bin")
		elapsed := time.Since(changed)
		if v.err != "" {
			t.Fatalf("%v after the change: %s", elapsed, v.err)
		}
		check := func(what string, isNew bool, seen *time.Duration) {
			switch {
			case isNew && *seen == 0:
				*seen = elapsed
			case !isNew && *seen != 0:
				t.Errorf("%s shows the old state %v after the change, having shown the new one at %v", what, elapsed, *seen)
			}
		}
		check("stat", v.size == want.size && v.mtime.Equal(want.mtime), &statNew)
		check("ls", v.names == want.names, &lsNew)
		check("cat", v.sum == want.sum, &catNew)
		if elapsed > deadline+2*time.Second || t.Failed() {
			break
		}
		if elapsed > deadline && (statNew == 0 || lsNew == 0 || catNew == 0) {
			t.Fatalf("%v after the change (--attr-timeout %v): stat new %v, ls new %v, cat new %v; last view %+v",
				elapsed, freshAttrTimeout, statNew != 0, lsNew != 0, catNew != 0, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new state seen after: stat %v, ls %v, cat %v (--attr-timeout %v)", statNew, lsNew, catNew, freshAttrTimeout)
	if _, err := os.Stat(filepath.Join(dir, "gone.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of the removed file: %v, want ENOENT", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "new.txt")); err != nil || string(got) != "new\n" {
		t.Errorf("the added file: %q, %v", got, err)
	}
}

func (v fileView) equal(w fileView) bool {
	return v.size == w.size && v.mtime.Equal(w.mtime) && v.names == w.names && v.sum == w.sum && v.err == w.err
}

// waitMtime polls the mount's file at p until its mtime is want.
func waitMtime(t *testing.T, p string, want time.Time) {
	t.Helper()
	deadline := time.Now().Add(freshAttrTimeout + freshMargin)
	for {
		info, err := os.Stat(p)
		if err == nil && info.ModTime().Equal(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v (%v), want mtime %v within %v", p, info.ModTime(), err, want, freshAttrTimeout+freshMargin)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFreshChangedFileServedAtNewVersion: a file read whole (its chunks in
// the store) and then changed on the server while not open is served at
// the new version, which is fetched; changed back to the first content
// (with another mtime), it is served from the store without a fetch.
func TestFreshChangedFileServedAtNewVersion(t *testing.T) {
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	const size = 4<<20 + 1234
	v1, v2 := randomBytes(size, 11), randomBytes(size, 12)
	root, staging, m := freshSetup(t, map[string][]byte{"f.bin": v1}, base)
	p := filepath.Join(m.dir, "f.bin")
	if got := fileSHA(t, p); got != sha256.Sum256(v1) {
		t.Fatal("first read: not the first version")
	}
	if st := m.status(t); st.FS.BytesFetched != size {
		t.Fatalf("first read fetched %d bytes, want %d", st.FS.BytesFetched, size)
	}

	mtime2 := base.Add(time.Minute)
	replaceFile(t, staging, filepath.Join(root, "f.bin"), v2, mtime2)
	waitMtime(t, p, mtime2)
	if got := fileSHA(t, p); got != sha256.Sum256(v2) {
		t.Fatal("after the change: not the new version")
	}
	if st := m.status(t); st.FS.BytesFetched != 2*size {
		t.Errorf("after the change: %d bytes fetched in all, want %d (both versions once)", st.FS.BytesFetched, 2*size)
	}

	mtime3 := base.Add(2 * time.Minute)
	replaceFile(t, staging, filepath.Join(root, "f.bin"), v1, mtime3)
	waitMtime(t, p, mtime3)
	if got := fileSHA(t, p); got != sha256.Sum256(v1) {
		t.Fatal("after the change back: not the first content")
	}
	if st := m.status(t); st.FS.BytesFetched != 2*size {
		t.Errorf("after the change back: %d bytes fetched in all, want %d (the first content is in the store)", st.FS.BytesFetched, 2*size)
	}
}

// TestFreshOpenFileKeepsItsVersion: a descriptor opened before the file was
// replaced on the server (same size, other bytes, new mtime) reads the old
// version only, even after another open read the new one: the whole old
// version when it was cached, else the cached part of it and then ESTALE,
// promptly (the server serves only the current version).
func TestFreshOpenFileKeepsItsVersion(t *testing.T) {
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	const cachedSize, uncachedSize = 8 << 20, 16 << 20
	cachedV1, uncachedV1 := randomBytes(cachedSize, 21), randomBytes(uncachedSize, 22)
	root, staging, m := freshSetup(t, map[string][]byte{"cached.bin": cachedV1, "uncached.bin": uncachedV1}, base)

	// openReadReplace opens name, reads its first head bytes, replaces it
	// on the server and waits until a new open reads the new version. It
	// returns the descriptor and the bytes read.
	openReadReplace := func(t *testing.T, name string, head int, v2 []byte) (*os.File, []byte) {
		p := filepath.Join(m.dir, name)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		got := make([]byte, head)
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatalf("first %d bytes: %v", head, err)
		}
		mtime2 := base.Add(time.Hour)
		replaceFile(t, staging, filepath.Join(root, name), v2, mtime2)
		waitMtime(t, p, mtime2)
		if sum := fileSHA(t, p); sum != sha256.Sum256(v2) {
			t.Fatal("a new open after the change does not read the new version")
		}
		return f, got
	}

	t.Run("cached", func(t *testing.T) {
		if got := fileSHA(t, filepath.Join(m.dir, "cached.bin")); got != sha256.Sum256(cachedV1) {
			t.Fatal("first read: not the first version")
		}
		f, got := openReadReplace(t, "cached.bin", 3<<20, randomBytes(cachedSize, 23))
		rest, err := io.ReadAll(f)
		if err != nil {
			t.Fatalf("rest of the old version: %v", err)
		}
		if all := append(got, rest...); sha256.Sum256(all) != sha256.Sum256(cachedV1) {
			t.Errorf("the open descriptor read %d bytes that are not the old version", len(all))
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Size != cachedSize || !time.Unix(0, st.Mtim.Nano()).Equal(base) {
			t.Errorf("fstat of the open descriptor: size %d mtime %v (%v), want the old %d, %v", st.Size, time.Unix(0, st.Mtim.Nano()), err, cachedSize, base)
		}
	})

	t.Run("uncached", func(t *testing.T) {
		f, got := openReadReplace(t, "uncached.bin", 1<<20, randomBytes(uncachedSize, 24))
		start := time.Now()
		rest, err := io.ReadAll(f)
		took := time.Since(start)
		if !errors.Is(err, syscall.ESTALE) {
			t.Errorf("reading on after the change: %d more bytes, %v; want ESTALE", len(rest), err)
		}
		if took > 5*time.Second {
			t.Errorf("the stale read failed after %v, want well within --fetch-timeout (20s)", took)
		}
		if all := append(got, rest...); !bytes.Equal(all, uncachedV1[:len(all)]) {
			t.Errorf("the %d bytes read before the error are not the old version's", len(all))
		}
		t.Logf("read %d of %d bytes of the old version, then %v after %v", len(got)+len(rest), uncachedSize, err, took)
	})
}

// TestFreshCopyOfChangingFile: cp of a file replaced on the server while
// the copy runs (over a rate-limited link, so the copy takes seconds, and
// with a small read-ahead window, so most of the file is not even asked for
// when it changes) fails with ESTALE ("Stale file handle") having written
// only bytes of the old version; it never copies the new version or a mix.
// (With a file whose old version is cached, or was all asked for before
// the change, the copy is the old version whole: see
// TestFreshOpenFileKeepsItsVersion.)
func TestFreshCopyOfChangingFile(t *testing.T) {
	base := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	const size = 32 << 20
	v1, v2 := randomBytes(size, 31), randomBytes(size, 32)
	dir := t.TempDir()
	root, staging := filepath.Join(dir, "tree"), filepath.Join(dir, "staging")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "big.bin"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(root, "big.bin"), base, base); err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	relay, err := linkemu.New(p.addr, linkemu.Config{RateBitsPerSec: 64_000_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	m := startMount(t, relay.Addr(), filepath.Join(certDir, certgen.CAFile), filepath.Join(dir, "cache"),
		"--attr-timeout", freshAttrTimeout.String(), "--fetch-timeout", "20s", "--read-ahead", "4")

	dst := filepath.Join(dir, "copy.bin")
	var cpOut bytes.Buffer
	cp := exec.Command("cp", filepath.Join(m.dir, "big.bin"), dst)
	cp.Stdout, cp.Stderr = &cpOut, &cpOut
	cp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Wait() }()
	t.Cleanup(func() {
		cp.Process.Kill()
		<-cpDone
	})

	// Replace the file once the copy has written a few MiB.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if info, err := os.Stat(dst); err == nil && info.Size() >= 4<<20 {
			break
		}
		select {
		case err := <-cpDone:
			cpDone <- err
			t.Fatalf("cp ended before the change (%v): the copy was too fast for this test\n%s", err, cpOut.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("cp did not write 4 MiB within 60s")
		}
	}
	replaceFile(t, staging, filepath.Join(root, "big.bin"), v2, base.Add(time.Hour))
	changed := time.Now()

	var cpErr error
	select {
	case cpErr = <-cpDone:
		cpDone <- cpErr
	case <-time.After(120 * time.Second):
		t.Fatal("cp still running 120s after the change")
	}
	took := time.Since(changed)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if cpErr == nil || !strings.Contains(cpOut.String(), "Stale file handle") {
		t.Errorf("cp of the changing file: %v, %q; want a failure with a stale file handle", cpErr, cpOut.String())
	}
	if len(got) >= size || !bytes.Equal(got, v1[:len(got)]) {
		t.Errorf("cp wrote %d bytes that are not a prefix of the old version (%d bytes)", len(got), size)
	}
	if took > 5*time.Second {
		t.Errorf("cp failed %v after the change, want well within --fetch-timeout (20s)", took)
	}
	t.Logf("cp failed %v after the change, having copied %d bytes of the old version: %s", took, len(got), strings.TrimSpace(cpOut.String()))
}

// runIn runs a command in dir and returns its standard output, failing the
// test on error.
func runIn(t *testing.T, dir string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, tail(stderr.Bytes()))
	}
	return string(out)
}

// TestRemountPrimaryDownListsFast: after a tree was copied once, a remount
// on the same cache with the primary down answers `ls -lR` and `find` from
// the store at once (the daemon's start-up probe found the primary
// unreachable, so no metadata call waits --fetch-timeout first), with the
// same listing as before.
func TestRemountPrimaryDownListsFast(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeTree(t, root, 1<<20)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144")
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, p.addr, ca, cache)
	run(t, 5*time.Minute, "cp", "-r", m.dir, filepath.Join(t.TempDir(), "copy"))
	wantLs := runIn(t, m.dir, time.Minute, "ls", "-lR", ".")
	wantFind := runIn(t, m.dir, time.Minute, "find", ".")
	m.unmount(t)
	if err := p.stop(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("kwik-primary exited 0 after SIGKILL")
	}

	const fetchTimeout = 20 * time.Second
	m2 := startMount(t, p.addr, ca, cache, "--fetch-timeout", fetchTimeout.String())
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"ls", []string{"-lR", "."}, wantLs},
		{"find", []string{"."}, wantFind},
	} {
		start := time.Now()
		got := runIn(t, m2.dir, 2*fetchTimeout, c.name, c.args...)
		took := time.Since(start)
		if took > 5*time.Second {
			t.Errorf("%s %s with the primary down took %v, want well under --fetch-timeout (%v)", c.name, strings.Join(c.args, " "), took, fetchTimeout)
		}
		if got != c.want {
			t.Errorf("%s %s with the primary down differs from before (%d lines, want %d)", c.name, strings.Join(c.args, " "),
				strings.Count(got, "\n"), strings.Count(c.want, "\n"))
		}
		t.Logf("%s %s with the primary down: %v, %d lines", c.name, strings.Join(c.args, " "), took, strings.Count(got, "\n"))
	}
	if got, err := os.ReadFile(filepath.Join(m2.dir, "a/b/c/d/e/deep.txt")); err != nil || string(got) != "deep\n" {
		t.Errorf("a cached file with the primary down: %q, %v", got, err)
	}
}
