package chunkstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// Environment of the crash child: the store directory and the round.
const (
	crashDirEnv   = "CHUNKSTORE_CRASH_DIR"
	crashRoundEnv = "CHUNKSTORE_CRASH_ROUND"
	crashLimitEnv = "CHUNKSTORE_CRASH_LIMIT" // Options.Limit of the child; none when unset
)

// crashChunk returns chunk i of a crash round: mostly 1 MiB, some small,
// some in between.
func crashChunk(round, i int) ([]byte, [32]byte) {
	size := 1 << 20
	switch i % 4 {
	case 1:
		size = 3000 + i
	case 2:
		size = 200<<10 + i
	}
	return testChunk(uint64(round)<<32|uint64(i), size)
}

// crashOptions are the options of the child and of the parent's checks:
// small segments, so that the child crosses segment rotations.
func crashOptions() *Options {
	return &Options{Logger: quietLogger(), segmentSize: 4 << 20}
}

// crashBlock is the number of chunks a crash child's writer takes at a
// time: one goroutine Puts them one by one, the other stores them with one
// PutVerified.
const crashBlock = 3

// runCrashChild writes chunks and metadata from two goroutines until it is
// killed, printing "ack <round> <i>" after chunk i and its record are
// stored.
func runCrashChild(dir string, round int, limit int64) {
	opts := crashOptions()
	opts.Limit = limit
	s, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex // guards stdout writes and next
	next := 0
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for {
				mu.Lock()
				first := next
				next += crashBlock
				mu.Unlock()
				if first >= 10000 { // a parent that never kills us
					return
				}
				chunks := make([]Chunk, crashBlock)
				for k := range chunks {
					chunks[k].Data, chunks[k].Sum = crashChunk(round, first+k)
				}
				var err error
				if w == 1 {
					err = s.PutVerified(chunks)
				} else {
					for _, c := range chunks {
						if err = s.Put(c); err != nil {
							break
						}
					}
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child put:", err)
					os.Exit(2)
				}
				for k, c := range chunks {
					if err := s.PutMeta(fmt.Sprintf("resume/%d/%d", round, first+k), c.Sum[:]); err != nil {
						fmt.Fprintln(os.Stderr, "child put meta:", err)
						os.Exit(2)
					}
				}
				mu.Lock()
				for k := range chunks {
					fmt.Fprintf(out, "ack %d %d\n", round, first+k)
				}
				err = out.Flush()
				mu.Unlock()
				if err != nil {
					os.Exit(2)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(3)
}

// killCrashChild runs the crash child of TestCrashLeavesOnlyWholeChunks
// for round over dir (with Options.Limit limit when it is > 0), hands each
// acknowledgement it prints to ack, and SIGKILLs it at the killAt-th; the
// acknowledgements already in the pipe then are handed to ack too. It
// fails the test unless the child died of the kill after at least killAt
// acknowledgements, and returns how many it made.
func killCrashChild(t *testing.T, dir string, round, limit, killAt int, ack func(round, i int)) int {
	t.Helper()
	env := []string{crashDirEnv + "=" + dir, crashRoundEnv + "=" + strconv.Itoa(round)}
	if limit > 0 {
		env = append(env, crashLimitEnv+"="+strconv.Itoa(limit))
	}
	c := startChild(t, "TestCrashLeavesOnlyWholeChunks", env...)
	n := 0
	for c.out.Scan() {
		var r, i int
		if _, err := fmt.Sscanf(c.out.Text(), "ack %d %d", &r, &i); err != nil {
			continue
		}
		ack(r, i)
		if n++; n == killAt {
			if err := c.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := c.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ProcessState.String() != "signal: killed" {
		t.Fatalf("round %d: child ended with %v, want killed; stderr:\n%s", round, err, c.stderr.String())
	}
	if n < killAt {
		t.Fatalf("round %d: child acknowledged %d Puts before dying, want %d", round, n, killAt)
	}
	return n
}

// TestCrashLeavesOnlyWholeChunks SIGKILLs a child process that is writing
// chunks, four times over the same directory, and checks after each kill
// that every chunk the child acknowledged is there, that every chunk in
// the store is whole and verified, and that the unindexed bytes a write cut
// short left at a segment's end are gone.
func TestCrashLeavesOnlyWholeChunks(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
		limit, _ := strconv.ParseInt(os.Getenv(crashLimitEnv), 10, 64)
		runCrashChild(dir, round, limit)
		return
	}
	dir := t.TempDir()
	acked := map[[2]int]bool{} // {round, i} of every acknowledged Put
	for round := range 4 {
		// Kill after some acknowledgements, while both writers are mid-Put,
		// then collect the acknowledgements already in the pipe.
		killCrashChild(t, dir, round, 0, 20+7*round, func(r, i int) { acked[[2]int{r, i}] = true })
		checkAfterCrash(t, dir, acked)
	}
}

// checkAfterCrash opens the store and checks it: acknowledged chunks and
// records are present and exact, every stored chunk verifies, the counters
// match, and every segment file ends where its last recorded chunk ends.
func checkAfterCrash(t *testing.T, dir string, acked map[[2]int]bool) {
	t.Helper()
	before := dirBytes(t, dir)
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	for k := range acked {
		data, sum := crashChunk(k[0], k[1])
		got, err := s.Get(sum, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("acknowledged chunk %v: %v", k, err)
		}
		rec, err := s.GetMeta(fmt.Sprintf("resume/%d/%d", k[0], k[1]))
		if err != nil || !bytes.Equal(rec, sum[:]) {
			t.Fatalf("acknowledged record %v: %x, %v", k, rec, err)
		}
	}

	// Every chunk in the store, acknowledged or not, is whole.
	locs := map[[32]byte]location{}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{nsInfo}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var sum [32]byte
			copy(sum[:], it.Item().Key()[1:])
			err := it.Item().Value(func(v []byte) error {
				var err error
				locs[sum], err = decodeInfo(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("chunk record %x: %w", sum[:4], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends := map[string]int64{} // segment file -> end of its last chunk
	for sum, loc := range locs {
		got, err := s.Get(sum, nil)
		if err != nil {
			t.Fatalf("stored chunk %x: %v", sum[:4], err)
		}
		total += int64(len(got))
		p := filepath.Join(dir, segmentsDir, segmentName(loc.seg))
		ends[p] = max(ends[p], loc.end())
	}
	st := s.Stats()
	if st.Corrupt != 0 || st.Chunks != int64(len(locs)) || st.ChunkBytes != total {
		t.Fatalf("Stats = %+v; want Corrupt 0, Chunks %d, ChunkBytes %d", st, len(locs), total)
	}
	segs := segmentFiles(t, dir)
	for _, p := range segs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if end, ok := ends[p]; !ok || fi.Size() != end {
			t.Fatalf("segment %s holds %d bytes; its last chunk ends at %d (recorded: %v)", filepath.Base(p), fi.Size(), end, ok)
		}
	}
	t.Logf("after kill: %d chunks stored in %d segments, %d acknowledged; Open cut %d unindexed bytes",
		len(locs), len(segs), len(acked), before-dirBytes(t, dir))
}

// dirBytes returns the total size of the segment files of the store in dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, p := range segmentFiles(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// Environment of the torn-write child: the store directory.
const tornDirEnv = "CHUNKSTORE_TORN_DIR"

// runTornChild stores chunk tornChunk(0), then appends chunk tornChunk(1),
// cuts it in half as a crash in the middle of the write would, prints
// "appended" and waits to be killed before it commits the chunk's record.
func runTornChild(dir string) {
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	a, sa := tornChunk(0)
	if err := s.Put(Chunk{Sum: sa, Data: a}); err != nil {
		fmt.Fprintln(os.Stderr, "child put:", err)
		os.Exit(2)
	}
	s.afterAppend = func(seg uint32, off, n int64) {
		if err := os.Truncate(filepath.Join(s.app.dir, segmentName(seg)), off+n/2); err != nil {
			fmt.Fprintln(os.Stderr, "child truncate:", err)
			os.Exit(2)
		}
		fmt.Println("appended")
		select {} // killed here
	}
	b, sb := tornChunk(1)
	s.Put(Chunk{Sum: sb, Data: b})
	os.Exit(3)
}

// tornChunk returns chunk i of the torn-write test.
func tornChunk(i int) ([]byte, [32]byte) { return testChunk(uint64(1200+i), 1<<20) }

// TestKilledMidWriteLeavesNoTornChunk kills a child whose write of a chunk
// was cut short and whose index entry was never committed: after Open the
// chunk is absent (never served torn), the torn bytes are cut off, the
// chunk stored before it is intact, and the torn chunk can be stored again.
func TestKilledMidWriteLeavesNoTornChunk(t *testing.T) {
	if dir := os.Getenv(tornDirEnv); dir != "" {
		runTornChild(dir)
		return
	}
	dir := t.TempDir()
	runChildUntil(t, "TestKilledMidWriteLeavesNoTornChunk", "appended", tornDirEnv+"="+dir)
	if got := dirBytes(t, dir); got != 1<<20+1<<19 {
		t.Fatalf("segments hold %d bytes before reopen, want a chunk and a half", got)
	}

	s := openTest(t, dir)
	a, sa := tornChunk(0)
	b, sb := tornChunk(1)
	if got, want := events(s.Stats()), (Stats{Chunks: 1, ChunkBytes: 1 << 20}); got != want {
		t.Fatalf("Stats after reopen = %+v, want %+v", got, want)
	}
	if got := segmentBytes(t, s); got != 1<<20 {
		t.Fatalf("segments hold %d bytes after reopen, want %d (torn tail cut)", got, 1<<20)
	}
	if got, err := s.Get(sb, nil); !errors.Is(err, ErrNotFound) || got != nil {
		t.Fatalf("Get of the torn chunk = %d bytes, %v; want nil, ErrNotFound", len(got), err)
	}
	if got, err := s.Get(sa, nil); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Get of the chunk before the torn one: %v", err)
	}
	mustPut(t, s, sb, b)
	if got, err := s.Get(sb, nil); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get of the torn chunk stored again: %v", err)
	}
	if loc, _ := locate(t, s, sb); loc.off != 1<<20 {
		t.Fatalf("chunk stored again at offset %d, want %d (where the torn bytes were)", loc.off, 1<<20)
	}
}
