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
}
