package linkemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/quic-go/quic-go"
)

const alpn = "kwikfs-linkemu-test"

// quicServer serves downloads: on every stream it reads an 8-byte length and
// writes that many bytes of pattern, then closes the stream.
type quicServer struct {
	ln   *quic.Listener
	bun  *certgen.Bundle
	done chan struct{}
}

func startQUICServer(tb testing.TB) *quicServer {
	tb.Helper()
	bun, err := certgen.Generate(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tlsConf, err := bun.ServerTLS()
	if err != nil {
		tb.Fatal(err)
	}
	tlsConf.NextProtos = []string{alpn}
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s := &quicServer{ln: ln, bun: bun, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(s.done)
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go serveConn(ctx, conn)
		}
	}()
	tb.Cleanup(func() {
		cancel()
		ln.Close()
		<-s.done
	})
	return s
}

func serveConn(ctx context.Context, conn *quic.Conn) {
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		var req [8]byte
		if _, err := io.ReadFull(str, req[:]); err != nil {
			str.CancelWrite(1)
			continue
		}
		buf := make([]byte, 64<<10)
		size := int64(binary.BigEndian.Uint64(req[:]))
		for off := int64(0); off < size; off += int64(len(buf)) {
			n := min(int64(len(buf)), size-off)
			fill(buf[:n], off)
			if _, err := str.Write(buf[:n]); err != nil {
				return
			}
		}
		str.Close()
	}
}

// fill writes the pattern for offset off: each 8-byte word holds its own
// offset, so a lost, duplicated or misplaced range shows. off and len(p)
// must be multiples of 8.
func fill(p []byte, off int64) {
	for i := 0; i < len(p); i += 8 {
		binary.BigEndian.PutUint64(p[i:], uint64(off)+uint64(i))
	}
}

type transfer struct {
	bytes     int64
	total     time.Duration // request sent to last byte
	firstLast time.Duration // first byte to last byte
}

// goodput is in bits per second at the receiver, from sending the request
// to receiving the last byte (one round trip more than the data took).
func (tr transfer) goodput() float64 {
	return float64(tr.bytes) * 8 / tr.total.Seconds()
}

// download fetches size bytes (a multiple of 8) from the server at addr and
// verifies every one.
func download(ctx context.Context, s *quicServer, addr string, size int64) (transfer, error) {
	tlsConf, err := s.bun.ClientTLS()
	if err != nil {
		return transfer{}, err
	}
	tlsConf.NextProtos = []string{alpn}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, nil)
	if err != nil {
		return transfer{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return transfer{}, err
	}
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(size))
	start := time.Now()
	if _, err := str.Write(req[:]); err != nil {
		return transfer{}, err
	}
	if err := str.Close(); err != nil {
		return transfer{}, err
	}
	buf := make([]byte, 64<<10)
	want := make([]byte, len(buf))
	var first time.Time
	var off int64
	for off < size {
		n, err := io.ReadFull(str, buf[:min(int64(len(buf)), size-off)])
		if first.IsZero() && n > 0 {
			first = time.Now()
		}
		if err != nil {
			return transfer{}, fmt.Errorf("read at %d of %d: %w", off, size, err)
		}
		fill(want[:n], off)
		if string(buf[:n]) != string(want[:n]) {
			return transfer{}, fmt.Errorf("wrong bytes in [%d, %d)", off, off+int64(n))
		}
		off += int64(n)
	}
	end := time.Now()
	if n, err := str.Read(buf[:1]); n != 0 || !errors.Is(err, io.EOF) {
		return transfer{}, fmt.Errorf("after %d bytes: read %d, %v; want EOF", size, n, err)
	}
	return transfer{bytes: size, total: end.Sub(start), firstLast: end.Sub(first)}, nil
}

