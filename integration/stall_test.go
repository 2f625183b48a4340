package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
)

// secondaryPath returns the status of the mount's path to addr in state
// (the newest one: a path added again has a higher ID), or false.
func secondaryPath(st control.Status, addr, state string) (control.Path, bool) {
	var found control.Path
	ok := false
	for _, p := range st.Paths {
		if p.ID != 0 && p.Remote == addr && p.State == state {
			found, ok = p, true
		}
	}
	return found, ok
}

// pollStatus polls the mount's status every 20 ms until cond holds and
// returns that status; it fails the test with what after timeout.
func pollStatus(t *testing.T, m *mount, timeout time.Duration, what string, cond func(control.Status) bool) control.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := m.liveStatus(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still waiting for %s; paths %+v", timeout, what, st.Paths)
		}
		<-time.After(20 * time.Millisecond) // polling another process
	}
}

// TestStallSecondaryStopped stops the kwik-secondary process (SIGSTOP) in
// the middle of a cp of a 64 MiB file: its QUIC connection does not fail,
// it just goes silent. The copy completes byte-identical, the client closes
// the path as stalled (kwik's default PathStallTimeout, 2 s), and once the
// secondary continues (SIGCONT) the primary adds the path again and the
// secondary delivers chunks of the next files: of second.bin, or, when the
// re-added path's first RTT samples are those of a process still catching
// up (420 ms once in CI, against 1 ms for the primary, which then rightly
// sends all of second.bin first), of third.bin after it.
func TestStallSecondaryStopped(t *testing.T) {
	const size = 64 << 20
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "first.bin"), size, 61)
	writeRandomFile(t, filepath.Join(root, "second.bin"), 32<<20, 62)
	writeRandomFile(t, filepath.Join(root, "third.bin"), 32<<20, 63)
	certDir := certs(t)
	sec := startServer(t, "kwik-secondary", root, certDir)
	pid := sec.cmd.Process.Pid
	// Registered after start's cleanup, so it runs before the kill: a
	// failing test never leaves a stopped process behind.
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(chunkSize), "--secondary", sec.addr)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", "30s")
	pollStatus(t, m, 20*time.Second, "the secondary path up", func(st control.Status) bool {
		_, ok := secondaryPath(st, sec.addr, "up")
		return ok
	})

	dst := filepath.Join(t.TempDir(), "first.bin")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := exec.CommandContext(ctx, "cp", filepath.Join(m.dir, "first.bin"), dst)
	started := time.Now()
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	var cpErr error
	cpDone := make(chan struct{})
	go func() {
		cpErr = cp.Wait()
		close(cpDone)
	}()
	t.Cleanup(func() {
		cancel()
		<-cpDone
	})

	// Stop the secondary once it has delivered part of the file.
	st := pollStatus(t, m, 60*time.Second, "data from the secondary", func(st control.Status) bool {
		ps, ok := secondaryPath(st, sec.addr, "up")
		return ok && ps.BytesDelivered > 0
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	if st.FS.BytesFetched >= size {
		t.Fatalf("all of first.bin (%d bytes) was fetched before the secondary stopped: not mid-copy", st.FS.BytesFetched)
	}
	t.Logf("secondary stopped %v into the copy, %d of %d bytes fetched", stoppedAt.Sub(started).Round(time.Millisecond), st.FS.BytesFetched, size)

	<-cpDone
	if cpErr != nil {
		t.Fatalf("cp with the secondary stopped: %v", cpErr)
	}
	t.Logf("copy done %v after the stop", time.Since(stoppedAt).Round(time.Millisecond))
	if want, got := fileSHA(t, filepath.Join(root, "first.bin")), fileSHA(t, dst); want != got {
		t.Fatalf("first.bin copied across a stalled secondary: sha %x, want %x", got[:6], want[:6])
	}

	// The client closed the stalled path; `kwikfs status` says so.
	pollStatus(t, m, 15*time.Second, "the secondary path stalled", func(st control.Status) bool {
		ps, ok := secondaryPath(st, sec.addr, "failed")
		return ok && ps.Stalled
	})
	st = m.status(t) // what `kwikfs status` prints
	stalled, ok := secondaryPath(st, sec.addr, "failed")
	if !ok || !stalled.Stalled {
		t.Fatalf("kwikfs status shows no stalled path to %s: %+v", sec.addr, st.Paths)
	}
	t.Logf("path %d stalled (%v after the stop)", stalled.ID, time.Since(stoppedAt).Round(time.Millisecond))

	// The secondary continues; the primary adds the path again.
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	contAt := time.Now()
	st = pollStatus(t, m, 20*time.Second, "the secondary path up again", func(st control.Status) bool {
		ps, ok := secondaryPath(st, sec.addr, "up")
		return ok && ps.ID > stalled.ID
	})
	again, _ := secondaryPath(st, sec.addr, "up")
	t.Logf("path %d up %v after SIGCONT", again.ID, time.Since(contAt).Round(time.Millisecond))

	var now control.Path
	for _, name := range []string{"second.bin", "third.bin"} {
		dst := filepath.Join(t.TempDir(), name)
		run(t, 2*time.Minute, "cp", filepath.Join(m.dir, name), dst)
		if want, got := fileSHA(t, filepath.Join(root, name)), fileSHA(t, dst); want != got {
			t.Fatalf("%s: sha %x, want %x", name, got[:6], want[:6])
		}
		for _, ps := range m.status(t).Paths {
			if ps.ID == again.ID {
				now = ps
			}
		}
		if now.State != "up" || now.Stalled {
			t.Fatalf("re-added path %d after copying %s: %+v; want up", again.ID, name, now)
		}
		if now.ChunksDelivered != nil && *now.ChunksDelivered > 0 && now.BytesDelivered > 0 {
			t.Logf("re-added path %d delivered %d chunks (%d bytes) by the end of %s (RTT %.1f ms); test took %v",
				now.ID, *now.ChunksDelivered, now.BytesDelivered, name, now.RTTMillis, time.Since(started).Round(time.Millisecond))
			return
		}
		t.Logf("re-added path %d delivered nothing of %s (RTT %.1f ms, %d bytes received)", now.ID, name, now.RTTMillis, now.BytesReceived)
	}
	t.Fatalf("re-added path %d delivered no chunk of second.bin or third.bin: %+v", again.ID, now)
}
