package chunkstore

import (
	"errors"
	"path/filepath"
	"testing"
)

// openAuto opens the store in dir with Limit AutoLimit, as if free bytes
// were free on its filesystem, and closes it when the test ends.
func openAuto(t *testing.T, dir string, free int64) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Logger: quietLogger(), Limit: AutoLimit,
		freeSpace: func(string) (int64, error) { return free, nil }})
	if err != nil {
		t.Fatalf("Open(%s, AutoLimit): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestAutoLimitOfNewStore: a store that does not exist yet gets half of
// the free space.
func TestAutoLimitOfNewStore(t *testing.T) {
	s := openAuto(t, filepath.Join(t.TempDir(), "a", "store"), 100<<20)
	if got, want := s.Limit(), int64(50<<20); got != want || s.Stats().Limit != want {
		t.Fatalf("Limit() = %d, Stats().Limit = %d; want %d", got, s.Stats().Limit, want)
	}
}

// TestAutoLimitCountsTheChunksAsFree: reopened, a store counts the space
// its segment files take as free, so a full cache keeps its limit.
func TestAutoLimitCountsTheChunksAsFree(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	disk := s.Stats().DiskBytes
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	held := segmentsAllocated(t, dir)
	if held < disk {
		t.Fatalf("segment files take %d bytes, less than the %d of DiskBytes", held, disk)
	}
	const free = 10 << 20
	s = openAuto(t, dir, free)
	if got, want := s.Limit(), (free+held)/2; got != want {
		t.Fatalf("Limit() = %d, want (%d free + %d held)/2 = %d", got, free, held, want)
	}
	if st := s.Stats(); st.Chunks != 6 || st.Evicted != 0 {
		t.Fatalf("stats %+v; want the 6 chunks kept, none evicted", st)
	}
}

// TestAutoLimitEvictsOnOpen: with little free space left, the limit Open
// chooses is under what the store holds, and Open evicts down to it.
func TestAutoLimitEvictsOnOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		data, sum := mib(i)
		mustPut(t, s, sum, data)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	held := segmentsAllocated(t, dir)
	s = openAuto(t, dir, 0)
	st := s.Stats()
	if st.Limit != held/2 || st.Evicted == 0 || st.DiskBytes > st.Limit {
		t.Fatalf("stats %+v; want Limit %d (half of the %d held), chunks evicted down to it", st, held/2, held)
	}
	checkStore(t, s, dir)
}

// TestAutoLimitOfAFullDisk: no free space and an empty store still make
// a limit (1 byte), not "no limit".
func TestAutoLimitOfAFullDisk(t *testing.T) {
	s := openAuto(t, t.TempDir(), 0)
	if got := s.Limit(); got != 1 {
		t.Fatalf("Limit() = %d, want 1", got)
	}
}

// TestAutoLimitFromTheFilesystem: without a stand-in, the free space is
// the filesystem's, and the limit half of it.
func TestAutoLimitFromTheFilesystem(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: quietLogger(), Limit: AutoLimit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	free, err := statfsFree(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Other processes change the free space between the two looks at it:
	// allow them 4 GiB of writes or deletes.
	const slack = 4 << 30
	if l := s.Limit(); l < 1 || 2*l < free-slack || 2*l > free+slack {
		t.Fatalf("Limit() = %d with %d bytes free; want about half", l, free)
	}
}

// TestAutoLimitFailsWithTheFreeSpace: an error finding the free space
// fails Open.
func TestAutoLimitFailsWithTheFreeSpace(t *testing.T) {
	boom := errors.New("statfs failed")
	_, err := Open(t.TempDir(), &Options{Logger: quietLogger(), Limit: AutoLimit,
		freeSpace: func(string) (int64, error) { return 0, boom }})
	if !errors.Is(err, boom) {
		t.Fatalf("Open = %v, want the free-space error", err)
	}
}
