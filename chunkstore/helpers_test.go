package chunkstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// testChunk returns size deterministic pseudo-random bytes for seed, and
// their SHA-256.
func testChunk(seed uint64, size int) ([]byte, [32]byte) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(size))
	data := make([]byte, size)
	rand.NewChaCha8(key).Read(data)
	return data, sha256.Sum256(data)
}

// quietLogger discards everything.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTest opens a store in dir and closes it when the test ends.
func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, &Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// mustPut stores a chunk or fails the test.
func mustPut(t testing.TB, s *Store, sum [32]byte, data []byte) {
	t.Helper()
	if err := s.Put(Chunk{Sum: sum, Data: data}); err != nil {
		t.Fatalf("Put(%x): %v", sum[:4], err)
	}
}

// countKeys counts the Badger keys in namespace ns.
func countKeys(t testing.TB, s *Store, ns byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{ns}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("count keys %q: %v", ns, err)
	}
	return n
}

// segmentFiles returns the paths of the segment files of the store in dir,
// in segment order.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, segmentsDir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	return paths
}

// segmentBytes returns the total size of s's segment files.
func segmentBytes(t testing.TB, s *Store) int64 {
	t.Helper()
	var n int64
	for _, p := range segmentFiles(t, filepath.Dir(s.app.dir)) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// locate returns where the chunk record of sum says the chunk is, and the
// path of its segment file.
func locate(t testing.TB, s *Store, sum [32]byte) (location, string) {
	t.Helper()
	var loc location
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(infoKey(sum))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			loc, err = decodeInfo(v)
			return err
		})
	})
	if err != nil {
		t.Fatalf("locate %x: %v", sum[:4], err)
	}
	return loc, filepath.Join(s.app.dir, segmentName(loc.seg))
}

// flipByte xors byte off of file p with mask, in place (an open store
// reads the change at once: same page cache).
func flipByte(t testing.TB, p string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// events returns st without the figures of disk space (DiskBytes, Limit,
// the pinned figures, the space released): the tests of space and
// eviction check those; the others compare what happened.
func events(st Stats) Stats {
	st.DiskBytes, st.Limit, st.PinnedChunks, st.PinnedBytes = 0, 0, 0, 0
	st.HolesPunched, st.PunchedBytes, st.SegmentsRemoved = 0, 0, 0
	return st
}

// allocated returns the disk space of file p: its allocated blocks.
func allocated(t testing.TB, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// segmentsAllocated returns the disk space of the segment files of the
// store in dir.
func segmentsAllocated(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	for _, p := range segmentFiles(t, dir) {
		n += allocated(t, p)
	}
	return n
}

// child is this test binary run again as a child process that runs one
// test; its stdout is read line by line.
type child struct {
	cmd    *exec.Cmd
	out    *bufio.Scanner // the child's stdout
	stderr bytes.Buffer   // all the child wrote to stderr
}

// startChild starts this test binary as a child that runs only the test
// testName, with env ("NAME=value" entries) added to its environment.
func startChild(t *testing.T, testName string, env ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe, "-test.run=^"+testName+"$")}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.out = bufio.NewScanner(stdout)
	return c
}

// runChildUntil starts the child of startChild, waits for it to print
// word as its first line, then kills it with SIGKILL and waits for it to
// end. If the child prints another line first or ends without printing
// one, it kills the child and fails the test.
func runChildUntil(t *testing.T, testName, word string, env ...string) {
	t.Helper()
	c := startChild(t, testName, env...)
	if !c.out.Scan() || c.out.Text() != word {
		c.cmd.Process.Kill()
		c.cmd.Wait()
		t.Fatalf("child said %q, want %s; stderr:\n%s", c.out.Text(), word, c.stderr.String())
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
}
