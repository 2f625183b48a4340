package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestMergePaths(t *testing.T) {
	client := []kwik.PathStats{
		{ID: 0, Addr: "p:1", RemoteAddr: nil, State: kwik.PathUp, SmoothedRTT: 1500 * time.Microsecond, DeliveredBytes: 10, DataBytesReceived: 12, DuplicateBytes: 2},
		{ID: 1, Addr: "s1:1", State: kwik.PathUp},
		{ID: 2, Addr: "s2:1", State: kwik.PathFailed},
	}
	reports := []transfer.PathReport{
		{ID: 0, State: kwik.PathUp, Rate: 100, DeliveredBytes: 8, DeliveredChunks: 1, InFlightBytes: 4},
		{ID: 1, Addr: "s1:1", State: kwik.PathUp, Rate: 0, DeliveredChunks: 2, Strikes: 3},
		{ID: 7, Addr: "gone:1", State: kwik.PathClosed, DeliveredChunks: 9},
	}
	got := mergePaths(client, reports)
	if len(got) != 3 {
		t.Fatalf("merged %d paths, want the client's 3: %+v", len(got), got)
	}
	p0 := got[0]
	if p0.ID != 0 || p0.Remote != "p:1" || p0.State != "up" || p0.RTTMillis != 1.5 || p0.BytesDelivered != 10 || p0.BytesReceived != 12 || p0.Duplicates != 2 {
		t.Errorf("path 0 client fields %+v", p0)
	}
	if p0.RateBytesPerSec == nil || *p0.RateBytesPerSec != 100 || *p0.ChunksDelivered != 1 || *p0.DataBytesDelivered != 8 || *p0.Strikes != 0 || *p0.InFlightBytes != 4 {
		t.Errorf("path 0 coordinator fields %+v", p0)
	}
	p1 := got[1]
	if p1.RateBytesPerSec != nil || p1.ChunksDelivered == nil || *p1.ChunksDelivered != 2 || *p1.Strikes != 3 {
		t.Errorf("path 1 %+v: want no rate (unknown), 2 chunks, 3 strikes", p1)
	}
	p2 := got[2]
	if p2.State != "failed" || p2.ChunksDelivered != nil || p2.Strikes != nil || p2.RateBytesPerSec != nil || p2.InFlightBytes != nil || p2.DataBytesDelivered != nil {
		t.Errorf("path 2 %+v: want failed, coordinator fields absent", p2)
	}
	// Without the primary's answer, every coordinator field is absent.
	for _, p := range mergePaths(client, nil) {
		if p.ChunksDelivered != nil || p.Strikes != nil || p.RateBytesPerSec != nil {
			t.Errorf("path %d without a report: %+v", p.ID, p)
		}
	}
}

func TestPathStatusFromPrimary(t *testing.T) {
	root := t.TempDir()
	const cs = transfer.MinChunkSize
	if err := os.WriteFile(filepath.Join(root, "f"), make([]byte, 5*cs-3), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}})
	c := transfer.NewClient(srv.Addr, &transfer.ClientOptions{Config: srv.ClientConfig()})
	t.Cleanup(func() { c.Close() })
	src := &statusSource{client: c}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if paths, connected, reason := src.pathStatus(ctx); paths != nil || connected || reason == "" {
		t.Errorf("before the first dial: %+v, connected %v, reason %q; want no paths, a reason", paths, connected, reason)
	}
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", m, 0, m.NumChunks(), func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	paths, connected, reason := src.pathStatus(ctx)
	if !connected || reason != "" || len(paths) != 1 {
		t.Fatalf("pathStatus = %+v, connected %v, reason %q; want path 0 with the primary's figures", paths, connected, reason)
	}
	p := paths[0]
	if p.ChunksDelivered == nil || *p.ChunksDelivered != 5 || *p.DataBytesDelivered != 5*cs-3 || *p.Strikes != 0 || p.State != "up" || p.Remote != srv.Addr {
		t.Errorf("path 0 = %+v, want up at %s with 5 chunks, %d bytes, 0 strikes", p, srv.Addr, 5*cs-3)
	}
}

// silentPrimary accepts kwik sessions and request streams and never
// answers.
func silentPrimary(t *testing.T) (addr string, b *certgen.Bundle) {
	t.Helper()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			sess, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer sess.Close()
				for {
					if _, err := sess.AcceptStream(ctx); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), b
}

func TestPathStatusPrimarySilent(t *testing.T) {
	addr, b := silentPrimary(t)
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := transfer.NewClient(addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: cliTLS}})
	t.Cleanup(func() { c.Close() })
	// Dial: the session is up, the request is never answered.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = c.Stat(ctx, "")
	cancel()
	if !errors.Is(err, transfer.ErrUnavailable) {
		t.Fatalf("Stat of a silent primary: %v, want ErrUnavailable", err)
	}
	src := &statusSource{client: c}
	start := time.Now()
	paths, connected, reason := src.pathStatus(context.Background())
	took := time.Since(start)
	if took < PathReportTimeout || took > PathReportTimeout+2*time.Second {
		t.Errorf("pathStatus took %v, want about PathReportTimeout (%v)", took, PathReportTimeout)
	}
	if !connected || reason == "" || len(paths) != 1 || paths[0].State != "up" {
		t.Fatalf("pathStatus = %+v, connected %v, reason %q; want path 0 up, a reason", paths, connected, reason)
	}
	if p := paths[0]; p.ChunksDelivered != nil || p.Strikes != nil || p.RateBytesPerSec != nil || p.InFlightBytes != nil || p.DataBytesDelivered != nil {
		t.Errorf("path 0 = %+v: coordinator fields present without the primary's answer", p)
	}
}
