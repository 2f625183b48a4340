package prefetch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/remotetest"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestJobWithRealPrimaryAndStore runs a job against a real kwik-primary
// over QUIC on 127.0.0.1 into a real Badger store, then starts again with
// a new client, filesystem and manager on the same store: the job record
// is listed, and a second job over the tree fetches nothing.
func TestJobWithRealPrimaryAndStore(t *testing.T) {
	root := t.TempDir()
	files := map[string]int{"big.bin": 3<<20 + 17, "d/e/small": 1000, "d/empty": 0, "d/mid": 300 << 10}
	var total int64
	for p, n := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, remotetest.Content(p, n), 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(n)
	}
	if err := os.Symlink("big.bin", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: 256 << 10}})
	storeDir := t.TempDir()

	// open returns a client, filesystem and manager over the store; close
	// shuts them down in the daemon's order.
	open := func() (*transfer.Client, *fusefs.FS, *Manager, func()) {
		store, err := chunkstore.Open(storeDir, &chunkstore.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		client := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
		fsys := fusefs.New(client, store, nil)
		mgr, err := New(fsys, store, nil)
		if err != nil {
			t.Fatal(err)
		}
		return client, fsys, mgr, func() {
			mgr.Close()
			fsys.Close()
			client.Close()
			store.Close()
		}
	}
	ctx := context.Background()

	client, _, mgr, closeAll := open()
	p, err := mgr.Start(ctx, []string{""})
	if err != nil {
		t.Fatal(err)
	}
	if p, err = mgr.Wait(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if p.State != StateDone || p.FilesDone != int64(len(files)) || p.BytesDone != total || p.BytesFetched != total {
		t.Errorf("job: %+v; want done, %d files, %d bytes fetched", p, len(files), total)
	}
	if got := client.Stats().DataBytes; got != total {
		t.Errorf("client received %d data bytes, want %d", got, total)
	}
	closeAll()

	client, _, mgr, closeAll = open()
	defer closeAll()
	if jobs := mgr.Jobs(); len(jobs) != 1 || jobs[0].State != StateDone || jobs[0].BytesFetched != total {
		t.Errorf("jobs after the restart: %+v", jobs)
	}
	p, err = mgr.Start(ctx, []string{"d", "big.bin"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err = mgr.Wait(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if p.State != StateDone || p.FilesDone != int64(len(files)) || p.BytesDone != total || p.BytesFetched != 0 {
		t.Errorf("second job: %+v; want done, all bytes, none fetched", p)
	}
	if got := client.Stats().DataBytes; got != 0 {
		t.Errorf("second client received %d data bytes, want 0", got)
	}
}
