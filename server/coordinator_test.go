package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// mpChunk is the chunk size of the multipath tests: small, so that a file
// of a few MiB has many chunks.
const mpChunk = 64 << 10

func mpQuiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// mpSecondary is a real Secondary on a real kwik secondary
// listener on 127.0.0.1.
type mpSecondary struct {
	Sec  *Secondary
	ln   *kwik.Secondary
	Addr string
	once sync.Once
	stop func()
}

// Stop closes the secondary: its paths close and it serves nothing more.
func (s *mpSecondary) Stop() { s.once.Do(s.stop) }

// mpStartSecondary serves root with a new Secondary; hook, if not nil,
// may set its test hooks before it serves.
func mpStartSecondary(t testing.TB, b *certgen.Bundle, root string, hook func(*Secondary)) *mpSecondary {
	t.Helper()
	tlsConf, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kwik.ListenSecondary("127.0.0.1:0", &kwik.Config{TLSConfig: tlsConf, VerifyKeys: b.VerifyKeys(), Logger: mpQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := NewSecondary(root, &SecondaryOptions{Logger: mpQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(sec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sec.Serve(ctx, ln)
	}()
	s := &mpSecondary{Sec: sec, ln: ln, Addr: ln.AdvertisedAddr()}
	s.stop = func() {
		cancel()
		ln.Close()
		<-done
		sec.Close()
	}
	t.Cleanup(s.Stop)
	return s
}

// mpCluster is a primary with secondaries and a client, all real.
type mpCluster struct {
	t       testing.TB
	prim    *Primary
	secs    []*mpSecondary
	client  *transfer.Client
	bundle  *certgen.Bundle
	primary string
}

// mpStartCluster serves primaryRoot with one secondary per entry of
// secondaryRoots and returns a client of the primary whose session has
// every secondary path up.
func mpStartCluster(t testing.TB, primaryRoot string, secondaryRoots []string, copts CoordinatorOptions) *mpCluster {
	t.Helper()
	return mpStartClusterHooked(t, primaryRoot, secondaryRoots, copts, nil)
}

// mpStartClusterHooked is mpStartCluster calling hook for each secondary
// before it serves.
func mpStartClusterHooked(t testing.TB, primaryRoot string, secondaryRoots []string, copts CoordinatorOptions, hook func(i int, s *Secondary)) *mpCluster {
	t.Helper()
	return mpStartClusterWith(t, primaryRoot, secondaryRoots, copts, hook, nil)
}

// mpStartClusterWith is mpStartClusterHooked calling clientConf, if not
// nil, on the client's kwik configuration.
func mpStartClusterWith(t testing.TB, primaryRoot string, secondaryRoots []string, copts CoordinatorOptions, hook func(i int, s *Secondary), clientConf func(*kwik.Config)) *mpCluster {
	t.Helper()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &mpCluster{t: t, bundle: b}
	var addrs []string
	for i, r := range secondaryRoots {
		var h func(*Secondary)
		if hook != nil {
			h = func(s *Secondary) { hook(i, s) }
		}
		s := mpStartSecondary(t, b, r, h)
		c.secs = append(c.secs, s)
		addrs = append(addrs, s.Addr)
	}
	p, err := NewPrimary(primaryRoot, &PrimaryOptions{
		Catalog:     CatalogOptions{ChunkSize: mpChunk},
		Logger:      mpQuiet(),
		Secondaries: addrs,
		Coordinator: copts,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.prim = p
	srvTLS, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := kwik.Listen("127.0.0.1:0", &kwik.Config{TLSConfig: srvTLS, SigningKey: b.SigningKey, Logger: mpQuiet()})
	if err != nil {
		t.Fatal(err)
	}
	c.primary = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	conf := &kwik.Config{TLSConfig: cliTLS, HandshakeTimeout: 5 * time.Second, Logger: mpQuiet()}
	if clientConf != nil {
		clientConf(conf)
	}
	c.client = transfer.NewClient(c.primary, &transfer.ClientOptions{Config: conf, Logger: mpQuiet()})
	t.Cleanup(func() {
		c.client.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
		p.Close()
	})
	if len(addrs) > 0 {
		c.waitPathsUp(len(addrs))
	}
	return c
}

// waitPathsUp makes the client dial and waits until n secondary paths are
// up on its session.
func (c *mpCluster) waitPathsUp(n int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.client.Stat(ctx, ""); err != nil {
		c.t.Fatalf("Stat: %v", err)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		up := 0
		if s, ok := c.client.SessionStats(); ok {
			for _, p := range s.Paths[1:] {
				if p.State == kwik.PathUp {
					up++
				}
			}
		}
		added := 0
		for _, s := range c.secs {
			if c.counters(s.Addr).PathsAdded > 0 {
				added++
			}
		}
		if up >= n && added >= n {
			return // the client and the primary's coordinator see them
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			c.t.Fatalf("%d of %d secondary paths up", up, n)
		}
	}
}

// readFile reads the whole file with ReadChunks, reading again from the
// first chunk not delivered after a corrupt chunk (as the filesystem
// does), at most tries times, and returns its bytes and the number of
// corrupt reads.
func (c *mpCluster) readFile(name string, tries int) ([]byte, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.client.Manifest(ctx, name)
	if err != nil {
		c.t.Fatalf("Manifest(%s): %v", name, err)
	}
	var out []byte
	next, corrupt := 0, 0
	for next < m.NumChunks() {
		_, err := c.client.ReadChunks(ctx, name, m, next, m.NumChunks()-next, func(i int, data []byte) error {
			if i != next {
				c.t.Fatalf("chunk %d delivered, want %d", i, next)
			}
			out = append(out, data...)
			next++
			return nil
		})
		c.t.Logf("%s ReadChunks from %d: %v", time.Now().Format("05.000"), next, err)
		if errors.Is(err, transfer.ErrCorrupt) && corrupt < tries {
			corrupt++
			continue
		}
		if err != nil {
			c.t.Fatalf("ReadChunks(%s) from chunk %d after %d corrupt reads: %v; coordinator %+v", name, next, corrupt, err, c.prim.CoordinatorStats())
		}
	}
	return out, corrupt
}

// pathStats returns the client's session statistics.
func (c *mpCluster) pathStats() []kwik.PathStats {
	s, ok := c.client.SessionStats()
	if !ok {
		c.t.Fatal("no live session")
	}
	return s.Paths
}

// counters returns the primary's coordinator counters for addr.
func (c *mpCluster) counters(addr string) PathCounters {
	for _, pc := range c.prim.CoordinatorStats().Paths {
		if pc.Addr == addr {
			return pc
		}
	}
	return PathCounters{Addr: addr}
}

// waitDelivered waits until the coordinator's delivered counters, which it
// updates when a READ job ends after the client's last report, add up to
// want bytes over all paths; it gives up after 10 s (the caller's assertion
// then reports the difference).
func (c *mpCluster) waitDelivered(want uint64) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sum uint64
		for _, pc := range c.prim.CoordinatorStats().Paths {
			sum += pc.DeliveredBytes
		}
		if sum >= want || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mpWriteRoot writes files into a new directory and returns it.
func mpWriteRoot(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mpRandomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mpCheckSame fails unless got equals want (compared by SHA-256).
func mpCheckSame(t *testing.T, got, want []byte) {
	t.Helper()
	if len(got) != len(want) || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("read %d bytes, sha256 %x; want %d bytes, sha256 %x", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// mpCheckShared fails unless every path of the client's session delivered
// bytes, and logs the duplicate fraction.
func mpCheckShared(t *testing.T, c *mpCluster, size int) {
	t.Helper()
	var dup uint64
	for _, p := range c.pathStats() {
		t.Logf("path %d %s: delivered %d, duplicate %d, out of grant %d, rejected %d, commands dropped %d", p.ID, p.Addr, p.DeliveredBytes, p.DuplicateBytes, p.OutOfGrantBytes, p.RejectedBytes, p.CommandsDropped)
		if p.DeliveredBytes == 0 {
			t.Errorf("path %d (%s) delivered nothing", p.ID, p.Addr)
		}
		if p.OutOfGrantBytes != 0 {
			t.Errorf("path %d: %d bytes out of grant", p.ID, p.OutOfGrantBytes)
		}
		dup += p.DuplicateBytes
	}
	t.Logf("duplicate bytes: %d of %d (%.2f%%)", dup, size, 100*float64(dup)/float64(size))
}

const mpFileSize = 6<<20 + 12345

func TestMultipathOneSecondary(t *testing.T) {
	data := mpRandomBytes(mpFileSize, 1)
	files := map[string][]byte{"f.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)}, CoordinatorOptions{})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	mpCheckShared(t, c, len(data))
	c.waitDelivered(uint64(len(data)))
	st := c.prim.CoordinatorStats()
	if st.MultipathReads != 1 {
		t.Errorf("MultipathReads = %d, want 1", st.MultipathReads)
	}
	sec := c.counters(c.secs[0].Addr)
	if sec.AssignedBytes == 0 || sec.DeliveredBytes == 0 || sec.PathsAdded != 1 {
		t.Errorf("secondary counters %+v: want assigned and delivered bytes, one path added", sec)
	}
	prim := c.counters("")
	if sum := prim.DeliveredBytes + sec.DeliveredBytes; sum != uint64(len(data)) {
		t.Errorf("delivered %d + %d bytes, want %d", prim.DeliveredBytes, sec.DeliveredBytes, len(data))
	}
	if n := c.secs[0].Sec.Stats().BytesSent; n == 0 {
		t.Errorf("secondary sent no bytes")
	}
}

func TestMultipathTwoSecondaries(t *testing.T) {
	data := mpRandomBytes(mpFileSize, 2)
	small := mpRandomBytes(3*mpChunk+7, 3)
	files := map[string][]byte{"f.bin": data, "small.bin": small}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files), mpWriteRoot(t, files)}, CoordinatorOptions{})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	mpCheckShared(t, c, len(data))
	got, _ = c.readFile("small.bin", 0)
	mpCheckSame(t, got, small)
}

func TestPrimaryFallbackLeavesDataToSecondaries(t *testing.T) {
	data := mpRandomBytes(mpFileSize, 21)
	files := map[string][]byte{"f.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files), mpWriteRoot(t, files)}, CoordinatorOptions{PrimaryFallback: true})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	c.waitDelivered(uint64(len(data)))
	if prim := c.counters(""); prim.AssignedBytes != 0 || prim.DeliveredBytes != 0 {
		t.Errorf("primary counters %+v: want nothing assigned or delivered while secondaries are up", prim)
	}
	var sum uint64
	for _, s := range c.secs {
		sc := c.counters(s.Addr)
		if sc.DeliveredBytes == 0 {
			t.Errorf("secondary %s delivered nothing", s.Addr)
		}
		sum += sc.DeliveredBytes
	}
	if sum != uint64(len(data)) {
		t.Errorf("secondaries delivered %d bytes, want %d", sum, len(data))
	}

	// With every secondary gone, the primary sends the data itself.
	for _, s := range c.secs {
		s.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for c.pathStats()[1].State == kwik.PathUp || c.pathStats()[2].State == kwik.PathUp {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("secondary paths still up after the secondaries stopped")
		}
	}
	got, _ = c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
}

func TestMultipathSecondaryMissingFile(t *testing.T) {
	data := mpRandomBytes(2<<20+99, 4)
	files := map[string][]byte{"f.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, nil)}, CoordinatorOptions{LateSlack: 50 * time.Millisecond})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	sec := c.counters(c.secs[0].Addr)
	if sec.AssignedBytes == 0 || sec.DeliveredBytes != 0 || sec.Misses == 0 {
		t.Errorf("secondary counters %+v: want work assigned, nothing delivered, misses", sec)
	}
	if n := c.secs[0].Sec.Stats().NotFound; n == 0 {
		t.Errorf("secondary NotFound = 0")
	}
	// Further reads are correct too, and once the secondary has missed
	// MaxStrikes (3) times it gets no more work for the file.
	for range 3 {
		got, _ = c.readFile("f.bin", 0)
		mpCheckSame(t, got, data)
	}
	before := c.counters(c.secs[0].Addr)
	if before.Misses < 3 {
		t.Fatalf("secondary counters %+v after 4 reads: want 3 misses", before)
	}
	got, _ = c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	if after := c.counters(c.secs[0].Addr); after.AssignedBytes != before.AssignedBytes {
		t.Errorf("secondary got %d more bytes after 3 misses", after.AssignedBytes-before.AssignedBytes)
	}
}

func TestMultipathSecondaryClosedMidRead(t *testing.T) {
	data := mpRandomBytes(mpFileSize, 5)
	files := map[string][]byte{"f.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)}, CoordinatorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.client.Manifest(ctx, "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	_, err = c.client.ReadChunks(ctx, "f.bin", m, 0, m.NumChunks(), func(i int, b []byte) error {
		if i == m.NumChunks()/4 {
			c.secs[0].Stop()
		}
		got = append(got, b...)
		return nil
	})
	if err != nil {
		t.Fatalf("ReadChunks: %v", err)
	}
	mpCheckSame(t, got, data)
	// The client learns that the path closed, and the primary, trying to
	// add it again, fails.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.pathStats()[1].State == kwik.PathUp || c.counters(c.secs[0].Addr).PathsLost == 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("secondary path still up after the secondary closed: %+v", c.counters(c.secs[0].Addr))
		}
	}
}

func TestMultipathCorruptSecondary(t *testing.T) {
	data := mpRandomBytes(1<<20, 6)
	bad := append([]byte(nil), data...)
	for i := 0; i < len(bad); i += mpChunk {
		bad[i+100] ^= 0xff // every chunk of the mirror is corrupt
	}
	c := mpStartCluster(t, mpWriteRoot(t, map[string][]byte{"f.bin": data}), []string{mpWriteRoot(t, map[string][]byte{"f.bin": bad})}, CoordinatorOptions{})
	// Every read is correct, refetching after a corrupt chunk. A read may
	// see no corrupt chunk (the primary's copies of the secondary's units
	// arrived first); read until the secondary has struck out.
	total := 0
	for i := 0; c.counters(c.secs[0].Addr).Strikes < 3; i++ {
		if i == 10 {
			t.Fatalf("10 reads and only %d strikes: %+v", c.counters(c.secs[0].Addr).Strikes, c.prim.CoordinatorStats())
		}
		got, corrupt := c.readFile("f.bin", 10)
		mpCheckSame(t, got, data)
		total += corrupt
	}
	sec := c.counters(c.secs[0].Addr)
	if sec.Strikes != 3 || total != 3 {
		t.Errorf("Strikes = %d after %d corrupt reads, want 3 and 3 (one per corrupt read)", sec.Strikes, total)
	}
	if n := c.prim.CoordinatorStats().CorruptReports; n != uint64(total) {
		t.Errorf("CorruptReports = %d, want %d", n, total)
	}
	if n := c.client.Stats().CorruptChunks; n != int64(total) {
		t.Errorf("client CorruptChunks = %d, want %d", n, total)
	}
	// Struck out: the next read comes from the primary alone.
	before := sec.AssignedBytes
	reads := c.prim.CoordinatorStats().MultipathReads
	got, corrupt := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	if n := c.prim.CoordinatorStats().MultipathReads; n != reads {
		t.Errorf("MultipathReads went from %d to %d: the read was divided although no secondary may serve the file", reads, n)
	}
	if after := c.counters(c.secs[0].Addr).AssignedBytes; after != before || corrupt != 0 {
		t.Errorf("after 3 strikes the secondary got %d more bytes, %d corrupt reads", after-before, corrupt)
	}
}

func TestPrimaryWithoutSecondariesUnchanged(t *testing.T) {
	data := mpRandomBytes(2<<20+5, 7)
	c := mpStartCluster(t, mpWriteRoot(t, map[string][]byte{"f.bin": data}), nil, CoordinatorOptions{})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	if st := c.prim.CoordinatorStats(); st.MultipathReads != 0 || len(st.Paths) != 0 {
		t.Errorf("CoordinatorStats = %+v, want none", st)
	}
	if n := c.prim.Stats().DataBytes; n != int64(len(data)) {
		t.Errorf("DataBytes = %d, want %d", n, len(data))
	}
	if ps := c.pathStats(); len(ps) != 1 {
		t.Errorf("%d paths, want 1", len(ps))
	}
}

func TestMultipathConcurrentReads(t *testing.T) {
	files := map[string][]byte{}
	for i, name := range []string{"a.bin", "b.bin", "c.bin"} {
		files[name] = mpRandomBytes(2<<20+i*777, uint64(10+i))
	}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files), mpWriteRoot(t, files)}, CoordinatorOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, name := range []string{"a.bin", "b.bin", "c.bin", "a.bin", "a.bin"} {
		wg.Go(func() {
			m, err := c.client.Manifest(ctx, name)
			if err != nil {
				t.Errorf("Manifest(%s): %v", name, err)
				return
			}
			// Several READs of a few chunks each, as the filesystem's
			// read-ahead issues them.
			got := make([]byte, 0, m.Size)
			for first := 0; first < m.NumChunks(); first += 5 {
				n := min(5, m.NumChunks()-first)
				_, err := c.client.ReadChunks(ctx, name, m, first, n, func(i int, b []byte) error {
					got = append(got, b...)
					return nil
				})
				if err != nil {
					t.Errorf("ReadChunks(%s, %d, %d): %v; coordinator %+v", name, first, n, err, c.prim.CoordinatorStats())
					return
				}
			}
			if sha256.Sum256(got) != sha256.Sum256(files[name]) {
				t.Errorf("%s: wrong bytes", name)
			}
		})
	}
	wg.Wait()
	mpCheckShared(t, c, 5*(2<<20))
}

// BenchmarkMultipathRead reads a 32 MiB file from a primary and one or two
// secondaries on loopback and reports the duplicate bytes per file byte.
func BenchmarkMultipathRead(b *testing.B) {
	for _, nsec := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("secondaries=%d", nsec), func(b *testing.B) {
			data := mpRandomBytes(32<<20, 42)
			files := map[string][]byte{"f.bin": data}
			var roots []string
			for range nsec {
				roots = append(roots, mpWriteRoot(b, files))
			}
			c := mpStartCluster(b, mpWriteRoot(b, files), roots, CoordinatorOptions{})
			ctx := context.Background()
			m, err := c.client.Manifest(ctx, "f.bin")
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for range b.N {
				_, err := c.client.ReadChunks(ctx, "f.bin", m, 0, m.NumChunks(), func(int, []byte) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var dup uint64
			s, _ := c.client.SessionStats()
			for _, p := range s.Paths {
				dup += p.DuplicateBytes
			}
			b.ReportMetric(float64(dup)/float64(b.N*len(data)), "dup/byte")
		})
	}
}

// throttle makes a secondary send about rate bytes per second: it waits
// before each piece (256 KiB) as long as the piece takes at that rate, as
// a slow link would.
func throttle(rate float64) func(*Secondary) {
	return func(s *Secondary) {
		per := time.Duration(float64(s.piece) / rate * float64(time.Second))
		s.beforePiece = func(ctx context.Context) {
			t := time.NewTimer(per)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
	}
}

func TestMultipathSlowSecondaryGetsLittle(t *testing.T) {
	// The secondary sends 2 MB/s, the primary on loopback as fast as the
	// machine lets it. Earliest-expected-completion gives the slow path
	// work only while it would finish first: its share of the bytes stays
	// near its share of the rates (the primary's measured in this run, as
	// a loaded machine slows it), and it still gets some.
	const slowRate = 2e6
	data := mpRandomBytes(8<<20, 20)
	files := map[string][]byte{"f.bin": data}
	c2 := mpStartClusterHooked(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)}, CoordinatorOptions{},
		func(_ int, s *Secondary) { throttle(slowRate)(s) })
	start := time.Now()
	got, _ := c2.readFile("f.bin", 0)
	elapsed := time.Since(start).Seconds()
	mpCheckSame(t, got, data)
	c2.waitDelivered(uint64(len(data)))
	sec := c2.counters(c2.secs[0].Addr)
	prim := c2.counters("")
	primRate := float64(prim.DeliveredBytes) / elapsed
	fair := slowRate / (slowRate + primRate)
	share := float64(sec.DeliveredBytes) / float64(len(data))
	t.Logf("%.2f s: primary delivered %d (%.1f MB/s), slow secondary %d = %.3f of the file, its rate share %.3f (assigned %d, late units %d, hedged to primary %d)",
		elapsed, prim.DeliveredBytes, primRate/1e6, sec.DeliveredBytes, share, fair, sec.AssignedBytes, sec.LateUnits, prim.HedgedBytes)
	if sec.DeliveredBytes == 0 {
		t.Errorf("the slow secondary delivered nothing")
	}
	// Twice its rate share, plus a 64 KiB unit queued twice over (the
	// slack of the in-flight target) for the tail.
	if limit := 2*fair + 4*float64(64<<10)/float64(len(data)); share > limit {
		t.Errorf("the slow secondary delivered %.3f of the file, more than %.3f (twice its rate share %.3f plus slack)", share, limit, fair)
	}
}

func TestMultipathTailHedge(t *testing.T) {
	// The secondary sends 1 MB/s, far below the rate assumed before any
	// report (12.5 MB/s): the primary finishes its units long before the
	// secondary's, then, idle, sends a copy of the secondary's unit.
	data := mpRandomBytes(1<<20, 30)
	files := map[string][]byte{"f.bin": data}
	c := mpStartClusterHooked(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)}, CoordinatorOptions{},
		func(_ int, s *Secondary) { throttle(1e6)(s) })
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	c.waitDelivered(uint64(len(data)))
	prim := c.counters("")
	sec := c.counters(c.secs[0].Addr)
	t.Logf("primary: %+v; secondary: %+v", prim, sec)
	if sec.AssignedBytes == 0 {
		t.Fatalf("the secondary was given no work")
	}
	if prim.HedgedBytes == 0 {
		t.Errorf("the primary hedged nothing")
	}
	if prim.DeliveredBytes+sec.DeliveredBytes != uint64(len(data)) {
		t.Errorf("delivered %d + %d bytes, want %d", prim.DeliveredBytes, sec.DeliveredBytes, len(data))
	}
}

// TestStallingSecondaryBacksOff: a secondary that comes up and then never
// sends (the client closes its path as stalled, every time) is re-added
// with a doubling wait, not at once each time; the reads all complete from
// the primary.
func TestStallingSecondaryBacksOff(t *testing.T) {
	data := mpRandomBytes(2<<20, 50)
	files := map[string][]byte{"f.bin": data}
	const stall, retry = 100 * time.Millisecond, 50 * time.Millisecond
	c := mpStartClusterWith(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files)},
		// Misses must not keep the secondary out of work: it must stall.
		CoordinatorOptions{PathRetryInitial: retry, PathRetryMax: 10 * time.Second, MissCooldown: time.Millisecond},
		func(_ int, s *Secondary) {
			s.beforePiece = func(ctx context.Context) { <-ctx.Done() } // never sends
		},
		func(conf *kwik.Config) { conf.PathStallTimeout = stall })
	// Reads for 2 s: the secondary is given work whenever its path is up.
	const span = 2 * time.Second
	start := time.Now()
	reads := 0
	for time.Since(start) < span {
		got, _ := c.readFile("f.bin", 0)
		mpCheckSame(t, got, data)
		reads++
	}
	pc := c.counters(c.secs[0].Addr)
	s, _ := c.client.SessionStats()
	t.Logf("%d reads in %v; secondary path added %d times, lost %d; %d stalls at the client", reads, time.Since(start).Round(time.Millisecond), pc.PathsAdded, pc.PathsLost, s.StalledPaths)
	if s.StalledPaths < 2 {
		t.Fatalf("%d stalls at the client, want at least 2 (the path stalls each time it is added)", s.StalledPaths)
	}
	// Each cycle takes at least the stall timeout plus the wait, which
	// doubles from 50 ms, jittered down by at most 20%: up to 2 s and a
	// little over, at most 6 adds (at the earliest 0, 140, 320, 580, 1000,
	// 1740 ms; the 7th not before 3120 ms). Without backoff a path would
	// be re-added every 150 ms: 14 adds.
	if pc.PathsAdded > 7 {
		t.Errorf("secondary path added %d times in %v, want at most 7 with a doubling wait", pc.PathsAdded, span)
	}
}

// TestAddSampleFirstWindowMustDeliver: a window in which an unmeasured path
// delivered nothing (a secondary answering units of a file it lacks) leaves
// it at its InitialRate guess, not at minRate, which would starve it of the
// next file's work; the first window with data measures it, and after that
// an idle window with nothing is a lower bound and changes nothing.
func TestAddSampleFirstWindowMustDeliver(t *testing.T) {
	const guess = 12.5e6
	p := &pathState{id: 1, rate: guess, avg: guess}
	p.addSample(0, true)
	p.addSample(0, false)
	if p.measured || p.rate != guess || p.avg != guess {
		t.Fatalf("after windows of nothing: measured %v, rate %v, avg %v; want unmeasured at %v", p.measured, p.rate, p.avg, guess)
	}
	p.addSample(3e6, false)
	if !p.measured || p.rate != 3e6 || p.avg != 3e6 {
		t.Fatalf("after a window of 3 MB/s: measured %v, rate %v, avg %v; want measured at 3e6", p.measured, p.rate, p.avg)
	}
	p.addSample(0, false)
	if p.rate != 3e6 || p.avg != 3e6 {
		t.Errorf("after an idle window of nothing: rate %v, avg %v; want 3e6", p.rate, p.avg)
	}
	p.addSample(0, true)
	if p.rate != 3e6 || p.avg != 0.75*3e6 {
		t.Errorf("after a busy window of nothing: rate %v, avg %v; want 3e6 (the largest of the last windows) and 2.25e6", p.rate, p.avg)
	}
}
