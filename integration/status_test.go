package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
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
func sumChunks(st *control.Status) (uint64, bool) {
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
	var st control.Status
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

// decodeStrict decodes the JSON b into v, refusing any field v's type
// does not document.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

// TestStatusJSONContract: a live daemon's status, as `kwikfs status --json`
// prints it and as GET /status serves it, decodes strictly (no field the
// documented types lack) and holds the values the set-up makes knowable:
// version 1, the primary, mount point and cache as given, one path up per
// server, the metrics address bound, no prefetch job, and after a copy of
// a random file of 5 chunks and a bit, exactly its chunks fetched and
// cached, in whole 4 KiB blocks on disk.
func TestStatusJSONContract(t *testing.T) {
	const size = 5*statusChunkSize + 1234
	const chunks = 6
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "f.bin"), size, 77)
	certDir := certs(t)
	p := startClusterRoots(t, root, certDir, root)
	cache := filepath.Join(t.TempDir(), "cache")
	started := time.Now().Truncate(time.Second)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), cache, "--metrics", "127.0.0.1:0")
	waitPathsUp(t, m, 2)
	dst := filepath.Join(t.TempDir(), "f.bin")
	run(t, time.Minute, "cp", filepath.Join(m.dir, "f.bin"), dst)
	if fileSHA(t, dst) != fileSHA(t, filepath.Join(root, "f.bin")) {
		t.Fatal("the copy differs from the source")
	}

	// Fetched chunks reach the store just after the reads that took them.
	var st control.Status
	for deadline := time.Now().Add(10 * time.Second); ; {
		st = m.status(t) // `kwikfs status --json`, decoded strictly
		if st.FS.PendingChunks == 0 && st.Store.Chunks == chunks || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, mnt, err := control.Dial(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var raw bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Get(ctx, "/status", &raw); err != nil {
		t.Fatal(err)
	}
	var served control.Status
	if err := decodeStrict(raw.Bytes(), &served); err != nil {
		t.Fatalf("GET /status: %v\n%s", err, raw.String())
	}
	defer func() {
		if t.Failed() {
			t.Logf("GET /status:\n%s", raw.String())
		}
	}()

	for _, s := range []control.Status{st, served} {
		if s.Version != 1 || s.Primary != p.addr || s.Mountpoint != m.dir || s.CacheDir != cache || mnt.Root != m.dir || !s.Connected {
			t.Errorf("version %d, primary %q, mountpoint %q, cache_dir %q, connected %v; want 1, %q, %q, %q, true",
				s.Version, s.Primary, s.Mountpoint, s.CacheDir, s.Connected, p.addr, m.dir, cache)
		}
		if s.Started.Before(started) || s.Started.After(time.Now()) || s.UptimeSeconds <= 0 {
			t.Errorf("started %v, uptime %v s; want since %v", s.Started, s.UptimeSeconds, started)
		}
		if host, port, err := net.SplitHostPort(s.MetricsAddr); err != nil || host != "127.0.0.1" || port == "0" {
			t.Errorf("metrics_addr %q, want 127.0.0.1 with the bound port", s.MetricsAddr)
		}
		if len(s.Paths) != 2 || s.Paths[0].ID != 0 || s.Paths[0].Remote != p.addr || s.Paths[0].State != "up" || s.Paths[1].State != "up" {
			t.Errorf("paths %+v, want the primary's (0, %s) and the secondary's, up", s.Paths, p.addr)
		}
		if s.PathReportError != "" || s.ReadLatency == nil || s.Prefetch == nil || len(s.Prefetch) != 0 {
			t.Errorf("path_report_error %q, read_latency %v, prefetch %v; want none, present, []", s.PathReportError, s.ReadLatency, s.Prefetch)
		}
		fs, sto := s.FS, s.Store
		if fs.ChunksFetched != chunks || fs.BytesFetched != size || fs.FetchErrors != 0 || fs.PendingChunks != 0 {
			t.Errorf("fs: %d chunks, %d bytes fetched, %d errors, %d queued; want %d, %d, 0, 0", fs.ChunksFetched, fs.BytesFetched, fs.FetchErrors, fs.PendingChunks, chunks, size)
		}
		if wantDisk := int64(5*statusChunkSize + 4096); sto.Chunks != chunks || sto.ChunkBytes != size || sto.DiskBytes != wantDisk || sto.Puts != chunks || sto.PutBytes != size ||
			sto.Corrupt != 0 || sto.Evicted != 0 || sto.Limit <= 0 {
			t.Errorf("store %+v: want %d chunks of %d bytes, %d on disk, as many puts, nothing corrupt or evicted, an automatic limit", sto, chunks, size, wantDisk)
		}
		if s.Transfer.CorruptChunks != 0 || s.Transfer.Dials < 1 {
			t.Errorf("transfer %+v: want no corrupt chunk, a dial", s.Transfer)
		}
	}
	for _, want := range []string{"\n  \"version\": 1,\n", `"prefetch": []`, `"started": "` + served.Started.Format(time.RFC3339Nano) + `"`} {
		if !strings.Contains(raw.String(), want) {
			t.Errorf("GET /status lacks %q", want)
		}
	}
}
