package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// Peers that ask the primary for large replies all at once: the primary's
// peak resident set (VmHWM, binaries without the race detector: see
// usePlainBinaries) must stay within a bound set by its reply budget
// (server.PrimaryOptions.ReplyBudget, 64 MiB), not grow with the number of
// requests.

// hugeDirEntries is the size of the directory TestPrimaryMemoryHugeListing
// lists; hugeLists how many LISTs of it are asked for at once.
const (
	hugeDirEntries = 200_000
	hugeLists      = 16
)

// makeHugeDir creates dir with n entries named f000000, f000001, ...: hard
// links to a few empty files next to it (ext4 allows 65,000 links to a
// file), which is faster than creating n files.
func makeHugeDir(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const perSource = 50_000
	var src string
	for i := range n {
		if i%perSource == 0 {
			src = filepath.Join(filepath.Dir(dir), fmt.Sprintf("link-source-%d", i/perSource))
			if err := os.WriteFile(src, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Link(src, filepath.Join(dir, fmt.Sprintf("f%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// memoryClients returns n transfer clients of p, each on a session of its
// own, spread over the source addresses 127.0.0.1 to 127.0.0.4 so that no
// address exceeds the listener's per-source session limit.
func memoryClients(t *testing.T, p *primary, n int) []*transfer.Client {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	cs := make([]*transfer.Client, n)
	for i := range cs {
		conf := &kwik.Config{TLSConfig: clientTLS(t, p.certs), LocalAddr: fmt.Sprintf("127.0.0.%d:0", 1+i%4), Logger: quiet}
		cs[i] = transfer.NewClient(p.addr, &transfer.ClientOptions{Config: conf, Logger: quiet})
		t.Cleanup(func() { cs[i].Close() })
	}
	// Set the sessions up before the measured requests.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range cs {
		wg.Go(func() { _, errs[i] = c.Stat(ctx, "") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: STAT of the root: %v", i, err)
		}
	}
	return cs
}

// hugeListingHWMKiB bounds the growth of the primary's VmHWM while it
// answers hugeLists LISTs of hugeDirEntries entries at once. The primary
// charges each listing about 48 MiB against its 64 MiB reply budget while
// it builds it (200,000 transfer.Attr of 56 bytes, their names, and the
// encoded, compressed and framed body, at the most each can take), so it
// builds one at a time, then holds each reply (a few MiB) until sent; the
// Go heap may grow to twice what is live before it is collected. Measured
// on 2 cores: +106 MiB; before the reply budget, +543 MiB (every listing
// built at once). 200 MiB leaves room for scheduling and GC noise and is
// well below the latter.
const hugeListingHWMKiB = 200 << 10

// TestPrimaryMemoryHugeListing lists a directory of 200,000 entries from
// hugeLists clients at once: every client gets all 200,000 entries, and
// the primary's peak resident set grows by less than hugeListingHWMKiB.
func TestPrimaryMemoryHugeListing(t *testing.T) {
	usePlainBinaries(t)
	start := time.Now()
	root := filepath.Join(t.TempDir(), "tree")
	makeHugeDir(t, filepath.Join(root, "huge"), hugeDirEntries)
	t.Logf("created %d entries in %v", hugeDirEntries, time.Since(start).Round(time.Millisecond))
	p := startPrimary(t, root, certs(t))
	cs := memoryClients(t, p, hugeLists)
	base := vmHWMKiB(t, p.proc)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start = time.Now()
	var wg sync.WaitGroup
	got := make([]int, len(cs))
	errs := make([]error, len(cs))
	for i, c := range cs {
		wg.Go(func() {
			entries, err := c.List(ctx, "huge")
			got[i], errs[i] = len(entries), err
		})
	}
	wg.Wait()
	peak := vmHWMKiB(t, p.proc)
	t.Logf("%d LISTs of %d entries in %v: primary VmHWM %d MiB before, %d MiB after (bound: +%d MiB)",
		len(cs), hugeDirEntries, time.Since(start).Round(time.Millisecond), base>>10, peak>>10, hugeListingHWMKiB>>10)
	for i := range cs {
		if errs[i] != nil || got[i] != hugeDirEntries {
			t.Errorf("client %d: LIST gave %d entries, %v; want %d", i, got[i], errs[i], hugeDirEntries)
		}
	}
	if peak-base > hugeListingHWMKiB {
		t.Errorf("the primary's VmHWM grew by %d MiB, more than %d MiB", (peak-base)>>10, hugeListingHWMKiB>>10)
	}
}

// Manifest of TestPrimaryMemoryManyManifests: a file of bigManifestChunks
// chunks of bigManifestChunk bytes, each different, so that its manifest
// is 4 MiB of hashes that do not compress; manifestClients ask for it at
// once.
const (
	bigManifestChunk  = 4096
	bigManifestChunks = 128 << 10
	manifestClients   = 50
)

// manyManifestsHWMKiB bounds the growth of the primary's VmHWM while
// manifestClients clients ask at once for the 4 MiB manifest of a 512 MiB
// file. The primary hashes the file once (a chunk buffer and the
// manifest's 4 MiB of hashes), encodes the reply once (the encoded
// manifest, its compressed copy and the reply: at most 12 MiB, then 4 MiB
// kept in the cache with the manifest), and sends that one reply to
// every client, at most 16 at a time (the 64 MiB reply budget counts each
// 4 MiB reply), plus what QUIC holds of the replies in flight. Measured on
// 2 cores: +46 MiB; when every request encoded its own reply, +642 MiB.
// 128 MiB leaves room for noise and is far below the latter.
const manyManifestsHWMKiB = 128 << 10

// writeDistinctChunks writes a file of n chunks of size bytes, each zero
// but for its index in its first 8 bytes, so that every chunk hash
// differs.
func writeDistinctChunks(t *testing.T, path string, size, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	per := len(buf) / size
	for i := 0; i < n; i += per {
		for j := range per {
			binary.LittleEndian.PutUint64(buf[j*size:], uint64(i+j))
		}
		if _, err := f.Write(buf[:min(per, n-i)*size]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPrimaryMemoryManyManifests has manifestClients clients ask at once
// for the manifest of a 512 MiB file in 4 KiB chunks (4 MiB of hashes):
// every client gets the same, complete manifest, and the primary's peak
// resident set grows by less than manyManifestsHWMKiB.
func TestPrimaryMemoryManyManifests(t *testing.T) {
	usePlainBinaries(t)
	root := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	writeDistinctChunks(t, filepath.Join(root, "big.bin"), bigManifestChunk, bigManifestChunks)
	p := startPrimary(t, root, certs(t), "--chunk-size", fmt.Sprint(bigManifestChunk))
	cs := memoryClients(t, p, manifestClients)
	base := vmHWMKiB(t, p.proc)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	ms := make([]*transfer.Manifest, len(cs))
	errs := make([]error, len(cs))
	for i, c := range cs {
		wg.Go(func() { ms[i], errs[i] = c.Manifest(ctx, "big.bin") })
	}
	wg.Wait()
	peak := vmHWMKiB(t, p.proc)
	t.Logf("%d MANIFESTs of %d chunks in %v: primary VmHWM %d MiB before, %d MiB after (bound: +%d MiB)",
		len(cs), bigManifestChunks, time.Since(start).Round(time.Millisecond), base>>10, peak>>10, manyManifestsHWMKiB>>10)
	var version transfer.Hash
	for i, m := range ms {
		switch {
		case errs[i] != nil:
			t.Errorf("client %d: MANIFEST: %v", i, errs[i])
		case len(m.Hashes) != bigManifestChunks:
			t.Errorf("client %d: manifest of %d chunks, want %d", i, len(m.Hashes), bigManifestChunks)
		case version == transfer.Hash{}:
			version = m.Version
		case m.Version != version:
			t.Errorf("client %d: manifest version %.12s, another client's %.12s", i, m.Version, version)
		}
	}
	if peak-base > manyManifestsHWMKiB {
		t.Errorf("the primary's VmHWM grew by %d MiB, more than %d MiB", (peak-base)>>10, manyManifestsHWMKiB>>10)
	}
}
