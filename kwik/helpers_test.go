package kwik

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

var (
	bundleOnce sync.Once
	bundle     *certgen.Bundle
	bundleErr  error
)

// testTLS returns server and client TLS configurations from one shared
// certificate bundle.
func testTLS(t testing.TB) (srv, cli *tls.Config) {
	t.Helper()
	bundleOnce.Do(func() { bundle, bundleErr = certgen.Generate(nil) })
	if bundleErr != nil {
		t.Fatal(bundleErr)
	}
	srv, err := bundle.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cli, err = bundle.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testCtx returns a context bounded well below the test binary's timeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair is a listener with one connected client session and its server side.
type pair struct {
	l        *Listener
	cli, srv *Session
}

// newPair starts a listener on 127.0.0.1 and dials it. mod, if not nil,
// adjusts both configurations before use.
func newPair(t testing.TB, mod func(srv, cli *Config)) *pair {
	t.Helper()
	srvTLS, cliTLS := testTLS(t)
	sc := &Config{TLSConfig: srvTLS, Logger: quietLogger()}
	cc := &Config{TLSConfig: cliTLS, Logger: quietLogger()}
	if mod != nil {
		mod(sc, cc)
	}
	l, err := Listen("127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &pair{l: l}
	p.cli, p.srv = dialAccept(t, l, cc)
	return p
}

// dialAccept dials l and returns both ends of the new session.
func dialAccept(t testing.TB, l *Listener, cc *Config) (cli, srv *Session) {
	t.Helper()
	ctx := testCtx(t)
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := l.Accept(ctx)
		ch <- res{s, err}
	}()
	cli, err := Dial(ctx, l.Addr().String(), cc)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	t.Cleanup(func() {
		cli.Close()
		r.s.Close()
	})
	return cli, r.s
}
