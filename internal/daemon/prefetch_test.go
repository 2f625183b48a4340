package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestPrefetchAPI drives the control socket's prefetch API with
// ControlClient against a real primary, store and filesystem: a job is
// started, followed to its end, listed (also in GET /status) and
// canceled; bad requests get their statuses.
func TestPrefetchAPI(t *testing.T) {
	root := t.TempDir()
	const cs = transfer.MinChunkSize
	data := make([]byte, 7*cs+5)
	x := uint32(1)
	for i := range data { // no two chunks alike: the store would hold one copy
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d", "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}})
	client := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { client.Close() })
	store, err := chunkstore.Open(t.TempDir(), &chunkstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	fsys := fusefs.New(client, store, nil)
	t.Cleanup(func() { fsys.Close() })
	mgr, err := prefetch.New(fsys, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctl, err := startControl(sock, &statusSource{client: client, store: store, fs: fsys, prefetch: mgr, started: time.Now()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := NewControlClient(sock)
	defer c.Close()
	p, err := c.StartPrefetch(ctx, []string{"d"})
	if err != nil {
		t.Fatalf("StartPrefetch: %v", err)
	}
	if p.ID != 1 || p.State != prefetch.StateRunning {
		t.Errorf("started job %+v", p)
	}
	if _, err := mgr.Wait(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	p, err = c.Prefetch(ctx, p.ID)
	if err != nil || p.State != prefetch.StateDone || p.FilesDone != 1 || p.BytesFetched != int64(len(data)) {
		t.Errorf("Prefetch(1) = %+v, %v; want done, 1 file, %d bytes fetched", p, err, len(data))
	}
	jobs, err := c.Prefetches(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != 1 {
		t.Errorf("Prefetches = %+v, %v", jobs, err)
	}
	if p, err := c.CancelPrefetch(ctx, 1); err != nil || p.State != prefetch.StateDone {
		t.Errorf("CancelPrefetch of an ended job = %+v, %v; want it unchanged", p, err)
	}

	for _, c2 := range []struct {
		name   string
		do     func() error
		status int
	}{
		{"missing path", func() error { _, err := c.StartPrefetch(ctx, []string{"nope"}); return err }, http.StatusNotFound},
		{"escaping path", func() error { _, err := c.StartPrefetch(ctx, []string{"../x"}); return err }, http.StatusBadRequest},
		{"no paths", func() error { _, err := c.StartPrefetch(ctx, nil); return err }, http.StatusBadRequest},
		{"unknown job", func() error { _, err := c.Prefetch(ctx, 99); return err }, http.StatusNotFound},
		{"cancel unknown job", func() error { _, err := c.CancelPrefetch(ctx, 99); return err }, http.StatusNotFound},
		{"bad id", func() error { var p prefetch.Progress; return c.do(ctx, http.MethodGet, "/prefetch/x", nil, &p) }, http.StatusBadRequest},
		{"bad body", func() error { var p prefetch.Progress; return c.do(ctx, http.MethodPost, "/prefetch", "paths", &p) }, http.StatusBadRequest},
	} {
		var ce *ControlError
		if err := c2.do(); !errors.As(err, &ce) || ce.Status != c2.status || ce.Message == "" {
			t.Errorf("%s: %v, want a ControlError with status %d", c2.name, err, c2.status)
		}
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Prefetch) != 1 || st.Prefetch[0].State != prefetch.StateDone {
		t.Errorf("status lists jobs %+v, want job 1 done", st.Prefetch)
	}
}

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
	if _, err := FindMount(t.TempDir()); err == nil {
		t.Error("FindMount of a plain directory succeeded")
	}
}
