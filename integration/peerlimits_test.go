package integration

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// TestIdleSessionsFromOneHost opens 300 idle sessions to a kwik-primary
// from 127.0.0.2, more than the primary's 256 sessions in all: the
// primary admits 32 from that address (kwik.DefaultMaxSessionsPerSource)
// and refuses the rest at once, and a mount from 127.0.0.1 then copies
// the tree identically.
func TestIdleSessionsFromOneHost(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeSmallTree(t, root)
	certDir := certs(t)
	p := startPrimary(t, root, certDir)

	conf := &kwik.Config{TLSConfig: clientTLS(t, certDir), LocalAddr: "127.0.0.2:0"}
	admitted, refused := 0, 0
	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		s, err := kwik.Dial(ctx, p.addr, conf)
		cancel()
		var se *kwik.SessionError
		switch {
		case err == nil:
			admitted++
			t.Cleanup(func() { s.Close() })
		case errors.As(err, &se) && se.Code == kwik.SessionLimitError && strings.Contains(se.Message, "per source address"):
			refused++
		default:
			t.Fatalf("session %d from 127.0.0.2: %v", admitted+refused, err)
		}
	}
	if admitted != kwik.DefaultMaxSessionsPerSource || refused != 300-kwik.DefaultMaxSessionsPerSource {
		t.Errorf("from 127.0.0.2: %d sessions admitted and %d refused, want %d and %d",
			admitted, refused, kwik.DefaultMaxSessionsPerSource, 300-kwik.DefaultMaxSessionsPerSource)
	}
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 2*time.Minute, "cp", "-r", m.dir, dst)
	compareTrees(t, root, dst, compareOptions{})
}

// TestDeadClientDoesNotHoldSecondary: a client from 127.0.0.2 reads a
// large file from a secondary (behind a link-emulator relay; the primary
// only coordinates) when its network dies without a word (the relay
// blackholes 127.0.0.2) while the secondary holds commands of it whose data
// has not left, so the secondary's writes to it block. kwik-secondary
// closes that path once a write has waited its 10 s write timeout (it says
// so, and counts it), before QUIC's 30 s idle timeout would, and frees
// every command slot of it; meanwhile a mount from 127.0.0.1 through the
// same secondary copies a file identically, taking at most twice as long
// as a copy of the same size before the fault, plus 3 s, and its session,
// idle after the copies, is never taken for silent.
func TestDeadClientDoesNotHoldSecondary(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	const size = 32 << 20
	writeRandomFile(t, filepath.Join(root, "big.bin"), 256<<20, 21)
	writeRandomFile(t, filepath.Join(root, "a.bin"), size, 22)
	writeRandomFile(t, filepath.Join(root, "b.bin"), size, 23)
	certDir := certs(t)
	sec, relay, _ := startRelayedSecondary(t, root, certDir, "--metrics", "127.0.0.1:0", "--log-level", "info")
	metrics := sec.metricsAddr(t)
	// The secondary carries all file data (--serve-data fallback), so it is
	// writing to the 127.0.0.2 client when that client's network dies.
	p := startPrimary(t, root, certDir, "--chunk-size", "262144", "--secondary", relay.Addr(), "--serve-data", "fallback")
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	copyFile := func(name string) time.Duration {
		t.Helper()
		dst := filepath.Join(t.TempDir(), name)
		start := time.Now()
		run(t, 2*time.Minute, "cp", filepath.Join(m.dir, name), dst)
		d := time.Since(start)
		want, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("copy of %s differs from the source (%v)", name, err)
		}
		return d
	}
	before := copyFile("a.bin")

	c := transfer.NewClient(p.addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: clientTLS(t, certDir), LocalAddr: "127.0.0.2:0", Logger: slog.New(slog.DiscardHandler)}})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mf, err := c.Manifest(ctx, "big.bin")
	if err != nil {
		t.Fatal(err)
	}
	// Four reads at once, through a link slower than the secondary can
	// write (10 MB/s), so that its writes wait for the congestion window.
	relay.SetConfig(linkemu.Config{RateBitsPerSec: 80_000_000})
	var got atomic.Int64
	var wg sync.WaitGroup
	n := mf.NumChunks()
	for q := range 4 {
		wg.Go(func() {
			c.ReadChunks(ctx, "big.bin", mf, q*n/4, (q+1)*n/4-q*n/4, func(int, []byte) error {
				got.Add(1)
				return nil
			})
		})
	}
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < 64 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.Load() < 64 {
		t.Fatalf("the 127.0.0.2 client read %d chunks in 30 s", got.Load())
	}
	// The primary keeps only about a round trip's worth of work assigned
	// to a path, which the congestion window may hold whole: a fault at
	// such a moment leaves the secondary nothing to write, hence no write
	// to time out, only a connection QUIC's idle timeout ends. So the
	// fault comes while the secondary handles two commands or more (the
	// mount is idle: all are the 127.0.0.2 client's); the later one's data,
	// a chunk or more, cannot all be in the window.
	const active = "kwik_secondary_commands_active"
	for scrapeMetrics(t, metrics)[active] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the secondary never handled two commands of the 127.0.0.2 client at once")
		}
		time.Sleep(2 * time.Millisecond) // a command's chunk takes 25 ms at 10 MB/s
	}
	relay.Blackhole(netip.MustParseAddr("127.0.0.2"), true)
	faulted := time.Now()
	time.Sleep(500 * time.Millisecond)
	if held := metric(t, scrapeMetrics(t, metrics), active); held < 1 {
		t.Fatalf("0.5 s after the fault the secondary handles %v commands of the dead client, want its blocked ones", held)
	}
	relay.SetConfig(linkemu.Config{}) // the other client's copy at full speed

	during := copyFile("b.bin")
	copied := time.Now()
	t.Logf("copy of %d MiB before the fault %v, during %v", size>>20, before, during)
	if during > 2*before+3*time.Second {
		t.Errorf("the copy took %v during the fault, %v before: more than twice plus 3 s", during, before)
	}
	const said = "closing a path whose client reads nothing"
	for !strings.Contains(sec.Output(), said) {
		if time.Since(faulted) > 25*time.Second {
			t.Fatalf("kwik-secondary did not close the dead client's path within 25 s:\n%s", sec.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("kwik-secondary closed the dead client's path %v after the fault", time.Since(faulted).Round(time.Millisecond))
	// The commands return their slots as their writes fail, just after the
	// path is closed.
	s := scrapeMetrics(t, metrics)
	for end := time.Now().Add(2 * time.Second); s[active] != 0 && time.Now().Before(end); s = scrapeMetrics(t, metrics) {
		time.Sleep(10 * time.Millisecond)
	}
	if v := metric(t, s, active); v != 0 {
		t.Errorf("%s %v 2 s after the dead client's path was closed, want 0", active, v)
	}
	if v := metric(t, s, "kwik_secondary_write_stalled_paths_total"); v != 1 {
		t.Errorf("kwik_secondary_write_stalled_paths_total %v, want 1:\n%s", v, sec.Output())
	}
	// The mount's one session served both copies and stays up, idle, for
	// two liveness timeouts (3 s) after its last request: it never went
	// silent.
	time.Sleep(time.Until(copied.Add(7 * time.Second)))
	if tr := m.status(t).Transfer; tr.SilentSessions != 0 || tr.Dials != 1 {
		t.Errorf("the mount: %d sessions taken for silent and %d dialled, want 0 and 1", tr.SilentSessions, tr.Dials)
	}
}
