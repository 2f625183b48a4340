package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestCrashWhileEvictingLeavesOnlyWholeChunks SIGKILLs the crash child of
// TestCrashLeavesOnlyWholeChunks while it writes into a store limited to
// 12 MiB, three times over the same directory, each time well past the
// limit, so that kills land during evictions too. After each kill the
// store holds only whole verified chunks within its limit, its segment
// files take exactly DiskBytes of disk (whatever evictions the kill cut
// short are finished by Open), and the last acknowledged chunk is there.
func TestCrashWhileEvictingLeavesOnlyWholeChunks(t *testing.T) {
	const limit = 12 << 20
	dir := t.TempDir()
	for round := range 3 {
		// About 30 MiB of chunks, then more each round.
		last := -1
		n := killCrashChild(t, dir, round, limit, 55+11*round, func(_, i int) { last = max(last, i) })

		s, err := Open(dir, &Options{Logger: quietLogger(), Limit: limit, segmentSize: 4 << 20})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		checkStore(t, s, dir)
		st := s.Stats()
		if st.DiskBytes > limit {
			t.Fatalf("round %d: DiskBytes %d over the limit", round, st.DiskBytes)
		}
		data, sum := crashChunk(round, last)
		if got, err := s.Get(sum, nil); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: last acknowledged chunk %d: %v", round, last, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after %d acknowledgements; %d chunks, %d disk bytes left", round, n, st.Chunks, st.DiskBytes)
	}
}

// Environment of the eviction-kill child: the store directory.
const evictDirEnv = "CHUNKSTORE_EVICT_DIR"

// evictChunk returns chunk i of the eviction-kill test: 256 KiB, so that a
// 1 MiB segment holds four.
func evictChunk(i int) ([]byte, [32]byte) { return testChunk(uint64(5300+i), 256<<10) }

// runEvictChild fills a store limited to 4 MiB with sixteen chunks, then
// stores four more with one PutVerified, whose eviction takes chunks 0 to
// 5: their records are committed gone, and the child prints "evicted" and
// waits to be killed before it releases their space.
func runEvictChild(dir string) {
	s, err := Open(dir, &Options{Logger: quietLogger(), Limit: 4 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	for i := range 16 {
		data, sum := evictChunk(i)
		if err := s.Put(Chunk{Sum: sum, Data: data}); err != nil {
			fmt.Fprintln(os.Stderr, "child put:", err)
			os.Exit(2)
		}
	}
	s.afterEvict = func() {
		fmt.Println("evicted")
		select {} // killed here
	}
	more := make([]Chunk, 4)
	for k := range more {
		more[k].Data, more[k].Sum = evictChunk(16 + k)
	}
	s.PutVerified(more)
	os.Exit(3)
}

// TestKilledMidEvictionReleasesSpaceOnOpen kills a child between the
// commit that removes evicted chunks' records and the release of their
// space: segment 1 (chunks 0 to 3) has no chunk left and segment 2 lost
// chunks 4 and 5 to the eviction. Open removes segment 1, punches the
// hole segment 2 should have, and holds exactly chunks 6 to 15, whole.
func TestKilledMidEvictionReleasesSpaceOnOpen(t *testing.T) {
	if dir := os.Getenv(evictDirEnv); dir != "" {
		runEvictChild(dir)
		return
	}
	dir := t.TempDir()
	runChildUntil(t, "TestKilledMidEvictionReleasesSpaceOnOpen", "evicted", evictDirEnv+"="+dir)
	segs := segmentFiles(t, dir)
	if len(segs) != 4 || segmentsAllocated(t, dir) != 4<<20 {
		t.Fatalf("before reopen: %d segments taking %d bytes; want 4 full ones (nothing released)", len(segs), segmentsAllocated(t, dir))
	}

	s := openLimited(t, dir, 4<<20, false)
	checkStore(t, s, dir)
	var want []int
	for i := 6; i < 16; i++ {
		want = append(want, i)
	}
	var got []int
	for i := range 20 {
		_, sum := evictChunk(i)
		if ok, _ := s.Has(sum); ok {
			got = append(got, i)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks after reopen: %v, want %v", got, want)
	}
	if _, err := os.Stat(segs[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment 1, without chunks: %v; want it removed", err)
	}
	st := s.Stats()
	if st.DiskBytes != 10*256<<10 || st.HolesPunched != 1 || st.PunchedBytes != 512<<10 {
		t.Fatalf("Stats = %+v; want 2.5 MiB held, one hole of 512 KiB punched by Open", st)
	}
	// The four chunks never written can be stored now.
	for i := 16; i < 20; i++ {
		data, sum := evictChunk(i)
		mustPut(t, s, sum, data)
	}
	checkStore(t, s, dir)
}
