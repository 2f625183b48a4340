package kwik

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// LoadServerTLS returns a TLS 1.3 server configuration presenting the
// certificate chain and key in the PEM files certFile and keyFile.
func LoadServerTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("kwik: load server certificate %s / %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

// LoadClientTLS returns a TLS 1.3 client configuration that trusts only the
// CA certificates in the PEM file caFile (not the system roots). serverName
// is the name the server's certificate must carry; if empty, Dial uses the
// host part of the address it dials.
func LoadClientTLS(caFile, serverName string) (*tls.Config, error) {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("kwik: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("kwik: CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}, nil
}

// RequireClientCertificates makes the server configuration conf admit only
// clients that present a certificate for client authentication signed by
// one of the CA certificates in the PEM file caFile.
func RequireClientCertificates(conf *tls.Config, caFile string) error {
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("kwik: read client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return fmt.Errorf("kwik: client CA file %s holds no PEM certificate", caFile)
	}
	conf.ClientCAs = pool
	conf.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}

// UseClientCertificate makes the client configuration conf present the
// certificate chain and key in the PEM files certFile and keyFile to the
// servers it dials (primary and secondaries).
func UseClientCertificate(conf *tls.Config, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("kwik: load client certificate %s / %s: %w", certFile, keyFile, err)
	}
	conf.Certificates = []tls.Certificate{cert}
	return nil
}
