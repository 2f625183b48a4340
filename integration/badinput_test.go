package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"golang.org/x/sys/unix"
)

// clientTLS returns the TLS configuration of a client of the servers whose
// certificates certs wrote into certDir, presenting its client certificate.
func clientTLS(t *testing.T, certDir string) *tls.Config {
	t.Helper()
	conf, err := kwik.LoadClientTLS(filepath.Join(certDir, certgen.CAFile), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := kwik.UseClientCertificate(conf, filepath.Join(certDir, certgen.ClientCertFile), filepath.Join(certDir, certgen.ClientKeyFile)); err != nil {
		t.Fatal(err)
	}
	return conf
}

// TestBadInputLeavesServerServing throws hostile and broken input at a real
// kwik-primary, one case at a time, and checks that each gets a clear error,
// that nothing outside the root leaks, and that afterwards a normal client
// still copies the tree byte for byte.
func TestBadInputLeavesServerServing(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "tree")
	makeTree(t, root, 3<<20)
	secret := filepath.Join(base, "outside-secret")
	if err := os.WriteFile(secret, []byte("must never leave the server"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside-secret", filepath.Join(root, "escape-file")); err != nil {
		t.Fatal(err)
	}
	certDir := certs(t)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144")

	t.Run("traversal", func(t *testing.T) {
		c := transfer.NewClient(p.addr, &transfer.ClientOptions{Config: &kwik.Config{TLSConfig: clientTLS(t, certDir)}})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, path := range []string{
			"../outside-secret", "/etc/passwd", "many/../../outside-secret", "a\x00b",
			"escape/outside-secret", "escape-file", "escape/tree/empty",
		} {
			if _, err := c.Manifest(ctx, path); !errors.Is(err, transfer.ErrOutsideRoot) {
				t.Errorf("MANIFEST %q: %v, want ErrOutsideRoot", path, err)
			}
			if _, err := c.Stat(ctx, path); !errors.Is(err, transfer.ErrOutsideRoot) && path != "escape-file" {
				t.Errorf("STAT %q: %v, want ErrOutsideRoot", path, err)
			}
			if _, err := c.List(ctx, path); !errors.Is(err, transfer.ErrOutsideRoot) && path != "escape-file" {
				t.Errorf("LIST %q: %v, want ErrOutsideRoot", path, err)
			}
		}
		// The same session still serves a legitimate request.
		if a, err := c.Stat(ctx, "one-byte"); err != nil || a.Size != 1 {
			t.Fatalf("STAT one-byte after traversal attempts: %+v, %v", a, err)
		}
		if st := c.Stats(); st.DataBytes != 0 {
			t.Errorf("file data received during traversal attempts: %d bytes", st.DataBytes)
		}
	})

	t.Run("wrong CA", func(t *testing.T) {
		other := certs(t)
		cache := filepath.Join(t.TempDir(), "cache")
		mnt := t.TempDir()
		t.Cleanup(func() {
			if isMounted(mnt) {
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		})
		args := append([]string{"mount", "--primary", p.addr, "--ca", filepath.Join(other, certgen.CAFile)}, clientCertArgs(p.certs)...)
		m := start(t, "kwikfs", append(args, "--cache", cache, "--log-level", "warn", mnt)...)
		err := waitExit(t, m, 30*time.Second)
		if err == nil {
			t.Fatal("mount with a CA that did not sign the server's certificate succeeded")
		}
		if out := m.Output(); !strings.Contains(out, "certificate") {
			t.Errorf("error does not mention the certificate:\n%s", out)
		}
		if isMounted(mnt) {
			t.Error("mounted despite the refused certificate")
		}
	})

	t.Run("oversized control frame", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conf := clientTLS(t, certDir)
		conf.NextProtos = []string{kwik.ALPN}
		conn, err := quic.DialAddr(ctx, p.addr, conf, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		ctl, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A SETTINGS frame claiming a 1 GiB body.
		frame := quicvarint.Append(quicvarint.Append(nil, 0), 1<<30)
		if _, err := ctl.Write(append(frame, make([]byte, 1024)...)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-conn.Context().Done():
			var appErr *quic.ApplicationError
			if cause := context.Cause(conn.Context()); !errors.As(cause, &appErr) || !appErr.Remote {
				t.Errorf("connection ended with %v, want an application error from the server", cause)
			}
		case <-ctx.Done():
			t.Fatal("server kept a session open after an oversized control frame")
		}
	})

	t.Run("malformed request", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sess, err := kwik.Dial(ctx, p.addr, &kwik.Config{TLSConfig: clientTLS(t, certDir)})
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		exchange := func(req []byte) []byte {
			st, err := sess.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(req); err != nil {
				t.Fatal(err)
			}
			st.Close()
			reply, err := io.ReadAll(st)
			if err != nil {
				t.Fatalf("reading reply to %x: %v", req, err)
			}
			return reply
		}
		for _, req := range [][]byte{{0xff, 0x00}, {}, {byte(1), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}} {
			reply := exchange(req)
			if len(reply) < 2 || reply[0] == 0 {
				t.Errorf("request %x: reply %x, want an error status and message", req, reply)
			}
		}
		// A well-formed STAT of the root on the same session: status OK.
		if reply := exchange([]byte{1, 0}); len(reply) == 0 || reply[0] != 0 {
			t.Errorf("STAT of the root after malformed requests: reply %x", reply)
		}
	})

	// After all of that, a normal mount copies the tree correctly.
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 2*time.Minute, "rsync", "-a", m.dir+"/", dst+"/")
	compareTrees(t, root, dst, compareOptions{modes: true, mtimes: true})
}
