package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// TestClientCertificates runs a primary and a secondary that admit only
// clients with a certificate signed by their --client-ca. A mount with the
// certificate `kwikfs certs` wrote copies a tree identically over both
// paths, and so does one with a certificate `kwikfs certs --client`
// issued; a mount with no certificate, with one from another CA, or with
// an expired one fails at once, saying why, and does not mount. A server
// given neither --client-ca nor --allow-anonymous refuses to start.
func TestClientCertificates(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	makeSmallTree(t, root)
	writeRandomFile(t, filepath.Join(root, "big.bin"), 6<<20, 5)
	certDir := certs(t)
	ca := filepath.Join(certDir, certgen.CAFile)
	p, _ := startCluster(t, root, certDir, 1)

	t.Run("good", func(t *testing.T) {
		m := startMount(t, p.addr, ca, filepath.Join(t.TempDir(), "cache"))
		dst := filepath.Join(t.TempDir(), "copy")
		run(t, 2*time.Minute, "cp", "-r", m.dir, dst)
		compareTrees(t, root, dst, compareOptions{})
		st := m.status(t)
		if len(st.Paths) != 2 || st.Paths[1].State != "up" || st.Paths[1].BytesReceived == 0 {
			t.Errorf("paths %+v; want the secondary's up and delivering", st.Paths)
		}
	})

	t.Run("issued", func(t *testing.T) {
		out := run(t, 30*time.Second, bin("kwikfs"), "certs", "--out", certDir, "--client", "laptop", "--validity", "24h")
		if !strings.Contains(out, "client-laptop.pem") {
			t.Errorf("kwikfs certs --client said %q", out)
		}
		m := startMount(t, p.addr, ca, filepath.Join(t.TempDir(), "cache"),
			"--cert", filepath.Join(certDir, "client-laptop.pem"), "--key", filepath.Join(certDir, "client-laptop-key.pem"))
		dst := filepath.Join(t.TempDir(), "copy")
		run(t, 2*time.Minute, "cp", "-r", m.dir, dst)
		compareTrees(t, root, dst, compareOptions{})
	})

	other := certs(t)
	expired := filepath.Join(t.TempDir(), "expired")
	caKeys, err := certgen.LoadCA(ca, filepath.Join(certDir, certgen.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := caKeys.IssueClient("late", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := certgen.WritePair(expired, certgen.ClientCertFile, certgen.ClientKeyFile, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		why  string
	}{
		{"none", nil, "none was presented"},
		{"another CA", clientCertArgs(other), "does not trust the CA"},
		{"expired", clientCertArgs(expired), "expired"},
	} {
		t.Run(c.name, func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if isMounted(mnt) {
					unix.Unmount(mnt, unix.MNT_DETACH)
				}
			})
			args := append([]string{"mount", "--primary", p.addr, "--ca", ca, "--cache", filepath.Join(t.TempDir(), "cache"), "--log-level", "warn"}, c.args...)
			started := time.Now()
			m := start(t, "kwikfs", append(args, mnt)...)
			err := waitExit(t, m, 30*time.Second)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("kwikfs mount: %v, want exit status 1\n%s", err, m.Output())
			}
			out := m.Output()
			for _, want := range []string{"requires a client certificate signed by its --client-ca", c.why} {
				if !strings.Contains(out, want) {
					t.Errorf("the error lacks %q:\n%s", want, out)
				}
			}
			if d := time.Since(started); d > 10*time.Second {
				t.Errorf("the refusal took %v", d)
			}
			if isMounted(mnt) {
				t.Error("mounted without a certificate the servers accept")
			}
		})
	}

	t.Run("server without --client-ca", func(t *testing.T) {
		for _, binary := range []string{"kwik-primary", "kwik-secondary"} {
			cmd := exec.Command(bin(binary), "--root", root, "--listen", "127.0.0.1:0",
				"--cert", filepath.Join(certDir, certgen.CertFile), "--key", filepath.Join(certDir, certgen.KeyFile),
				"--cluster-key", filepath.Join(certDir, certgen.ClusterKeyFile))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Errorf("%s without --client-ca: %v, want exit status 2\n%s", binary, err, out)
			}
			if !strings.Contains(string(out), "--client-ca FILE") || !strings.Contains(string(out), "--allow-anonymous") {
				t.Errorf("%s without --client-ca says:\n%s", binary, out)
			}
		}
	})
}
