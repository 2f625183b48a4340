package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/transfer"
)

// getChunkSize is the chunk size of the primary in the edge-case tree test.
const getChunkSize = 64 << 10

// makeGetTree writes the edge cases of `kwikfs get` into dir: an empty
// file, 1 byte, chunk-1 / chunk / chunk+1 bytes (of getChunkSize), a file
// of several chunks, names with spaces and non-ASCII letters, a symlink, a
// 0600 and a 0755 file, nested and empty directories (one of mode 0750),
// 40 small files, and a file "twin" beside a file "twin.kwikpart" (the
// name of twin's part file). Files and directories get distinct mtimes
// with a nanosecond part.
func makeGetTree(t *testing.T, dir string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	stamp := func(p string) {
		n++
		mt := base.Add(time.Duration(n)*time.Minute + time.Duration(n*7919)*time.Nanosecond)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		stamp(p)
	}
	write("empty", nil, 0o644)
	write("one-byte", []byte{'x'}, 0o644)
	write("sizes/chunk-minus-1", random(getChunkSize-1), 0o644)
	write("sizes/chunk", random(getChunkSize), 0o644)
	write("sizes/chunk-plus-1", random(getChunkSize+1), 0o644)
	write("sizes/many-chunks", random(40*getChunkSize+333), 0o644)
	write("a/b/c/d/deep.txt", []byte("deep\n"), 0o644)
	write("names with spaces/file with spaces.txt", []byte("spaces\n"), 0o644)
	write("ünïcödé/日本語 ファイル.txt", []byte("non-ASCII\n"), 0o644)
	write("private/secret", []byte("0600\n"), 0o600)
	write("scripts/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("twin", random(3*getChunkSize+5), 0o644)
	write("twin.kwikpart", random(2*getChunkSize+9), 0o640)
	for i := range 40 {
		write(fmt.Sprintf("small/%02d.txt", i), random(1+rng.IntN(5000)), 0o644)
	}
	if err := os.Symlink("a/b/c/d/deep.txt", filepath.Join(dir, "link-to-deep")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"empty-dir", "restricted"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("restricted/inside", []byte("in a 0750 directory\n"), 0o644)
	if err := os.Chmod(filepath.Join(dir, "restricted"), 0o750); err != nil {
		t.Fatal(err)
	}
	// Directories last, deepest first, once their contents are written.
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		stamp(dirs[i])
	}
}

// compareDirAttrs fails the test unless every directory under src has a
// directory under dst with the same permission bits and mtime (compareTrees
// checks the mtimes of files only). The roots themselves are compared too
// when withRoot is set.
func compareDirAttrs(t *testing.T, src, dst string, withRoot bool) {
	t.Helper()
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || (p == src && !withRoot) {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.Stat(filepath.Join(dst, rel))
		if err != nil {
			t.Errorf("directory %s: %v", rel, err)
			return nil
		}
		if got.Mode() != want.Mode() || !got.ModTime().Equal(want.ModTime()) {
			t.Errorf("directory %s: mode %v mtime %v, want %v %v", rel, got.Mode(), got.ModTime(), want.Mode(), want.ModTime())
		}
		return nil
	})
}

// noPartFiles fails the test if a part file or directory is left under
// dir, or beside it.
func noPartFiles(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Lstat(dir + transfer.PartSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s%s left: %v", dir, transfer.PartSuffix, err)
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		// The tree has one file of that name on purpose.
		if err == nil && strings.HasSuffix(p, transfer.PartSuffix) && filepath.Base(p) != "twin.kwikpart" {
			t.Errorf("part file left: %s", p)
		}
		return nil
	})
}

// getSummary is the summary line `kwikfs get` prints at the end.
type getSummary struct {
	line                                 string
	files, copied, skipped, failed       int64
	fetched, fromParts, fromCache, links int64
}

