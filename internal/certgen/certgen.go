// Package certgen makes the key material a kwikfs cluster needs for a quick
// start: a private certificate authority, a server certificate it signs, and
// the cluster key that the primary and its secondaries share.
//
// It is meant for `kwikfs certs`, demos and tests. A production cluster may use
// certificates from any CA; kwikfs only needs the CA certificate to verify
// servers.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names that WriteDir writes and the commands expect.
const (
	CAFile         = "ca.pem"
	CertFile       = "server.pem"
	KeyFile        = "server-key.pem"
	ClusterKeyFile = "cluster.key"
)

// ClusterKeySize is the length in bytes of a cluster key.
const ClusterKeySize = 32

// Validity is how long generated certificates stay valid.
const Validity = 10 * 365 * 24 * time.Hour

// Bundle holds PEM-encoded key material and a fresh cluster key.
type Bundle struct {
	CAPEM      []byte // CA certificate
	CertPEM    []byte // server certificate, signed by the CA
	KeyPEM     []byte // server private key (PKCS#8)
	ClusterKey []byte // ClusterKeySize random bytes
	Hosts      []string
}

// Generate makes a CA and a server certificate valid for hosts: each entry is
// a DNS name or an IP address. With no hosts it uses "localhost", 127.0.0.1
// and ::1.
func Generate(hosts []string) (*Bundle, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kwikfs CA", Organization: []string{"kwikfs"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"kwikfs"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode server key: %w", err)
	}
	ck := make([]byte, ClusterKeySize)
	if _, err := rand.Read(ck); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return &Bundle{
		CAPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		ClusterKey: ck,
		Hosts:      append([]string(nil), hosts...),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// ServerTLS returns a TLS 1.3 server configuration presenting the server
// certificate.
func (b *Bundle) ServerTLS() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load server key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

// ClientTLS returns a TLS 1.3 client configuration that trusts only the
// bundle's CA. ServerName is left empty, so it is taken from the dialled
// address.
func (b *Bundle) ClientTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CAPEM) {
		return nil, errors.New("no certificate in CA PEM")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// WriteDir writes CAFile, CertFile, KeyFile and ClusterKeyFile (hex) into dir,
// creating it. Private material is written with mode 0600. Existing files are
// not overwritten: WriteDir fails with an error wrapping fs.ErrExist instead.
func (b *Bundle) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, b.CAPEM, 0o644},
		{CertFile, b.CertPEM, 0o644},
		{KeyFile, b.KeyPEM, 0o600},
		{ClusterKeyFile, []byte(hex.EncodeToString(b.ClusterKey) + "\n"), 0o600},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		_, werr := fh.Write(f.data)
		cerr := fh.Close()
		if err := errors.Join(werr, cerr); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// ReadClusterKey reads a cluster key file written by WriteDir: hex text,
// surrounding white space ignored. The key must be ClusterKeySize bytes.
func ReadClusterKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster key: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: not hex: %w", path, err)
	}
	if len(key) != ClusterKeySize {
		return nil, fmt.Errorf("cluster key %s: %d bytes, want %d", path, len(key), ClusterKeySize)
	}
	return key, nil
}
