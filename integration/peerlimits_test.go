package integration

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
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