var (
	summaryFiles = regexp.MustCompile(`(?m)^(\d+) files: (\d+) copied, (\d+) skipped \(complete already\), (\d+) failed; (\d+) symlinks, \d+ directories; (\d+) bytes fetched .*; reused (\d+) bytes from \.kwikpart files, (\d+) from the cache.*`)
)

// parseGetSummary finds the summary line in out.
func parseGetSummary(t *testing.T, out string) getSummary {
	t.Helper()
	m := summaryFiles.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in the output of kwikfs get:\n%s", tail([]byte(out)))
	}
	n := func(i int) int64 {
		v, err := strconv.ParseInt(m[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return getSummary{line: m[0], files: n(1), copied: n(2), skipped: n(3), failed: n(4), links: n(5),
		fetched: n(6), fromParts: n(7), fromCache: n(8)}
}

// getArgs returns the arguments of `kwikfs get` for primary p, before
// extra flags and the paths.
func getArgs(p *primary, rest ...string) []string {
	args := []string{"get", "--primary", p.addr, "--ca", filepath.Join(p.certs, certgen.CAFile)}
	args = append(args, clientCertArgs(p.certs)...)
	return append(args, rest...)
}

// runGet runs `kwikfs get` to its end and returns its output (stdout and
// stderr) and exit code.
func runGet(t *testing.T, p *primary, rest ...string) (string, int) {
	t.Helper()
	g := start(t, "kwikfs", getArgs(p, rest...)...)
	err := waitExit(t, g, 5*time.Minute)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return g.Output(), 0
	case errors.As(err, &ee):
		return g.Output(), ee.ExitCode()
	}
	t.Fatalf("kwikfs get: %v", err)
	return "", 0
}

// TestGetTreeIdenticalAndSecondRunFetchesNothing copies the edge-case tree
// with `kwikfs get` from a primary and a secondary into a new directory:
// the copy is identical (content, types, symlink target, modes, file and
// directory mtimes), every byte was fetched once, and a second run of the
// same command fetches nothing and skips every file.
func TestGetTreeIdenticalAndSecondRunFetchesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeGetTree(t, root)
	certDir := certs(t)
	sec := startServer(t, "kwik-secondary", root, certDir)
	p := startPrimary(t, root, certDir, "--secondary", sec.addr, "--chunk-size", strconv.Itoa(getChunkSize))
	dst := filepath.Join(t.TempDir(), "copy")
	total := treeDataBytes(t, root)
	var files int64
	for _, e := range scanTree(t, root) {
		if e.mode.IsRegular() {
			files++
		}
	}

	out, code := runGet(t, p, "/", dst)
	if code != 0 {
		t.Fatalf("kwikfs get exited %d:\n%s", code, out)
	}
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	compareDirAttrs(t, root, dst, true)
	noPartFiles(t, dst)
	s := parseGetSummary(t, out)
	t.Logf("first run: %s", s.line)
	if s.files != files || s.copied != files || s.skipped != 0 || s.failed != 0 || s.links != 1 {
		t.Errorf("first run: %d files, %d copied, %d skipped, %d failed, %d symlinks; want %d copied, 1 symlink", s.files, s.copied, s.skipped, s.failed, s.links, files)
	}
	if s.fetched != total || s.fromParts != 0 || s.fromCache != 0 {
		t.Errorf("first run fetched %d bytes (reused %d + %d), want exactly the tree's %d", s.fetched, s.fromParts, s.fromCache, total)
	}
	if !strings.Contains(s.line, "file data delivered by primary ") {
		t.Errorf("summary does not name the servers' shares: %s", s.line)
	}

	out, code = runGet(t, p, "/", dst)
	if code != 0 {
		t.Fatalf("second kwikfs get exited %d:\n%s", code, out)
	}
	s = parseGetSummary(t, out)
	t.Logf("second run: %s", s.line)
	if s.files != files || s.copied != 0 || s.skipped != files || s.failed != 0 || s.fetched != 0 {
		t.Errorf("second run: %d files, %d copied, %d skipped, %d failed, %d bytes fetched; want all %d skipped, 0 fetched", s.files, s.copied, s.skipped, s.failed, s.fetched, files)
	}
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
	compareDirAttrs(t, root, dst, true)
}

