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
