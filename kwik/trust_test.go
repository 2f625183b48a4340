package kwik

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// TestDialCertificateNameMismatch dials a server whose certificate, signed
// by the trusted CA, names another host: the dial fails at once with the
// TLS verification error, not after a timeout.
func TestDialCertificateNameMismatch(t *testing.T) {
	b, err := certgen.Generate([]string{"10.9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	s, err := Dial(testCtx(t), l.Addr().String(), &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	if err == nil {
		s.Close()
		t.Fatal("Dial succeeded against a certificate for another host")
	}
	var he x509.HostnameError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "certificate is valid for 10.9.9.9, not 127.0.0.1") {
		t.Fatalf("err = %v, want a hostname verification error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
}

// TestAddPathToUntrustedSecondary adds a path to a secondary that holds the
// cluster key but a certificate from another CA: the client refuses it at
// once, the primary learns why, and the session carries on.
func TestAddPathToUntrustedSecondary(t *testing.T) {
	other, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	otherTLS, err := other.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, func(_, sec, _ *Config) { sec.TLSConfig = otherTLS })
	start := time.Now()
	_, err = c.srv.AddPath(testCtx(t), c.secs[0].AdvertisedAddr())
	var pe *PathError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "certificate signed by unknown authority") {
		t.Fatalf("AddPath to an untrusted secondary: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	if st := c.secs[0].Stats(); st.PathsAdmitted != 0 {
		t.Fatalf("secondary admitted a path: %+v", st)
	}
	c.request(t)
	if c.srv.Context().Err() != nil {
		t.Fatal("session closed")
	}
}

// TestDialClientCertificates dials a listener that requires client
// certificates (RequireClientCertificates): a client with none, with one
// from another CA, or with an expired one is refused at once with an
// error matching ErrClientCertificate that says why; a client with a good
// one opens a session.
func TestDialClientCertificates(t *testing.T) {
	dir := t.TempDir()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	srvTLS, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	if err := RequireClientCertificates(srvTLS, filepath.Join(dir, certgen.CAFile)); err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			s, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			defer s.Close()
		}
	}()

	other, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certgen.LoadCA(filepath.Join(dir, certgen.CAFile), filepath.Join(dir, certgen.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	expiredCert, expiredKey, err := ca.IssueClient("late", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cert []byte // nil: no certificate
		key  []byte
		why  string // "": admitted
	}{
		{"none", nil, nil, "none was presented"},
		{"another CA", other.ClientCertPEM, other.ClientKeyPEM, "does not trust the CA"},
		{"expired", expiredCert, expiredKey, "expired"},
		{"good", b.ClientCertPEM, b.ClientKeyPEM, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cliTLS, err := b.ClientTLS()
			if err != nil {
				t.Fatal(err)
			}
			cliTLS.Certificates = nil
			if c.cert != nil {
				pair, err := tls.X509KeyPair(c.cert, c.key)
				if err != nil {
					t.Fatal(err)
				}
				cliTLS.Certificates = []tls.Certificate{pair}
			}
			start := time.Now()
			s, err := Dial(testCtx(t), l.Addr().String(), &Config{TLSConfig: cliTLS, Logger: quietLogger()})
			if c.why == "" {
				if err != nil {
					t.Fatalf("Dial with a good certificate: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, ErrClientCertificate) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("err = %v, want ErrClientCertificate saying %q", err, c.why)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("refusal took %v", d)
			}
		})
	}
	// The listener counts each refusal once the connection is gone.
	waitFor(t, "the refusals counted", func() bool { return l.Stats().Refused.ClientCertificates >= 3 })
	if got := l.Stats().Refused; got != (Refusals{ClientCertificates: 3}) {
		t.Errorf("Stats().Refused = %+v, want 3 client certificates refused", got)
	}
}

// TestAddPathAsServerName: a secondary whose certificate names it alone
// ("mirror-1.test", not its address) is refused by AddPath, which has the
// client verify the host of the address, and admitted by AddPathAs with
// the name; a secondary presenting a certificate for another name is
// refused even by AddPathAs.
func TestAddPathAsServerName(t *testing.T) {
	testTLS(t)
	dir := t.TempDir()
	if err := bundle.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := certgen.LoadCA(filepath.Join(dir, certgen.CAFile), filepath.Join(dir, certgen.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := func(name string) *tls.Config {
		certPEM, keyPEM, err := ca.IssueServer([]string{name}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	c := newCluster(t, 0, nil)
	listen := func(name string) *Secondary {
		sec, err := ListenSecondary("127.0.0.1:0", &Config{TLSConfig: serverTLS(name), VerifyKeys: verifyKeys(t), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sec.Close() })
		serveCommands(t, sec, writePattern(t))
		return sec
	}
	// The primary learns why from the client's PATH_STATUS: the text.
	mirror := listen("mirror-1.test")
	if _, err := c.srv.AddPath(testCtx(t), mirror.AdvertisedAddr()); err == nil || !strings.Contains(err.Error(), "x509: cannot validate certificate for 127.0.0.1") {
		t.Fatalf("AddPath to a secondary certified as mirror-1.test: %v, want a host name error", err)
	}
	id, err := c.srv.AddPathAs(testCtx(t), mirror.AdvertisedAddr(), "mirror-1.test")
	if err != nil {
		t.Fatalf("AddPathAs mirror-1.test: %v", err)
	}
	if st := pathStats(t, c.cli, id); st.State != PathUp {
		t.Fatalf("path %d %v", id, st.State)
	}
	impostor := listen("mirror-2.test")
	if _, err := c.srv.AddPathAs(testCtx(t), impostor.AdvertisedAddr(), "mirror-1.test"); err == nil || !strings.Contains(err.Error(), "x509: certificate is valid for mirror-2.test, not mirror-1.test") {
		t.Fatalf("AddPathAs mirror-1.test to a secondary certified as mirror-2.test: %v, want a host name error", err)
	}
}
