package fusefs

import (
	"crypto/sha256"
	"io"
	"os"
	"testing"

	"github.com/kwikfs/kwikfs/internal/remotetest"
)

// benchFile builds a remote with one 256 MiB file of 1 MiB chunks.
func benchFile(b *testing.B) (*remotetest.Remote, [32]byte) {
	const size = 256 << 20
	r := remotetest.New(1 << 20)
	data := remotetest.Content("bench", size)
	r.File("big", 0o644, 1, data)
	return r, sha256.Sum256(data)
}

// readThrough reads p sequentially with 1 MiB reads and checks its hash.
func readThrough(b *testing.B, p string, want [32]byte) {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != want {
		b.Fatal("content differs")
	}
}

// BenchmarkSequentialRead reads a 256 MiB file through a fresh mount: cold
// (every chunk fetched from an in-memory remote, verified and stored) and
// warm (every chunk from the store of a previous mount).
func BenchmarkSequentialRead(b *testing.B) {
	r, sum := benchFile(b)
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(256 << 20)
		for b.Loop() {
			b.StopTimer()
			store := openStore(b, b.TempDir())
			m := mountFS(b, r, store, nil, nil)
			b.StartTimer()
			readThrough(b, m.path("big"), sum)
			b.StopTimer()
			m.unmount()
			store.Close()
			b.StartTimer()
		}
	})
	b.Run("warm-store", func(b *testing.B) {
		store := openStore(b, b.TempDir())
		m := mountFS(b, r, store, nil, nil)
		readThrough(b, m.path("big"), sum)
		m.unmount()
		b.SetBytes(256 << 20)
		for b.Loop() {
			b.StopTimer()
			m := mountFS(b, r, store, nil, nil)
			b.StartTimer()
			readThrough(b, m.path("big"), sum)
			b.StopTimer()
			if st := m.fsys.Stats(); st.BytesFetched != 0 {
				b.Fatalf("warm read fetched %d bytes", st.BytesFetched)
			}
			m.unmount()
			b.StartTimer()
		}
	})
}
