package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/daemon"
)

// statusChunkSize is the chunk size of startClusterRoots' primary.
const statusChunkSize = 262144

// waitPathsUp polls `kwikfs status --json` until the session has want paths
// up (the primary adds the secondary paths once the client has dialled).
func waitPathsUp(t *testing.T, m *mount, want int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for {
		st := m.status(t)
		up := 0
		for _, p := range st.Paths {
			if p.State == "up" {
				up++
			}
		}
		if up >= want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%d of %d paths up after 20s: %+v", up, want, st.Paths)
		}
	}
}

// sumChunks adds up the paths' chunks_delivered, and reports whether every
// path has the field.
func sumChunks(st *daemon.Status) (uint64, bool) {
	var n uint64
	for _, p := range st.Paths {
		if p.ChunksDelivered == nil {
			return n, false
		}
		n += *p.ChunksDelivered
	}
	return n, true
}

// TestStatusPathReport copies files out of a mount served by a primary and
// two secondaries and checks what `kwikfs status --json` says about the
// paths: every path delivered chunks, and the chunks delivered add up to
// exactly the chunks of the files copied. Equality holds because the files
// are random (no chunk is shared, so each is fetched once: FS.ChunksFetched
// is checked too), no READ fails (no fault is injected), and the primary
// credits every chunk of a completed READ reply to exactly one path (in
// proportion to the bytes each delivered first), so hedged duplicates
// count once.
func TestStatusPathReport(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	sizes := map[string]int{"a.bin": 24 << 20, "b.bin": 9<<20 + 12345, "c/d.bin": 300000}
	var wantChunks, wantBytes uint64
	seed := uint64(40)
	for name, n := range sizes {
		writeRandomFile(t, filepath.Join(root, name), n, seed)
		seed++
		wantChunks += uint64((n + statusChunkSize - 1) / statusChunkSize)
		wantBytes += uint64(n)
	}
	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, root, root)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	waitPathsUp(t, m, 3)

	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 5*time.Minute, "cp", "-r", m.dir, dst)
	compareTrees(t, root, dst, compareOptions{})

	// The primary credits a divided READ once its job has seen the client's
	// last delivery report, which may come just after the copy ends.
	var st daemon.Status
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		st = m.status(t)
		if n, ok := sumChunks(&st); ok && n+uint64(st.FS.FilesChunks) >= wantChunks {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			done = true
		}
	}
	if st.PathReportError != "" {
		t.Fatalf("the primary did not report on the paths: %s", st.PathReportError)
	}
	if len(st.Paths) != 3 {
		t.Fatalf("session has %d paths, want 3: %+v", len(st.Paths), st.Paths)
	}
	var dataBytes uint64
	for _, path := range st.Paths {
		if path.ChunksDelivered == nil || path.Strikes == nil || path.DataBytesDelivered == nil || path.InFlightBytes == nil || path.RateBytesPerSec == nil {
			t.Fatalf("path %d (%s): coordinator fields missing: %+v", path.ID, path.Remote, path)
		}
		t.Logf("path %d %s %s: rtt %.2f ms, rate %d B/s, %d chunks (%d bytes), strikes %d, duplicates %d",
			path.ID, path.Remote, path.State, path.RTTMillis, *path.RateBytesPerSec, *path.ChunksDelivered, *path.DataBytesDelivered, *path.Strikes, path.Duplicates)
		if *path.ChunksDelivered == 0 {
			t.Errorf("path %d (%s) delivered no chunks: the work was not shared", path.ID, path.Remote)
		}
		if path.State != "up" || *path.Strikes != 0 || *path.InFlightBytes != 0 {
			t.Errorf("path %d: state %s, %d strikes, %d bytes in flight; want up, 0, 0", path.ID, path.State, *path.Strikes, *path.InFlightBytes)
		}
		dataBytes += *path.DataBytesDelivered
	}
	// A file's first chunk comes with its manifest in a FILES reply
	// (open-ahead), not in a READ reply that the paths are credited for.
	if n, _ := sumChunks(&st); n+uint64(st.FS.FilesChunks) != wantChunks || dataBytes+uint64(st.FS.FilesBytes) != wantBytes {
		t.Errorf("paths delivered %d chunks, %d bytes, and FILES replies %d chunks, %d bytes; the files have %d chunks, %d bytes",
			n, dataBytes, st.FS.FilesChunks, st.FS.FilesBytes, wantChunks, wantBytes)
	}
	if st.FS.ChunksFetched != int64(wantChunks) {
		t.Errorf("the mount fetched %d chunks, want %d (each once)", st.FS.ChunksFetched, wantChunks)
	}

	// The table names every column and shows one row per path.
	out, err := exec.Command(bin("kwikfs"), "status", m.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kwikfs status: %v\n%s", err, out)
	}
	t.Logf("kwikfs status:\n%s", out)
	text := string(out)
	for _, col := range []string{"state", "RTT", "rate", "delivered", "chunks", "strikes"} {
		if !strings.Contains(text, col) {
			t.Errorf("status table lacks the %q column", col)
		}
	}
	for _, path := range st.Paths {
		if !strings.Contains(text, path.Remote) {
			t.Errorf("status table has no row for %s", path.Remote)
		}
	}
}
