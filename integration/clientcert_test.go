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
		if len(st.Paths) != 2 || st.Paths[1].State != "up" || st.Paths[1].BytesDelivered == 0 {
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
		for binary, key := range map[string][]string{
			"kwik-primary":   {"--signing-key", filepath.Join(certDir, certgen.SigningKeyFile)},
			"kwik-secondary": {"--verify-key", filepath.Join(certDir, certgen.VerifyKeyFile)},
		} {
			cmd := exec.Command(bin(binary), append([]string{"--root", root, "--listen", "127.0.0.1:0",
				"--cert", filepath.Join(certDir, certgen.CertFile), "--key", filepath.Join(certDir, certgen.KeyFile)}, key...)...)
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

// TestSecondaryWithItsOwnCertificate gives each of two secondaries a
// certificate of its own from `kwikfs certs --server NAME --host NAME`,
// valid for its name and not for 127.0.0.1, and names them to the primary
// with --secondary ADDR,name=NAME: the mount copies a tree identically
// over both paths. A third secondary presenting mirror-1's certificate
// under mirror-3's name is refused by the client (its path never comes
// up), and the copy does not depend on it.
func TestSecondaryWithItsOwnCertificate(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "big.bin"), 24<<20, 9)
	makeSmallTree(t, filepath.Join(root, "small"))
	certDir := certs(t)
	for _, name := range []string{"mirror-1.test", "mirror-2.test"} {
		out := run(t, 30*time.Second, bin("kwikfs"), "certs", "--out", certDir, "--server", name)
		if !strings.Contains(out, "server-"+name+".pem") {
			t.Fatalf("kwikfs certs --server %s said %q", name, out)
		}
	}
	own := func(name string) []string {
		return []string{"--cert", filepath.Join(certDir, "server-"+name+".pem"), "--key", filepath.Join(certDir, "server-"+name+"-key.pem")}
	}
	s1 := startServer(t, "kwik-secondary", root, certDir, own("mirror-1.test")...)
	s2 := startServer(t, "kwik-secondary", root, certDir, own("mirror-2.test")...)
	impostor := startServer(t, "kwik-secondary", root, certDir, own("mirror-1.test")...)
	p := startPrimary(t, root, certDir, "--chunk-size", "262144",
		"--secondary", s1.addr+",name=mirror-1.test", "--secondary", s2.addr+",name=mirror-2.test",
		"--secondary", impostor.addr+",name=mirror-3.test")
	m := startMount(t, p.addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"))
	dst := filepath.Join(t.TempDir(), "copy")
	run(t, 2*time.Minute, "cp", "-r", m.dir, dst)
	compareTrees(t, root, dst, compareOptions{})
	st := m.status(t)
	delivered := map[string]uint64{}
	for _, ps := range st.Paths {
		delivered[ps.Remote] += ps.BytesDelivered
		if ps.Remote == impostor.addr && ps.State == "up" {
			t.Errorf("the impostor's path is up: %+v", ps)
		}
	}
	for _, s := range []*server{s1, s2} {
		if delivered[s.addr] == 0 {
			t.Errorf("secondary %s delivered nothing; paths %+v", s.addr, st.Paths)
		}
	}
}
