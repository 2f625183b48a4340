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
