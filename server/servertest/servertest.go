// Package servertest runs a real Primary on a real kwik listener, and real
// Secondaries on real kwik secondaries, on 127.0.0.1 for tests of the
// packages that talk to them. Every server logs nothing and stops when the
// test ends.
package servertest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
)

// Server is a Primary serving a root directory on 127.0.0.1.
type Server struct {
	Primary *server.Primary
	// Addr is the listener's address (host:port); it stays the same across
	// Stop and Restart.
	Addr   string
	Bundle *certgen.Bundle

	t      testing.TB
	kwik   func(*kwik.Config) // Options.Kwik
	ln     *kwik.Listener
	cancel context.CancelFunc
	done   chan error // receives Serve's result
}

// Start serves root with a new Primary (opts may be nil) on a free port of
// 127.0.0.1, with a new certificate bundle. The server is stopped and the
// Primary closed when the test ends.
func Start(t testing.TB, root string, opts *server.PrimaryOptions) *Server {
	t.Helper()
	return StartWith(t, root, opts, Options{})
}

// Options are what StartWith takes beyond Start's arguments.
type Options struct {
	// Bundle holds the server certificate, the CA clients trust and the
	// signing key of path tokens and commands; nil: a new one. Give the
	// secondaries (StartSecondary) the same bundle.
	Bundle *certgen.Bundle
	// Kwik, if not nil, adjusts the listener's configuration (ServerConfig)
	// each time it listens.
	Kwik func(*kwik.Config)
}

// StartWith is Start with o. A nil opts.Logger is replaced by one that
// logs nothing; opts itself is not modified.
func StartWith(t testing.TB, root string, opts *server.PrimaryOptions, o Options) *Server {
	t.Helper()
	b := o.Bundle
	if b == nil {
		var err error
		if b, err = certgen.Generate(nil); err != nil {
			t.Fatalf("certgen: %v", err)
		}
	}
	var po server.PrimaryOptions
	if opts != nil {
		po = *opts
	}
	if po.Logger == nil {
		po.Logger = quietLogger()
	}
	p, err := server.NewPrimary(root, &po)
	if err != nil {
		t.Fatalf("NewPrimary: %v", err)
	}
	s := &Server{Primary: p, Bundle: b, t: t, kwik: o.Kwik, Addr: "127.0.0.1:0"}
	s.Restart()
	t.Cleanup(func() {
		s.Stop()
		p.Close()
	})
	return s
}

// ServerConfig returns the kwik configuration of the listener: the
// bundle's server certificate and signing key, adjusted by Options.Kwik.
func (s *Server) ServerConfig() *kwik.Config {
	tlsConf, err := s.Bundle.ServerTLS()
	if err != nil {
		s.t.Fatalf("ServerTLS: %v", err)
	}
	conf := &kwik.Config{TLSConfig: tlsConf, SigningKey: s.Bundle.SigningKey, Logger: quietLogger()}
	if s.kwik != nil {
		s.kwik(conf)
	}
	return conf
}

// Listener returns the listener being served; nil while stopped.
func (s *Server) Listener() *kwik.Listener { return s.ln }

// ClientConfig returns a kwik configuration that trusts the server.
func (s *Server) ClientConfig() *kwik.Config {
	tlsConf, err := s.Bundle.ClientTLS()
	if err != nil {
		s.t.Fatalf("ClientTLS: %v", err)
	}
	return &kwik.Config{TLSConfig: tlsConf, HandshakeTimeout: 5 * time.Second, Logger: quietLogger()}
}

// Stop stops serving: Serve returns, its sessions are closed and the
// listener is closed. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.ln == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Errorf("Serve: %v", err)
	}
	s.ln.Close()
	s.ln = nil
}

// Restart listens on Addr again (a free port the first time) and serves.
func (s *Server) Restart() {
	s.t.Helper()
	if s.ln != nil {
		s.t.Fatal("servertest: Restart of a running server")
	}
	ln, err := kwik.Listen(s.Addr, s.ServerConfig())
	if err != nil {
		s.t.Fatalf("kwik.Listen(%s): %v", s.Addr, err)
	}
	s.ln = ln
	s.Addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- s.Primary.Serve(ctx, ln) }()
}

// Secondary is a Secondary serving a mirror on 127.0.0.1.
type Secondary struct {
	Secondary *server.Secondary
	Kwik      *kwik.Secondary
	// Addr is the address it advertises, as a primary names it
	// (PrimaryOptions.Secondaries).
	Addr string
}

// StartSecondary serves root with a new Secondary on a free port of
// 127.0.0.1, with b's server certificate and verify key (b is the bundle
// of the primary that delegates to it); mod, if not nil, adjusts the kwik
// configuration. It is stopped and closed when the test ends, and an error
// of its Serve fails the test.
func StartSecondary(t testing.TB, b *certgen.Bundle, root string, mod func(*kwik.Config)) *Secondary {
	t.Helper()
	tlsConf, err := b.ServerTLS()
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}
	conf := &kwik.Config{TLSConfig: tlsConf, VerifyKeys: b.VerifyKeys(), Logger: quietLogger()}
	if mod != nil {
		mod(conf)
	}
	ks, err := kwik.ListenSecondary("127.0.0.1:0", conf)
	if err != nil {
		t.Fatalf("kwik.ListenSecondary: %v", err)
	}
	sec, err := server.NewSecondary(root, &server.SecondaryOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("NewSecondary: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sec.Serve(ctx, ks) }()
	t.Cleanup(func() {
		cancel()
		ks.Close()
		if err := <-done; err != nil {
			t.Errorf("secondary Serve: %v", err)
		}
		sec.Close()
	})
	return &Secondary{Secondary: sec, Kwik: ks, Addr: ks.AdvertisedAddr()}
}

// quietLogger drops every record: kwik's logs would outlive the tests.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
