package transfer_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/transfer"
)

// TestFiles asks for the files of a directory of every kind: the first
// name gets its manifest whatever its size, with its first chunk; small
// regular files come whole within the budget; the rest is skipped. Each
// manifest equals MANIFEST's answer.
func TestFiles(t *testing.T) {
	const cs = 4096
	root, srv, c := setup(t, cs)
	ctx := testCtx(t)
	mtime := time.Unix(1700000000, 5)
	files := map[string][]byte{
		"big":   randomData(3*cs+5, 1), // three chunks and a bit
		"empty": {},
		"one":   {7},
		"chunk": randomData(cs, 2),
		"late":  randomData(100, 3),
	}
	for name, data := range files {
		writeFile(t, filepath.Join(root, "d", name), data, 0o640, mtime)
	}
	if err := os.Mkdir(filepath.Join(root, "d", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("one", filepath.Join(root, "d", "link")); err != nil {
		t.Fatal(err)
	}
	names := []string{"big", "empty", "one", "chunk", "big", "sub", "gone", "link", "late"}
	// The budget holds big's first chunk and the three small files and
	// the symlink's target (each with a manifest), not late.
	m0, err := c.Manifest(ctx, "d/big")
	if err != nil {
		t.Fatal(err)
	}
	small := func(size int) int {
		m := &transfer.Manifest{Size: int64(size), ChunkSize: cs}
		if size > 0 {
			m.Hashes = make([]transfer.Hash, 1)
		}
		return transfer.FilesCost(m, true)
	}
	budget := transfer.FilesCost(m0, true) + small(0) + small(1) + small(cs) + small(1) + small(100) - 1
	reqs := c.Stats().Requests
	got, err := c.Files(ctx, "d", names, nil, budget)
	if err != nil {
		t.Fatalf("Files: %v", err)
	}
	if n := c.Stats().Requests - reqs; n != 1 {
		t.Errorf("Files sent %d requests, want 1", n)
	}
	if len(got) != len(names) {
		t.Fatalf("%d results for %d names", len(got), len(names))
	}
	for i, name := range names {
		fd := got[i]
		whole := map[int]bool{0: true, 1: true, 2: true, 3: true, 7: true}[i]
		if !whole {
			if fd.Manifest != nil || fd.First != nil {
				t.Errorf("%s (name %d): got a manifest %v and %d bytes, want it skipped", name, i, fd.Manifest != nil, len(fd.First))
			}
			continue
		}
		if fd.Manifest == nil {
			t.Errorf("%s: skipped", name)
			continue
		}
		want, err := c.Manifest(ctx, "d/"+name)
		if err != nil {
			t.Fatal(err)
		}
		if want.Version != fd.Manifest.Version || want.Mode != fd.Manifest.Mode || want.MtimeNs != fd.Manifest.MtimeNs {
			t.Errorf("%s: manifest %+v, MANIFEST says %+v", name, fd.Manifest, want)
		}
		first := files[name]
		if name == "link" {
			first = files["one"] // followed, as MANIFEST follows it
		}
		if len(first) > cs {
			first = first[:cs]
		}
		if fd.First == nil || !bytes.Equal(fd.First, first) {
			t.Errorf("%s: first chunk of %d bytes (nil %v), want %d bytes", name, len(fd.First), fd.First == nil, len(first))
		}
	}
	if s := srv.Primary.Stats(); s.Requests[transfer.OpFiles] != 1 {
		t.Errorf("server counted %d FILES requests, want 1", s.Requests[transfer.OpFiles])
	}

	// A budget too small for big's first chunk still brings its manifest.
	got, err = c.Files(ctx, "d", []string{"big", "one"}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Manifest == nil || got[0].Manifest.Version != m0.Version || got[0].First != nil || got[1].Manifest != nil {
		t.Errorf("Files with a budget of 10 bytes = %+v, want big's manifest alone", got)
	}

	// A version the client holds comes without content; another one
	// (the file changed since) with it.
	mOne, err := c.Manifest(ctx, "d/one")
	if err != nil {
		t.Fatal(err)
	}
	got, err = c.Files(ctx, "d", []string{"one", "chunk", "late"}, []transfer.Hash{mOne.Version, {1}, {}}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Manifest == nil || got[0].Manifest.Version != mOne.Version || got[0].First != nil {
		t.Errorf("one, at the version known: %+v, want its manifest without content", got[0])
	}
	if got[1].First == nil || got[2].First == nil {
		t.Errorf("chunk and late, at versions not known: content %v, %v; want both", got[1].First != nil, got[2].First != nil)
	}

	// A directory that is not one fails the request as LIST would.
	if _, err := c.Files(ctx, "d/one", []string{"x"}, nil, 100); !errors.Is(err, transfer.ErrNotDir) {
		t.Errorf("Files of a regular file = %v, want ErrNotDir", err)
	}
	if _, err := c.Files(ctx, "nope", []string{"x"}, nil, 100); !errors.Is(err, transfer.ErrNotFound) {
		t.Errorf("Files of a missing directory = %v, want ErrNotFound", err)
	}
}
