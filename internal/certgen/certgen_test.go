package certgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestHandshakeWithGeneratedCertificates(t *testing.T) {
	b, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srvConf, err := b.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cliConf, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cliConf)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("TLS version %x, want 1.3", v)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestOtherCAIsRefused(t *testing.T) {
	a, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	srvConf, _ := a.ServerTLS()
	cliConf, _ := other.ClientTLS()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = tls.Dial("tcp", ln.Addr().String(), cliConf)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("handshake against another CA: %v, want x509.UnknownAuthorityError", err)
	}
}

func TestWriteDirAndReadSigningKey(t *testing.T) {
	b, err := Generate([]string{"example.test", "198.18.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	key, err := ReadSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(b.SigningKey) {
		t.Fatal("signing key does not round-trip")
	}
	pub, err := ReadVerifyKey(filepath.Join(dir, VerifyKeyFile))
	if err != nil || !pub.Equal(b.SigningKey.Public()) {
		t.Fatalf("verify key: %v, or not the signing key's public half", err)
	}
	if _, err := ReadVerifyKey(filepath.Join(dir, SigningKeyFile)); err == nil {
		t.Error("the signing key read as a verify key")
	}
	for name, want := range map[string]os.FileMode{KeyFile: 0o600, CAKeyFile: 0o600, ClientKeyFile: 0o600, SigningKeyFile: 0o600, VerifyKeyFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	if err := b.WriteDir(dir); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second WriteDir: %v, want fs.ErrExist", err)
	}
}
