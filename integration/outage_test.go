package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// TestPrimaryOutage stops the primary under a live mount: cached files stay
// readable, a read of uncached data fails with EIO within the fetch timeout,
// and once the primary is back on the same address the same mount reads
// everything again without a remount.
func TestPrimaryOutage(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	cached := bytes.Repeat([]byte("cached "), 300_000)
	uncached := bytes.Repeat([]byte("uncached "), 300_000)
	for name, data := range map[string][]byte{"cached.bin": cached, "uncached.bin": uncached} {
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144")
	const fetchTimeout = 2 * time.Second
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", fetchTimeout.String(), "--attr-timeout", "1s")

	if got, err := os.ReadFile(filepath.Join(m.dir, "cached.bin")); err != nil || !bytes.Equal(got, cached) {
		t.Fatalf("first read of cached.bin: %d bytes, %v", len(got), err)
	}
	// Open uncached.bin now, so that only its data is missing later.
	f, err := os.Open(filepath.Join(m.dir, "uncached.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	if err := p.stop(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("kwik-primary exited 0 after SIGKILL")
	}
	time.Sleep(1500 * time.Millisecond) // let --attr-timeout pass: metadata must come from the store
	if got, err := os.ReadFile(filepath.Join(m.dir, "cached.bin")); err != nil || !bytes.Equal(got, cached) {
		t.Errorf("cached.bin with the primary down: %d bytes, %v", len(got), err)
	}
	startRead := time.Now()
	buf := make([]byte, 4096)
	_, err = f.ReadAt(buf, 1<<20)
	elapsed := time.Since(startRead)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read of uncached data with the primary down: %v, want EIO", err)
	}
	if elapsed > fetchTimeout+5*time.Second {
		t.Errorf("uncached read failed after %v, want within about --fetch-timeout (%v)", elapsed, fetchTimeout)
	}

	// The primary comes back on the same address; the same mount recovers.
	startPrimary(t, root, certDir, "--chunk-size", "262144", "--listen", p.addr)
	if got, err := os.ReadFile(filepath.Join(m.dir, "uncached.bin")); err != nil || !bytes.Equal(got, uncached) {
		t.Fatalf("uncached.bin after the primary returned: %d bytes, %v", len(got), err)
	}
	// A file still open on the mount does not keep the daemon from
	// unmounting and exiting on SIGINT.
	m.unmount(t)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read from a file left open across the unmount: %v, want ENOTCONN", err)
	}
}
