package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
)

// makePrefetchTree writes a tree for the prefetch tests under dir: a file of
// big bytes, a 3 MiB file three directories down, 8 small files in 2
// directories, an empty file and a symlink. (Few directories and files:
// reading them without the primary costs a fetch timeout each.) It returns the number of
// regular files and their total size.
func makePrefetchTree(t *testing.T, dir string, big int) (files int, bytes int64) {
	t.Helper()
	add := func(rel string, n int) {
		writeRandomFile(t, filepath.Join(dir, rel), n, uint64(1000+files))
		files++
		bytes += int64(n)
	}
	add("big/big.bin", big)
	add("nested/a/b/c.bin", 3<<20+12345)
	for i := range 8 {
		add(fmt.Sprintf("docs/%d/note-%02d.txt", i%2, i), 1+i*7919)
	}
	add("empty", 0)
	if err := os.Symlink("big/big.bin", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return files, bytes
}

// controlClient returns a client of the daemon serving m.
func (m *mount) controlClient(t *testing.T) *control.Client {
	t.Helper()
	mnt, err := control.FindMount(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	c := control.NewClient(mnt.Socket)
	t.Cleanup(c.Close)
	return c
}

// job returns the progress of prefetch job id on m.
func (m *mount) job(t *testing.T, c *control.Client, id uint64) control.PrefetchJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Prefetch(ctx, id)
	if err != nil {
		t.Fatalf("prefetch job %d of %s: %v", id, m.dir, err)
	}
	return p
}

// waitJob polls job id until cond holds and returns its progress then; it
// fails the test after timeout.
func (m *mount) waitJob(t *testing.T, id uint64, timeout time.Duration, what string, cond func(control.PrefetchJob) bool) control.PrefetchJob {
	t.Helper()
	c := m.controlClient(t)
	deadline := time.Now().Add(timeout)
	for {
		p := m.job(t, c, id)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d not %s after %v: %+v", id, what, timeout, p)
		}
		select {
		case <-m.done:
			t.Fatalf("daemon exited (%v) while waiting for job %d to be %s", m.err, id, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestPrefetchThenReadWithoutPrimary prefetches a whole tree with `kwikfs
// prefetch` (following its progress until done), unmounts, kills the
// primary and mounts the same cache again: every file reads byte-identical
// with zero bytes fetched.
func TestPrefetchThenReadWithoutPrimary(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	files, size := makePrefetchTree(t, root, 24<<20+777)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, p.addr, ca, cache)

	started := time.Now()
	out := run(t, 3*time.Minute, bin("kwikfs"), "prefetch", m.dir)
	t.Logf("kwikfs prefetch took %v; its output:\n%s", time.Since(started), out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"job 1 [========================] 100%", fmt.Sprintf("%d/%d files", files, files), "done"} {
		if !strings.Contains(last, want) {
			t.Errorf("last progress line %q lacks %q", last, want)
		}
	}
	st := m.status(t)
	if len(st.Prefetch) != 1 {
		t.Fatalf("status lists %d prefetch jobs, want 1: %+v", len(st.Prefetch), st.Prefetch)
	}
	job := st.Prefetch[0]
	if job.State != control.JobDone || job.FilesDone != int64(files) || job.BytesDone != size || job.BytesFetched != size {
		t.Errorf("job %+v; want done, %d files, %d bytes fetched", job, files, size)
	}
	if st.FS.BytesFetched != size {
		t.Errorf("daemon fetched %d bytes, want the tree's %d", st.FS.BytesFetched, size)
	}
	text := run(t, 30*time.Second, bin("kwikfs"), "status", m.dir)
	if !strings.Contains(text, "prefetch") || !strings.Contains(text, fmt.Sprintf("%d/%d", files, files)) {
		t.Errorf("kwikfs status does not show the job:\n%s", text)
	}
	m.unmount(t)
	if err := p.stop(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("kwik-primary exited 0 after SIGKILL")
	}

	m2 := startMountAt(t, p.addr, ca, cache, m.dir, "--fetch-timeout", "1s")
	started = time.Now()
	compareTrees(t, root, m2.dir, compareOptions{modes: true, mtimes: true})
	st = m2.status(t)
	t.Logf("read the tree without the primary in %v: %d bytes fetched, %d store hits", time.Since(started), st.FS.BytesFetched, st.FS.StoreHits)
	if st.FS.BytesFetched != 0 || st.FS.FetchErrors != 0 {
		t.Errorf("reading the prefetched tree fetched %d bytes (%d fetch errors), want 0", st.FS.BytesFetched, st.FS.FetchErrors)
	}
	if len(st.Prefetch) != 1 || st.Prefetch[0].State != control.JobDone {
		t.Errorf("after the remount the job list is %+v, want job 1 done", st.Prefetch)
	}
	m2.unmount(t)
}

// TestPrefetchResumesAfterKill starts a prefetch with --detach (which
// returns while the job runs; `kwikfs status` shows it), SIGKILLs the
// daemon halfway and mounts again: the job resumes by itself and
// completes, and the two daemons fetched at most the tree's size plus 5%.
func TestPrefetchResumesAfterKill(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	files, size := makePrefetchTree(t, root, 192<<20)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize))
	ca := filepath.Join(certDir, certgen.CAFile)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, p.addr, ca, cache)

	started := time.Now()
	out := run(t, 30*time.Second, bin("kwikfs"), "prefetch", "--detach", m.dir)
	detached := time.Since(started)
	c := m.controlClient(t)
	first := m.job(t, c, 1)
	t.Logf("--detach returned after %v: %q; job then: %+v", detached, strings.TrimSpace(out), first)
	if !strings.Contains(out, "prefetch job 1 started") {
		t.Errorf("--detach printed %q", out)
	}
	if first.State != control.JobRunning || first.BytesDone >= size {
		t.Errorf("job after --detach returned: %+v; want it still running", first)
	}
	text := run(t, 30*time.Second, bin("kwikfs"), "status", m.dir)
	if !strings.Contains(text, "prefetch") || !strings.Contains(text, "running") {
		t.Errorf("kwikfs status does not show the running job:\n%s", text)
	}

	m.waitJob(t, 1, 3*time.Minute, "half done", func(p control.PrefetchJob) bool { return p.BytesDone >= size/2 })
	seen := m.liveStatus(t).FS.BytesFetched
	m.kill(t)
	t.Logf("killed the daemon after %v with %d bytes fetched (%.1f%% of the tree)", time.Since(started), seen, 100*float64(seen)/float64(size))

	m2 := startMountAt(t, p.addr, ca, cache, m.dir)
	job := m2.waitJob(t, 1, 3*time.Minute, "done", control.PrefetchJob.Ended)
	st := m2.status(t)
	fetched := st.FS.BytesFetched
	t.Logf("resumed job: %+v", job)
	t.Logf("the second daemon fetched %d bytes; in all %d for a %d-byte tree (%.2f%%): %d fetched twice (lost with the killed daemon)",
		fetched, seen+fetched, size, 100*float64(seen+fetched)/float64(size), seen+fetched-size)
	if job.State != control.JobDone || job.Resumed != 1 || job.FilesDone != int64(files) || job.BytesDone != size {
		t.Errorf("resumed job %+v; want done, resumed once, %d files, %d bytes", job, files, size)
	}
	if limit := size + size/20; seen+fetched > limit {
		t.Errorf("fetched %d + %d = %d bytes in all, want at most %d (tree + 5%%)", seen, fetched, seen+fetched, limit)
	}
	if fetched >= size/2+size/20 {
		t.Errorf("the resumed job fetched %d bytes of a %d-byte tree that was half fetched", fetched, size)
	}
	if job.BytesFetched != fetched {
		t.Errorf("job counted %d bytes fetched, the daemon %d", job.BytesFetched, fetched)
	}
	compareTrees(t, root, m2.dir, compareOptions{})
	if after := m2.status(t).FS.BytesFetched; after != fetched {
		t.Errorf("reading the tree after the job fetched %d more bytes, want 0", after-fetched)
	}
	m2.unmount(t)
}

// TestPrefetchCommandErrors: paths outside a mount, missing paths and a
// cancel of an unknown job fail with a message and exit status 1.
func TestPrefetchCommandErrors(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makePrefetchTree(t, root, 1<<20)
	certDir := certs(t)
	p := startPrimary(t, root, certDir)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{t.TempDir()}, "not inside a kwikfs mount"},
		{[]string{filepath.Join(m.dir, "nope")}, "no such file"},
		{[]string{"--cancel", "9", m.dir}, "no such job"},
	} {
		cmd := exec.Command(bin("kwikfs"), append([]string{"prefetch"}, c.args...)...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
			t.Errorf("kwikfs prefetch %q: %v, output %q; want exit 1 and %q", c.args, err, out, c.want)
		}
	}
	m.unmount(t)
}
