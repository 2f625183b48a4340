package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestDemoFaults runs `kwikfs demo --faults` on two files of 24 MiB to the
// end of its story, which it must reach by itself and exit 0: its output
// tells, in order, that copy 1 was identical (sha256) after a secondary was
// killed halfway, restarted and re-added, and that copy 2 was identical
// after the daemon was killed halfway and the file system mounted again,
// having fetched on resume less than the file size plus 5%. The copies it
// left are identical to the sources, and nothing is left mounted.
func TestDemoFaults(t *testing.T) {
	const size = 24 << 20
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	p := start(t, "kwikfs", "demo", "--faults", "--faults-size", "24M", "--dir", dir, "--mountpoint", mnt)
	if err := waitExit(t, p, 4*time.Minute); err != nil {
		t.Fatalf("kwikfs demo --faults exited with %v", err)
	}
	out := p.Output()

	// The story's steps, in the order they happen.
	steps := []string{
		`== killed (secondary [12]) \(127\.0\.0\.1:\d+\) with SIGKILL`,
		`== restarted secondary [12] on 127\.0\.0\.1:\d+`,
		`== secondary [12] re-added`,
		`== copy 1: sha256 identical`,
		`== killed the daemon \(kwikfs mount\) with SIGKILL`,
		`== mounted again on the same cache`,
		`== copy 2: sha256 identical`,
		`== resumed copy: fetched `,
		`The story is complete`,
	}
	at := 0
	for _, step := range steps {
		loc := regexp.MustCompile(step).FindStringIndex(out[at:])
		if loc == nil {
			t.Fatalf("output lacks %q after byte %d:\n%s", step, at, out)
		}
		at += loc[1]
	}

	m := regexp.MustCompile(`resumed copy: fetched .* \((\d+) of (\d+) bytes\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no byte counts in the resumed copy's line:\n%s", out)
	}
	fetched, _ := strconv.ParseInt(m[1], 10, 64)
	total, _ := strconv.ParseInt(m[2], 10, 64)
	if total != size {
		t.Errorf("resumed copy: file of %d bytes, want %d", total, size)
	}
	if limit := int64(size + size/20); fetched >= limit {
		t.Errorf("resumed copy fetched %d bytes, want less than %d (the file plus 5%%)", fetched, limit)
	}
	t.Logf("resumed copy fetched %d of %d bytes", fetched, total)

	for _, name := range []string{"first-24MiB.bin", "second-24MiB.bin"} {
		src := filepath.Join(dir, "tree", "faults", name)
		dst := filepath.Join(dir, "copies", name)
		if fileSHA(t, src) != fileSHA(t, dst) {
			t.Errorf("%s differs from %s", dst, src)
		}
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after the demo exited", mnt)
	}
	if _, err := os.Stat(mnt); err != nil {
		t.Errorf("mountpoint after the demo: %v", err)
	}
}
