package kwik

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

const (
	benchSize  = 256 << 20 // bytes moved per iteration
	benchChunk = 1 << 20   // bytes per Write and per Read
)

// BenchmarkThroughput moves benchSize bytes one way over one stream, both
// ends in this process over loopback: "raw-quic" on a plain quic-go stream,
// "kwik" on a logical stream from client to server, "kwik-download" from
// server to client (where the client also reports deliveries to the
// server), with the same TLS and QUIC settings and the same socket setup. The ratio of their MB/s is kwik's overhead; so is the
// inverse ratio of their cpu-ms/MB (process CPU time per MB moved), which
// other load on the machine disturbs less.
//
//	go test -run x -bench Throughput -benchtime 3x ./kwik
func BenchmarkThroughput(b *testing.B) {
	b.Run("raw-quic", benchRawQUIC)
	b.Run("kwik", benchKwik)
	b.Run("kwik-download", benchKwikDownload)
}

// pump writes benchSize bytes to w in benchChunk writes and closes it, while
// reading to EOF the stream that accept returns (a receiver sees a stream
// with its first bytes); it fails b unless exactly benchSize bytes arrive.
func pump(b *testing.B, w io.WriteCloser, accept func() (io.Reader, error)) {
	src := make([]byte, benchChunk)
	for i := range src {
		src[i] = byte(i)
	}
	errc := make(chan error, 1)
	go func() {
		for n := 0; n < benchSize; n += len(src) {
			if _, err := w.Write(src); err != nil {
				errc <- err
				return
			}
		}
		errc <- w.Close()
	}()
	r, err := accept()
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, benchChunk)
	total := 0
	for {
		n, err := r.Read(dst)
		total += n
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if total != benchSize {
		b.Fatalf("received %d bytes, want %d", total, benchSize)
	}
}

func benchRawQUIC(b *testing.B) {
	srvTLS, cliTLS := testTLS(b)
	sc, err := (&Config{TLSConfig: srvTLS, Logger: quietLogger()}).resolve()
	if err != nil {
		b.Fatal(err)
	}
	cc, err := (&Config{TLSConfig: cliTLS, Logger: quietLogger()}).resolve()
	if err != nil {
		b.Fatal(err)
	}
	cc.TLSConfig.ServerName = "127.0.0.1"
	str, err := newTransport("127.0.0.1:0", sc.Logger)
	if err != nil {
		b.Fatal(err)
	}
	defer str.release()
	ln, err := str.tr.Listen(sc.TLSConfig, sc.quicConfig(false))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctr, err := newTransport("0.0.0.0:0", cc.Logger)
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.release()
	ctx := context.Background()
	cconn, err := ctr.tr.Dial(ctx, ln.Addr().(*net.UDPAddr), cc.TLSConfig, cc.quicConfig(true))
	if err != nil {
		b.Fatal(err)
	}
	defer cconn.CloseWithError(0, "")
	sconn, err := ln.Accept(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer sconn.CloseWithError(0, "")

	b.SetBytes(benchSize)
	defer reportCPU(b)()
	for range b.N {
		w, err := cconn.OpenUniStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		pump(b, w, func() (io.Reader, error) { return sconn.AcceptUniStream(ctx) })
	}
}

func benchKwik(b *testing.B) {
	p := newPair(b, nil)
	ctx := context.Background()
	b.SetBytes(benchSize)
	defer reportCPU(b)()
	for range b.N {
		w, err := p.cli.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		pump(b, w, func() (io.Reader, error) { return p.srv.AcceptStream(ctx) })
	}
}

func benchKwikDownload(b *testing.B) {
	p := newPair(b, nil)
	ctx := context.Background()
	b.SetBytes(benchSize)
	defer reportCPU(b)()
	for range b.N {
		w, err := p.srv.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		pump(b, w, func() (io.Reader, error) { return p.cli.AcceptStream(ctx) })
	}
}

// reportCPU resets the timer and returns a function that reports the
// process CPU time per MB moved ("cpu-ms/MB"), a measure less disturbed by
// other load on the machine than MB/s.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	b.ResetTimer()
	return func() {
		b.StopTimer()
		mb := float64(b.N) * benchSize / 1e6
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/1e3/mb, "cpu-ms/MB")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
