package chunkstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// Environment of the crash child: the store directory and the round.
const (
	crashDirEnv   = "CHUNKSTORE_CRASH_DIR"
	crashRoundEnv = "CHUNKSTORE_CRASH_ROUND"
)

// crashChunk returns chunk i of a crash round: mostly 1 MiB, some small
// enough to live inline in the LSM tree, some in between.
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
// small value log files, so that the child crosses file rotations.
func crashOptions() *Options {
	return &Options{Logger: quietLogger(), valueLogFileSize: 4 << 20}
}

// runCrashChild writes chunks and metadata from two goroutines until it is
// killed, printing "ack <round> <i>" after each Put returns.
func runCrashChild(dir string, round int) {
	s, err := Open(dir, crashOptions())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex // guards stdout writes and next
	next := 0
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= 10000 { // a parent that never kills us
					return
				}
				data, sum := crashChunk(round, i)
				if err := s.Put(sum, data); err != nil {
					fmt.Fprintln(os.Stderr, "child put:", err)
					os.Exit(2)
				}
				if err := s.PutMeta(fmt.Sprintf("resume/%d/%d", round, i), sum[:]); err != nil {
					fmt.Fprintln(os.Stderr, "child put meta:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %d %d\n", round, i)
				err := out.Flush()
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

// TestCrashLeavesOnlyWholeChunks SIGKILLs a child process that is writing
// chunks, four times over the same directory, and checks after each kill
// that every chunk the child acknowledged is there and that every chunk in
// the store is whole and verified.
func TestCrashLeavesOnlyWholeChunks(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
		runCrashChild(dir, round)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	acked := map[[2]int]bool{} // {round, i} of every acknowledged Put
	for round := range 4 {
		cmd := exec.Command(exe, "-test.run=^TestCrashLeavesOnlyWholeChunks$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after some acknowledgements, while both writers are mid-Put,
		// then collect the acknowledgements already in the pipe.
		killAt := 20 + 7*round
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			var r, i int
			if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &r, &i); err != nil {
				continue
			}
			acked[[2]int{r, i}] = true
			if n++; n == killAt {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ProcessState.String() != "signal: killed" {
			t.Fatalf("round %d: child ended with %v, want killed; stderr:\n%s", round, err, stderr.String())
		}
		if n < killAt {
			t.Fatalf("round %d: child acknowledged %d Puts before dying, want %d", round, n, killAt)
		}
		checkAfterCrash(t, dir, acked)
	}
}

// checkAfterCrash opens the store and checks it: acknowledged chunks and
// records are present and exact, every stored chunk verifies, chunk and
// info records pair up, and the counters match.
func checkAfterCrash(t *testing.T, dir string, acked map[[2]int]bool) {
	t.Helper()
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
	var sums [][32]byte
	infos := map[[32]byte]bool{}
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			var sum [32]byte
			switch {
			case len(k) == 33 && k[0] == nsChunk:
				copy(sum[:], k[1:])
				sums = append(sums, sum)
			case len(k) == 33 && k[0] == nsInfo:
				copy(sum[:], k[1:])
				infos[sum] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sum := range sums {
		got, err := s.Get(sum, nil)
		if err != nil {
			t.Fatalf("stored chunk %x: %v", sum[:4], err)
		}
		total += int64(len(got))
		if !infos[sum] {
			t.Fatalf("chunk %x has no info record", sum[:4])
		}
		delete(infos, sum)
	}
	if len(infos) != 0 {
		t.Fatalf("%d info records without a chunk", len(infos))
	}
	st := s.Stats()
	if st.Corrupt != 0 || st.Chunks != int64(len(sums)) || st.ChunkBytes != total {
		t.Fatalf("Stats = %+v; want Corrupt 0, Chunks %d, ChunkBytes %d", st, len(sums), total)
	}
	t.Logf("after kill: %d chunks stored, %d acknowledged", len(sums), len(acked))
}
