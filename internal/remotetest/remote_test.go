package remotetest

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/kwikfs/kwikfs/transfer"
)

// cs is the chunk size of the tests' files.
const cs = transfer.MinChunkSize

// TestReadChunksDeliversCountsAndCredits: chunks come in copies of their
// own, the counters are exact and the Sources credit Source with the
// bytes delivered.
func TestReadChunksDeliversCountsAndCredits(t *testing.T) {
	r := New(cs)
	data := Content("f", 2*cs+cs/2)
	m := r.File("d/f", 0o644, 1, data)
	var got []byte
	var bufs [][]byte
	src, err := r.ReadChunks(context.Background(), "d/f", m, 1, 2, func(i int, b []byte) error {
		got = append(got, b...)
		bufs = append(bufs, b)
		return nil
	})
	if err != nil || !bytes.Equal(got, data[cs:]) {
		t.Fatalf("ReadChunks = %q, %v; want chunks 1 and 2", got, err)
	}
	bufs[0][0] ^= 1 // deliver may keep (and so touch) its buffer
	if e := r.Entry("d/f"); !bytes.Equal(e.Data, data) {
		t.Fatal("a delivered buffer shares the file's bytes")
	}
	if want := (transfer.Sources{DefaultSource: uint64(len(data) - cs)}); !maps.Equal(src, want) {
		t.Fatalf("sources %v, want %v", src, want)
	}
	if r.ReadCalls.Load() != 1 || r.ChunksSent.Load() != 2 || r.BytesSent.Load() != int64(len(data)-cs) || r.Outstanding.Load() != 0 || r.MaxOutstanding.Load() != 2 {
		t.Fatalf("counters: %d calls, %d chunks, %d bytes, %d outstanding (peak %d)",
			r.ReadCalls.Load(), r.ChunksSent.Load(), r.BytesSent.Load(), r.Outstanding.Load(), r.MaxOutstanding.Load())
	}
	if err := errors.Join(m.Verify(1, got[:cs]), m.Verify(2, got[cs:])); err != nil {
		t.Fatalf("delivered chunks do not verify: %v", err)
	}
}

// TestReadChunksErrors: a stopped deliver, a stale manifest, a corrupt
// switch and the Down modes, as the real client reports them.
func TestReadChunksErrors(t *testing.T) {
	r := New(cs)
	m := r.File("f", 0o644, 1, Content("f", 3*cs))
	ctx := context.Background()
	stop := errors.New("stop")
	src, err := r.ReadChunks(ctx, "f", m, 0, 3, func(i int, _ []byte) error {
		if i == 1 {
			return stop
		}
		return nil
	})
	if err != stop || !maps.Equal(src, transfer.Sources{DefaultSource: 2 * cs}) {
		t.Fatalf("stopped ReadChunks = %v, %v; want deliver's error and 2 chunks' bytes", src, err)
	}
	r.Corrupt.Store(true)
	_, err = r.ReadChunks(ctx, "f", m, 0, 1, func(i int, b []byte) error { return m.Verify(i, b) })
	if !errors.Is(err, transfer.ErrCorrupt) {
		t.Fatalf("corrupt chunk: %v, want transfer.ErrCorrupt from Verify", err)
	}
	r.Corrupt.Store(false)
	r.File("f", 0o644, 2, Content("g", 3*cs))
	if _, err := r.ReadChunks(ctx, "f", m, 0, 1, func(int, []byte) error { return nil }); !errors.Is(err, transfer.ErrStale) {
		t.Fatalf("old manifest: %v, want transfer.ErrStale", err)
	}
	r.Down.Store(Fail)
	if _, err := r.Stat(ctx, "f"); !errors.Is(err, transfer.ErrUnavailable) {
		t.Fatalf("Stat while down: %v, want transfer.ErrUnavailable", err)
	}
	r.Down.Store(Hang)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.List(cctx, ""); !errors.Is(err, transfer.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("List while hanging, ctx done: %v, want transfer.ErrUnavailable and context.Canceled", err)
	}
	r.Down.Store(Up)
	r.FailCalls.Store(1)
	if _, err := r.Manifest(ctx, "f"); !errors.Is(err, transfer.ErrUnavailable) {
		t.Fatalf("Manifest with a failure left: %v, want transfer.ErrUnavailable", err)
	}
	if _, err := r.Manifest(ctx, "f"); err != nil || r.FailCalls.Load() != 0 {
		t.Fatalf("Manifest after it: %v, %d failures left", err, r.FailCalls.Load())
	}
	if r.Stats.Load() != 1 || r.Lists.Load() != 1 || r.ListsOf("") != 1 || r.Manifests.Load() != 2 {
		t.Fatalf("counters: %d stats, %d lists (%d of the root), %d manifests", r.Stats.Load(), r.Lists.Load(), r.ListsOf(""), r.Manifests.Load())
	}
}

// TestTree: the tree the test builds is what List, Stat, Readlink and
// Manifest answer.
func TestTree(t *testing.T) {
	r := New(cs)
	r.Mkdir("a/b", 0o700)
	r.File("a/f", 0o600, 5, []byte("x"))
	r.Symlink("a/l", "f", 6)
	r.SetAttr("a/bad", transfer.Attr{Mode: transfer.ModeRegular | 0o644, Size: 3})
	r.FailList("a/b", transfer.ErrPermission)
	ctx := context.Background()
	list, err := r.List(ctx, "a")
	if err != nil || len(list) != 4 || list[0].Name != "b" || list[1].Name != "bad" || list[2].Name != "f" || list[3].Name != "l" {
		t.Fatalf("List(a) = %+v, %v", list, err)
	}
	if target, err := r.Readlink(ctx, "a/l"); err != nil || target != "f" {
		t.Fatalf("Readlink = %q, %v", target, err)
	}
	if _, err := r.Manifest(ctx, "a/bad"); !errors.Is(err, transfer.ErrIsDir) {
		t.Fatalf("Manifest of a file without one: %v, want transfer.ErrIsDir", err)
	}
	if _, err := r.List(ctx, "a/b"); !errors.Is(err, transfer.ErrPermission) {
		t.Fatalf("List(a/b) = %v, want transfer.ErrPermission", err)
	}
	if _, err := r.List(ctx, "a/f"); !errors.Is(err, transfer.ErrNotDir) {
		t.Fatalf("List(a/f) = %v, want transfer.ErrNotDir", err)
	}
	r.Remove("a/f")
	if _, err := r.Stat(ctx, "a/f"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Stat(removed) = %v, want transfer.ErrNotFound", err)
	}
	if names := r.Names(); !slices.Equal(names, []string{"", "a", "a/b", "a/bad", "a/l"}) {
		t.Fatalf("Names() = %q", names)
	}
}
