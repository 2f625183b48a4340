package transfer_test

import (
	"crypto/sha256"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestReadSourcesSinglePath reads chunks from a primary alone: every data
// byte (not the status byte) is credited to the primary's address.
func TestReadSourcesSinglePath(t *testing.T) {
	const cs = transfer.MinChunkSize
	root := t.TempDir()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartWith(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}}, servertest.Options{Bundle: b}).Addr
	c := transfer.NewClient(srv, &transfer.ClientOptions{Config: clientConfigBundle(t, b)})
	t.Cleanup(func() { c.Close() })
	writeFile(t, filepath.Join(root, "f"), randomData(3*cs+5, 9), 0o644, mtime0)
	ctx := testCtx(t)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadChunks(ctx, "f", m, 1, 3, func(int, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Sources{srv: 2*cs + 5}); !maps.Equal(got, want) {
		t.Fatalf("sources %v, want %v", got, want)
	}
	if got, err := c.ReadChunks(ctx, "f", m, 0, 0, nil); got != nil || err != nil {
		t.Fatalf("ReadChunks of no chunks = %v, %v; want no sources", got, err)
	}
}

// TestReadSourcesOfAnError: a READ that ends in an error returns the
// sources of what it delivered before it, and only that.
func TestReadSourcesOfAnError(t *testing.T) {
	const cs = transfer.MinChunkSize
	root := t.TempDir()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartWith(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}}, servertest.Options{Bundle: b}).Addr
	c := transfer.NewClient(srv, &transfer.ClientOptions{Config: clientConfigBundle(t, b)})
	t.Cleanup(func() { c.Close() })
	writeFile(t, filepath.Join(root, "f"), randomData(5*cs, 3), 0o644, mtime0)
	ctx := testCtx(t)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	got, err := c.ReadChunks(ctx, "f", m, 0, 5, func(i int, _ []byte) error {
		if i == 2 {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("ReadChunks = %v, want deliver's error", err)
	}
	// Chunks 0, 1 and 2 were handed to deliver.
	if want := (transfer.Sources{srv: 3 * cs}); !maps.Equal(got, want) {
		t.Fatalf("sources %v, want %v", got, want)
	}
}

// TestReadSourcesMultipath reads a file from a primary that delegates to
// one secondary: the sources name both servers by their addresses and sum
// to exactly the file's size.
func TestReadSourcesMultipath(t *testing.T) {
	const chunk = 64 << 10
	const size = 64*chunk + 123
	data := randomData(size, 7)
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, d := range dirs {
		writeFile(t, filepath.Join(d, "f.bin"), data, 0o644, mtime0)
	}
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	secAddr := servertest.StartSecondary(t, b, dirs[1], nil).Addr
	prim := servertest.StartWith(t, dirs[0], &server.PrimaryOptions{
		Catalog: server.CatalogOptions{ChunkSize: chunk}, Secondaries: []string{secAddr},
	}, servertest.Options{Bundle: b}).Addr
	c := transfer.NewClient(prim, &transfer.ClientOptions{Config: clientConfigBundle(t, b)})
	t.Cleanup(func() { c.Close() })
	ctx := testCtx(t)
	waitSecondaryUp(t, c)
	m, err := c.Manifest(ctx, "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got int
	src, err := c.ReadChunks(ctx, "f.bin", m, 0, len(m.Hashes), func(_ int, d []byte) error { got += len(d); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got != size {
		t.Fatalf("read %d bytes, want %d", got, size)
	}
	if len(src) != 2 || src[prim] == 0 || src[secAddr] == 0 || src[prim]+src[secAddr] != size {
		t.Fatalf("sources %v; want %s and %s both > 0, summing to %d", src, prim, secAddr, size)
	}
}

// TestDownloadSources: DownloadFileWith returns the sources of the bytes
// it fetched, and only those: not what the part file of an earlier
// attempt held.
func TestDownloadSources(t *testing.T) {
	const cs = transfer.MinChunkSize
	root := t.TempDir()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartWith(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}}, servertest.Options{Bundle: b}).Addr
	c := transfer.NewClient(srv, &transfer.ClientOptions{Config: clientConfigBundle(t, b)})
	t.Cleanup(func() { c.Close() })
	data := randomData(6*cs+100, 4)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	local := filepath.Join(t.TempDir(), "f")
	// An earlier attempt got the first two chunks.
	writeFile(t, local+transfer.PartSuffix, data[:2*cs], 0o600, mtime0)
	src, err := c.DownloadFileWith(testCtx(t), "f", local, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Sources{srv: uint64(len(data) - 2*cs)}); !maps.Equal(src, want) {
		t.Fatalf("sources %v, want %v", src, want)
	}
	if got := fileSHA(t, local); got != sha256.Sum256(data) {
		t.Fatal("downloaded file differs from the source")
	}
}

// quiet drops every record: kwik's logs would outlive the tests.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func clientConfigBundle(t *testing.T, b *certgen.Bundle) *kwik.Config {
	t.Helper()
	tlsConf, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return &kwik.Config{TLSConfig: tlsConf, HandshakeTimeout: 5 * time.Second, Logger: quiet()}
}

// waitSecondaryUp makes c dial and waits until a secondary path is up.
func waitSecondaryUp(t *testing.T, c *transfer.Client) {
	t.Helper()
	ctx := testCtx(t)
	if _, err := c.Stat(ctx, ""); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if s, ok := c.SessionStats(); ok && len(s.Paths) > 1 && s.Paths[1].State == kwik.PathUp {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no secondary path up")
		}
	}
}
