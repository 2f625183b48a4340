package kwik

import (
	"crypto/x509"
	"errors"
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