// TestGetResumeAfterKill kills `kwikfs get` of a 200 MiB file with SIGKILL
// when half of it is written, and runs it again: the file is identical and
// the second run fetched at most the bytes the part file lacked plus 5%.
// Without --cache it keeps exactly the verified chunks the part file held;
// with --cache, the part file removed, it takes them from the cache's
// chunk store instead, which the killed run filled as it went.
func TestGetResumeAfterKill(t *testing.T) {
	const size = 200<<20 + 4321
	root := filepath.Join(t.TempDir(), "tree")
	src := filepath.Join(root, "big.bin")
	writeRandomFile(t, src, size, 99)
	want := fileSHA(t, src)
	certDir := certs(t)
	p, _ := startCluster(t, root, certDir, 1) // chunks of chunkSize

	for _, withCache := range []bool{false, true} {
		t.Run(map[bool]string{false: "part file", true: "cache"}[withCache], func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "big.bin")
			part := dst + transfer.PartSuffix
			var flags []string
			if withCache {
				flags = []string{"--cache", filepath.Join(t.TempDir(), "cache")}
			}
			held := killGetHalfway(t, p, append(slices.Clone(flags), "big.bin", dst), part, src, size)
			missing := int64(size) - held
			if withCache {
				if err := os.Remove(part); err != nil {
					t.Fatal(err)
				}
			}

			out, code := runGet(t, p, append(slices.Clone(flags), "big.bin", dst)...)
			if code != 0 {
				t.Fatalf("resumed kwikfs get exited %d:\n%s", code, out)
			}
			s := parseGetSummary(t, out)
			t.Logf("resumed run: %s", s.line)
			if got := fileSHA(t, dst); got != want {
				t.Fatalf("resumed copy: sha %x, want %x", got[:6], want[:6])
			}
			if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("part file left after the resumed run: %v", err)
			}
			if limit := missing + size/20; s.fetched > limit {
				t.Errorf("resumed run fetched %d bytes, want at most %d (missing %d + 5%%)", s.fetched, limit, missing)
			}
			if got := s.fetched + s.fromParts + s.fromCache; got != size {
				t.Errorf("resumed run: fetched %d + kept %d from the part file + %d from the cache = %d, want the file's %d", s.fetched, s.fromParts, s.fromCache, got, size)
			}
			if !withCache && s.fromParts != held {
				t.Errorf("resumed run kept %d bytes of the part file, want the %d it held", s.fromParts, held)
			}
		})
	}
}

// killGetHalfway starts `kwikfs get` with args, SIGKILLs it once half of
// the part file holds data, checks that it died of the signal with the
// destination not made, and returns the bytes of whole chunks of the part
// file that match src.
func killGetHalfway(t *testing.T, p *primary, args []string, part, src string, size int64) int64 {
	t.Helper()
	g := start(t, "kwikfs", getArgs(p, args...)...)
	// The part file is as long as the file from the start (sparse): wait
	// until half of it holds data.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(part, &st); err == nil && st.Blocks*512 >= size/2 {
			break
		}
		select {
		case <-g.done:
			t.Fatalf("kwikfs get ended (%v) before half of the file was written:\n%s", g.err, g.Output())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("part file not half written after 3 minutes:\n%s", g.Output())
		}
	}
	err := g.stop(t, syscall.SIGKILL, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("kwikfs get ended with %v, want killed by SIGKILL:\n%s", err, g.Output())
	}
	if _, err := os.Stat(strings.TrimSuffix(part, transfer.PartSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destination exists after the kill: %v", err)
	}
	held := heldChunks(t, part, src)
	t.Logf("part file holds %d verified bytes (%.1f%%) after the kill", held, 100*float64(held)/float64(size))
	if held < size/4 || held == size {
		t.Fatalf("part file holds %d of %d bytes: the kill did not land midway", held, size)
	}
	return held
}