// TestQUICThroughBottleneck is the acceptance check: one quic-go stream
// through a 100 Mbit/s, 10 ms RTT relay gets 90-100% of 100 Mbit/s of
// goodput, measured at the receiver from sending the request to the last
// byte.
//
// The machine is shared (2 cores, other test binaries): when the whole
// process is descheduled for tens of milliseconds, the link idles and no
// emulator can make up for it. So the transfer is tried up to
// bottleneckAttempts times, on a fresh relay and connection each, and the
// test passes on the first attempt in 90-100%; every attempt is logged with
// how late the relay delivered (DirStats.MaxLate shows a starved process).
// An attempt above 100% fails at once: the bottleneck let too much through.
//
// Under the race detector the transfer is smaller, tried once, and only its
// bytes are checked: the detector, not the link, would set the rate.
func TestQUICThroughBottleneck(t *testing.T) {
	const rate = 100e6
	size, attempts := int64(32<<20), bottleneckAttempts
	if raceEnabled {
		size, attempts = 2<<20, 1
	}
	s := startQUICServer(t)
	var ratios []float64
	for attempt := range attempts {
		ratio := bottleneckTransfer(t, s, rate, size)
		ratios = append(ratios, ratio)
		if raceEnabled {
			t.Log("race detector on: goodput not asserted")
			return
		}
		if ratio > 1.0 {
			t.Fatalf("attempt %d: goodput %.1f%% of the bottleneck rate, above 100%%", attempt+1, 100*ratio)
		}
		if ratio >= 0.90 {
			return
		}
	}
	t.Fatalf("goodput in %d attempts: %.3f of the bottleneck rate; want one in 0.90-1.00", attempts, ratios)
}

// bottleneckAttempts is how many transfers TestQUICThroughBottleneck tries.
const bottleneckAttempts = 3

// bottleneckTransfer downloads size bytes through a new relay limited to
// rate with a 10 ms RTT and returns goodput / rate.
func bottleneckTransfer(t *testing.T, s *quicServer, rate float64, size int64) float64 {
	t.Helper()
	r, err := New(s.ln.Addr().String(), Config{RateBitsPerSec: int64(rate), Delay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := download(ctx, s, r.Addr(), size)
	if err != nil {
		t.Fatal(err)
	}
	ratio := tr.goodput() / rate
	down := r.Stats().ServerToClient
	t.Logf("%d MiB through 100 Mbit/s, 10 ms RTT: goodput %.1f Mbit/s = %.1f%% of the rate (request to last byte, %v); first to last byte %.1f%% (%v)",
		size>>20, tr.goodput()/1e6, 100*ratio, tr.total.Round(time.Millisecond),
		100*float64(size)*8/tr.firstLast.Seconds()/rate, tr.firstLast.Round(time.Millisecond))
	t.Logf("server to client: %d datagrams forwarded, %d dropped by the queue, delivered late by %v on average, %v at most",
		down.Forwarded.Packets, down.DroppedQueue.Packets, meanLate(down), down.MaxLate.Round(time.Microsecond))
	if down.Forwarded.Bytes < uint64(size) {
		t.Fatalf("relay forwarded %d bytes down for a %d-byte transfer", down.Forwarded.Bytes, size)
	}
	return ratio
}

func meanLate(d DirStats) time.Duration {
	if d.Forwarded.Packets == 0 {
		return 0
	}
	return (d.TotalLate / time.Duration(d.Forwarded.Packets)).Round(time.Microsecond)
}

func TestQUICUnlimitedRelay(t *testing.T) {
	size := int64(64 << 20)
	if raceEnabled {
		size = 4 << 20
	}
	s := startQUICServer(t)
	r, err := New(s.ln.Addr().String(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := download(ctx, s, s.ln.Addr().String(), size)
	if err != nil {
		t.Fatal(err)
	}
	relayed, err := download(ctx, s, r.Addr(), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB, no limits: direct %.0f Mbit/s, through the relay %.0f Mbit/s; relay late by %v on average, %v at most",
		size>>20, direct.goodput()/1e6, relayed.goodput()/1e6,
		meanLate(r.Stats().ServerToClient), r.Stats().ServerToClient.MaxLate.Round(time.Microsecond))
}

func benchmarkDownload(b *testing.B, viaRelay bool) {
	const size = 16 << 20
	s := startQUICServer(b)
	addr := s.ln.Addr().String()
	if viaRelay {
		r, err := New(addr, Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		addr = r.Addr()
	}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := download(context.Background(), s, addr, size); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQUICDirect and BenchmarkQUICRelay compare one quic-go download
// (dial, 16 MiB, close) without and with an unlimited relay in the path.
func BenchmarkQUICDirect(b *testing.B) { benchmarkDownload(b, false) }
func BenchmarkQUICRelay(b *testing.B)  { benchmarkDownload(b, true) }
