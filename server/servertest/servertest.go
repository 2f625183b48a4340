// Package servertest runs a real Primary on a real kwik listener on
// 127.0.0.1 for tests of the packages that talk to it.
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
	ln     *kwik.Listener
	cancel context.CancelFunc
	done   chan error // receives Serve's result
}

// Start serves root with a new Primary (opts may be nil) on a free port of
// 127.0.0.1. The server is stopped and the Primary closed when the test
// ends.
func Start(t testing.TB, root string, opts *server.PrimaryOptions) *Server {
	t.Helper()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatalf("certgen: %v", err)
	}
	p, err := server.NewPrimary(root, opts)
	if err != nil {
		t.Fatalf("NewPrimary: %v", err)
	}
	s := &Server{Primary: p, Bundle: b, t: t, Addr: "127.0.0.1:0"}
	s.Restart()
	t.Cleanup(func() {
		s.Stop()
		p.Close()
	})
	return s
}

// ServerConfig returns the kwik configuration of the listener.
func (s *Server) ServerConfig() *kwik.Config {
	tlsConf, err := s.Bundle.ServerTLS()
	if err != nil {
		s.t.Fatalf("ServerTLS: %v", err)
	}
	return &kwik.Config{TLSConfig: tlsConf, Logger: quietLogger()}
}

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

// quietLogger drops every record: kwik's logs would outlive the tests.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
