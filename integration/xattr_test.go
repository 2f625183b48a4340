package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/fusefs"
	"github.com/kwikfs/kwikfs/internal/certgen"
)

// TestFileXattrs reads half of a file through a mount served by a primary
// and one secondary, checks user.kwikfs.cached with getfattr, then reads
// the rest and checks that the file is wholly cached and that
// user.kwikfs.sources credits both servers with bytes summing to exactly
// the file's size.
func TestFileXattrs(t *testing.T) {
	const chunk = 256 << 10 // startCluster's chunk size
	const chunks = 64
	const size = chunks * chunk
	root := filepath.Join(t.TempDir(), "tree")
	// Random bytes: no two chunks alike (the store keeps identical chunks
	// once, and a periodic pattern would be fetched only once per period).
	writeRandomFile(t, filepath.Join(root, "f.bin"), size, 11)
	data, err := os.ReadFile(filepath.Join(root, "f.bin"))
	if err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p, secs := startCluster(t, root, certDir, 1)
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--read-ahead", "0", "--xattrs")
	// With read-ahead off the kernel's stays at 128 KiB, and every READ
	// would cover a single chunk, which the primary always sends itself
	// (nothing is earlier than a path with no command to relay). Reads of
	// a whole MiB span 4 chunks, which the primary divides between the
	// servers.
	if err := fusefs.RaiseReadAhead(m.dir); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(m.dir, "f.bin")
	getfattr := func(name string) string {
		t.Helper()
		return run(t, 30*time.Second, "getfattr", "--absolute-names", "--only-values", "-n", name, file)
	}

	if got, want := getfattr("user.kwikfs.cached"), "0.000 (0/64 chunks)"; got != want {
		t.Fatalf("cached before reading = %q, want %q", got, want)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// No kernel read-ahead either: exactly the first half is read.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		t.Fatal(err)
	}
	half := make([]byte, size/2)
	if _, err := f.ReadAt(half, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := getfattr("user.kwikfs.cached"), "0.500 (32/64 chunks)"; got != want {
		t.Fatalf("cached after reading half = %q, want %q", got, want)
	}
	rest := make([]byte, size/2)
	if _, err := f.ReadAt(rest, size/2); err != nil {
		t.Fatal(err)
	}
	if string(half) != string(data[:size/2]) || string(rest) != string(data[size/2:]) {
		t.Fatal("wrong file content")
	}
	if got, want := getfattr("user.kwikfs.cached"), "1.000 (64/64 chunks)"; got != want {
		t.Fatalf("cached after reading all = %q, want %q", got, want)
	}

	src := getfattr("user.kwikfs.sources")
	bytes := map[string]uint64{}
	var sum uint64
	for _, line := range strings.Split(strings.TrimSuffix(src, "\n"), "\n") {
		addr, n, ok := strings.Cut(line, " ")
		v, err := strconv.ParseUint(n, 10, 64)
		if !ok || err != nil {
			t.Fatalf("sources line %q in %q", line, src)
		}
		bytes[addr] = v
		sum += v
	}
	if len(bytes) != 2 || bytes[p.addr] == 0 || bytes[secs[0].addr] == 0 || sum != size {
		t.Fatalf("sources %q; want %s and %s both > 0, summing to %d", src, p.addr, secs[0].addr, size)
	}
	names := run(t, 30*time.Second, "getfattr", "-d", "-m", "user.kwikfs", "--absolute-names", file)
	for _, n := range []string{"user.kwikfs.cached=", "user.kwikfs.sources="} {
		if !strings.Contains(names, n) {
			t.Errorf("getfattr -d lacks %s:\n%s", n, names)
		}
	}
}
