// Package certgen makes the key material a kwikfs cluster needs: a private
// certificate authority, server certificates and client certificates it
// signs, and the primary's Ed25519 signing key, whose public half the
// secondaries hold to verify path tokens and relayed commands.
//
// It is meant for `kwikfs certs`, demos and tests. A production cluster may use
// certificates from any CA; kwikfs only needs the CA certificates to verify
// servers and clients.
package certgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names that WriteDir writes and the commands expect.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	CertFile       = "server.pem"
	KeyFile        = "server-key.pem"
	ClientCertFile = "client.pem"
	ClientKeyFile  = "client-key.pem"
	SigningKeyFile = "signing-key.pem" // the primary's alone
	VerifyKeyFile  = "verify-key.pem"  // every secondary's
)

// Validity is how long generated certificates stay valid.
const Validity = 10 * 365 * 24 * time.Hour

// DefaultClientName is the common name of the client certificate Generate
// issues.
const DefaultClientName = "kwikfs client"

// Bundle holds PEM-encoded key material and a fresh signing key.
type Bundle struct {
	CAPEM         []byte // CA certificate
	CAKeyPEM      []byte // CA private key (PKCS#8): it issues more certificates
	CertPEM       []byte // server certificate, signed by the CA
	KeyPEM        []byte // server private key (PKCS#8)
	ClientCertPEM []byte // client certificate (DefaultClientName), signed by the CA
	ClientKeyPEM  []byte // client private key (PKCS#8)
	SigningKey    ed25519.PrivateKey
	Hosts         []string
}

// VerifyKeys returns the public half of the bundle's signing key, as a
// secondary holds it (kwik.Config.VerifyKeys).
func (b *Bundle) VerifyKeys() []ed25519.PublicKey {
	return []ed25519.PublicKey{b.SigningKey.Public().(ed25519.PublicKey)}
}

// CA is a certificate authority that issues server and client
// certificates.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte // PKCS#8
}

// NewCA makes a CA with a fresh P-256 key, valid for Validity.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kwikfs CA", Organization: []string{"kwikfs"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA certificate and its private key (PEM; the key PKCS#8,
// as WriteDir writes it), and checks that they belong together.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA %s / %s: %w", certFile, keyFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// IssueServer issues a server certificate valid for hosts (DNS names or IP
// addresses; the first is the common name) from notBefore to notAfter,
// with a fresh P-256 key. It returns the certificate and key as PEM.
func (ca *CA) IssueServer(hosts []string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("a server certificate needs a host")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{"kwikfs"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, notBefore, notAfter)
}

// IssueClient issues a client certificate with common name name, valid
// from notBefore to notAfter, with a fresh P-256 key. It returns the
// certificate and key as PEM.
func (ca *CA) IssueClient(name string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if name == "" {
		return nil, nil, errors.New("a client certificate needs a name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"kwikfs"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, notBefore, notAfter)
}

// issue signs tmpl, completed with a serial number, the validity and the
// key usage, over a fresh P-256 key.
func (ca *CA) issue(tmpl *x509.Certificate, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Generate makes a CA, a server certificate valid for hosts (each a DNS
// name or an IP address; with none, "localhost", 127.0.0.1 and ::1), a
// client certificate named DefaultClientName, and a signing key.
func Generate(hosts []string) (*Bundle, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.IssueServer(hosts, now.Add(-time.Hour), now.Add(Validity))
	if err != nil {
		return nil, err
	}
	clientPEM, clientKeyPEM, err := ca.IssueClient(DefaultClientName, now.Add(-time.Hour), now.Add(Validity))
	if err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &Bundle{
		CAPEM: ca.CertPEM, CAKeyPEM: ca.KeyPEM,
		CertPEM: certPEM, KeyPEM: keyPEM,
		ClientCertPEM: clientPEM, ClientKeyPEM: clientKeyPEM,
		SigningKey: sk,
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
// bundle's CA and presents the bundle's client certificate. ServerName is
// left empty, so it is taken from the dialled address.
func (b *Bundle) ClientTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CAPEM) {
		return nil, errors.New("no certificate in CA PEM")
	}
	cert, err := tls.X509KeyPair(b.ClientCertPEM, b.ClientKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load client key pair: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

// WriteDir writes CAFile, CAKeyFile, CertFile, KeyFile, ClientCertFile,
// ClientKeyFile, SigningKeyFile and VerifyKeyFile into dir, creating it.
// Private material is written with mode 0600. Existing files are not
// overwritten: WriteDir fails with an error wrapping fs.ErrExist instead,
// before it writes anything.
func (b *Bundle) WriteDir(dir string) error {
	signing, verify, err := EncodeSigningKey(b.SigningKey)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{
		{CAFile, b.CAPEM, 0o644},
		{CAKeyFile, b.CAKeyPEM, 0o600},
		{CertFile, b.CertPEM, 0o644},
		{KeyFile, b.KeyPEM, 0o600},
		{ClientCertFile, b.ClientCertPEM, 0o644},
		{ClientKeyFile, b.ClientKeyPEM, 0o600},
		{SigningKeyFile, signing, 0o600},
		{VerifyKeyFile, verify, 0o644},
	})
}

// WriteSigningKey writes a fresh signing key into dir as SigningKeyFile
// and VerifyKeyFile, creating dir; like WriteDir it overwrites nothing.
// It is the first step of replacing a primary's key (see docs/operations.md).
func WriteSigningKey(dir string) error {
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	signing, verify, err := EncodeSigningKey(sk)
	if err != nil {
		return err
	}
	return writeFiles(dir, []file{{SigningKeyFile, signing, 0o600}, {VerifyKeyFile, verify, 0o644}})
}

// EncodeSigningKey returns the PEM encodings of an Ed25519 private key
// (PKCS#8) and of its public key (PKIX).
func EncodeSigningKey(sk ed25519.PrivateKey) (private, public []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, nil, fmt.Errorf("encode signing key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(sk.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode verify key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// ReadSigningKey reads an Ed25519 private key written by WriteDir (PEM,
// PKCS#8).
func ReadSigningKey(path string) (ed25519.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	sk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: a %T, not an Ed25519 key", path, k)
	}
	return sk, nil
}

// ReadVerifyKey reads an Ed25519 public key written by WriteDir (PEM,
// PKIX).
func ReadVerifyKey(path string) (ed25519.PublicKey, error) {
	der, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("verify key %s: %w", path, err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("verify key %s: a %T, not an Ed25519 key", path, k)
	}
	return pk, nil
}

// readPEM returns the bytes of the first PEM block of path, which must be
// of type typ.
func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%s holds no PEM %q block", path, typ)
	}
	return block.Bytes, nil
}

// WritePair writes a certificate and its key (mode 0600) into dir as
// certName and keyName, creating dir; like WriteDir it overwrites nothing.
func WritePair(dir, certName, keyName string, certPEM, keyPEM []byte) error {
	return writeFiles(dir, []file{{certName, certPEM, 0o644}, {keyName, keyPEM, 0o600}})
}

// file is one file writeFiles writes.
type file struct {
	name string
	data []byte
	mode os.FileMode
}

// writeFiles writes files into dir, creating it; it fails before writing
// anything when one of them exists.
func writeFiles(dir string, files []file) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("write %s: %w", p, os.ErrExist)
		}
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
