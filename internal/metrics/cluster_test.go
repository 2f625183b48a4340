package metrics_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/transfer"
)

// quiet drops every record: kwik's logs would outlive the tests.
func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testCtx ends with the test, at most 30 s after it starts.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// writeRandom writes n random bytes (from seed) to root/name and returns
// them.
func writeRandom(t *testing.T, root, name string, n int, seed byte) []byte {
	t.Helper()
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(data)
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return data
}

// primaryAt is a Primary serving on a real kwik listener on 127.0.0.1.
type primaryAt struct {
	p    *server.Primary
	ln   *kwik.Listener
	addr string
}

// startPrimary serves root with a Primary (opts may be nil) on
// 127.0.0.1 until the test ends; mod, if not nil, adjusts the listener's
// configuration (which holds b's server certificate and signing key).
func startPrimary(t *testing.T, b *certgen.Bundle, root string, opts *server.PrimaryOptions, mod func(*kwik.Config)) *primaryAt {
	t.Helper()
	var o server.PrimaryOptions
	if opts != nil {
		o = *opts
	}
	o.Logger = quiet()
	p, err := server.NewPrimary(root, &o)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	conf := &kwik.Config{TLSConfig: tlsConf, SigningKey: b.SigningKey, Logger: quiet()}
	if mod != nil {
		mod(conf)
	}
	ln, err := kwik.Listen("127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ln.Close()
		p.Close()
	})
	return &primaryAt{p: p, ln: ln, addr: ln.Addr().String()}
}

// secondaryAt is a Secondary serving on a real kwik secondary.
type secondaryAt struct {
	s  *server.Secondary
	ks *kwik.Secondary
}

// startSecondary serves root with a Secondary on 127.0.0.1 until the test
// ends; mod, if not nil, adjusts the kwik secondary's configuration (which
// holds b's server certificate and verify key).
func startSecondary(t *testing.T, b *certgen.Bundle, root string, mod func(*kwik.Config)) *secondaryAt {
	t.Helper()
	tlsConf, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	conf := &kwik.Config{TLSConfig: tlsConf, VerifyKeys: b.VerifyKeys(), Logger: quiet()}
	if mod != nil {
		mod(conf)
	}
	ks, err := kwik.ListenSecondary("127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewSecondary(root, &server.SecondaryOptions{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ks) }()
	t.Cleanup(func() {
		cancel()
		ks.Close()
		if err := <-done; err != nil {
			t.Errorf("secondary Serve: %v", err)
		}
		s.Close()
	})
	return &secondaryAt{s: s, ks: ks}
}

// newClient returns a client of addr presenting b's client certificate,
// closed when the test ends.
func newClient(t *testing.T, b *certgen.Bundle, addr string) *transfer.Client {
	t.Helper()
	tlsConf, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := transfer.NewClient(addr, &transfer.ClientOptions{
		Config: &kwik.Config{TLSConfig: tlsConf, HandshakeTimeout: 5 * time.Second, Logger: quiet()},
		Logger: quiet(),
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond every 5 ms until it holds, failing the test after
// 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
