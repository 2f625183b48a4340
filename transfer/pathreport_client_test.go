package transfer_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestClientPathReport(t *testing.T) {
	const cs = transfer.MinChunkSize
	root, _, c := setup(t, cs)
	ctx := testCtx(t)
	data := randomData(3*cs+1, 4)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", m, 1, 3, func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	rs, err := c.PathReport(ctx)
	if err != nil {
		t.Fatalf("PathReport: %v", err)
	}
	if len(rs) != 1 {
		t.Fatalf("PathReport = %+v, want path 0 alone", rs)
	}
	r := rs[0]
	if r.ID != 0 || r.Addr != "" || r.State != kwik.PathUp || r.DeliveredChunks != 3 || r.DeliveredBytes != 2*cs+1 || r.Strikes != 0 || r.RTT <= 0 {
		t.Errorf("PathReport = %+v, want path 0 up with 3 chunks, %d bytes, an RTT", r, 2*cs+1)
	}
	// A canceled context fails at once, with ErrUnavailable.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.PathReport(canceled); !errors.Is(err, transfer.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("PathReport(canceled) = %v, want ErrUnavailable and context.Canceled", err)
	}
}