// TestGetCacheServesChunks copies a tree twice with the same --cache to two
// new directories: the second copy is identical and fetches nothing, every
// byte coming from the cache's chunk store.
func TestGetCacheServesChunks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeGetTree(t, root)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(getChunkSize))
	cache := filepath.Join(t.TempDir(), "cache")
	total := treeDataBytes(t, root)
	for i, wantFetched := range []int64{total, 0} {
		dst := filepath.Join(t.TempDir(), fmt.Sprintf("copy%d", i))
		out, code := runGet(t, p, "--cache", cache, "", dst)
		if code != 0 {
			t.Fatalf("run %d: kwikfs get exited %d:\n%s", i, code, out)
		}
		compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
		s := parseGetSummary(t, out)
		t.Logf("run %d: %s", i, s.line)
		if s.fetched != wantFetched || s.fromCache != total-wantFetched {
			t.Errorf("run %d fetched %d bytes and took %d from the cache, want %d and %d", i, s.fetched, s.fromCache, wantFetched, total-wantFetched)
		}
	}
}

// TestGetFailureExitCodes: a remote path that does not exist, and a file
// whose place at the destination is taken by a directory, make `kwikfs get`
// copy everything else, name both on stderr and exit 1; usage errors exit
// 2 without touching the destination.
func TestGetFailureExitCodes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeGetTree(t, root)
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", strconv.Itoa(getChunkSize))

	dst := filepath.Join(t.TempDir(), "out")
	if err := os.MkdirAll(filepath.Join(dst, "sizes", "chunk"), 0o755); err != nil { // a directory where a file goes
		t.Fatal(err)
	}
	out, code := runGet(t, p, "sizes", "no/such/file", "scripts", dst)
	if code != 1 {
		t.Fatalf("kwikfs get exited %d, want 1:\n%s", code, out)
	}
	for _, name := range []string{"kwikfs get: no/such/file: ", "kwikfs get: sizes/chunk: "} {
		if !strings.Contains(out, name) {
			t.Errorf("output does not name the failure %q:\n%s", name, out)
		}
	}
	s := parseGetSummary(t, out)
	if s.failed != 1 || s.copied != 4 {
		t.Errorf("summary: %d copied, %d failed; want 4 copied (sizes/ but chunk, scripts/), 1 failed: %s", s.copied, s.failed, s.line)
	}
	for _, rel := range []string{"sizes/chunk-minus-1", "sizes/chunk-plus-1", "sizes/many-chunks", "scripts/run.sh"} {
		if fileSHA(t, filepath.Join(dst, rel)) != fileSHA(t, filepath.Join(root, rel)) {
			t.Errorf("%s: not copied right beside the failures", rel)
		}
	}

	usage := filepath.Join(t.TempDir(), "usage")
	for _, args := range [][]string{
		{"get", "--ca", filepath.Join(certDir, certgen.CAFile), "sizes", usage}, // no --primary
		getArgs(p, "../outside", usage),                                         // leaves the root
		getArgs(p, usage),                                                       // no DEST
		getArgs(p, "--jobs", "0", "sizes", usage),                               // bad flag value
		{"get", "--primary", p.addr, "--ca", filepath.Join(certDir, certgen.CAFile), "--cert", "x.pem", "sizes", usage}, // --cert without --key
	} {
		g := start(t, "kwikfs", args...)
		err := waitExit(t, g, time.Minute)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("kwikfs %s: %v, want exit status 2:\n%s", strings.Join(args, " "), err, g.Output())
		}
	}
	if _, err := os.Lstat(usage); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a usage error made the destination: %v", err)
	}
}
