package kwik

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// libraryGoroutines returns the stacks of goroutines running kwik code that
// were not started by a test.
func libraryGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/kwikfs/kwikfs/kwik.") && !strings.Contains(g, "_test.go") {
			out = append(out, g)
		}
	}
	return out
}

// waitGoroutines polls until cond holds for the goroutine set, for at most
// five seconds (goroutines that have signalled completion may still be
// returning).
func waitGoroutines(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

func TestCloseStopsAllGoroutines(t *testing.T) {
	if !waitGoroutines(func() bool { return len(libraryGoroutines()) == 0 }) {
		t.Fatalf("kwik goroutines left by earlier tests:\n%s", strings.Join(libraryGoroutines(), "\n\n"))
	}
	base := runtime.NumGoroutine()

	srvTLS, cliTLS := testTLS(t)
	l, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	var sessions []*Session
	for range 2 {
		cli, srv := dialAccept(t, l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
		sessions = append(sessions, cli, srv)
		// A stream in each direction with data in flight and a blocked reader.
		st, err := cli.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(make([]byte, 100<<10)); err != nil {
			t.Fatal(err)
		}
		ss, err := srv.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ss, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		back, err := srv.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		back.Write([]byte("x"))
		done := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(st)
			done <- err
		}()
		t.Cleanup(func() {
			if err := <-done; err == nil {
				t.Error("blocked Read returned no error after Close")
			}
		})
	}
	if n := len(libraryGoroutines()); n < 8 {
		t.Fatalf("only %d kwik goroutines while sessions run", n)
	}
	for _, s := range sessions {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !waitGoroutines(func() bool { return len(libraryGoroutines()) == 0 }) {
		t.Fatalf("kwik goroutines left after Close:\n%s", strings.Join(libraryGoroutines(), "\n\n"))
	}
	if !waitGoroutines(func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
	}
}

// TestMultipathCloseStopsAllGoroutines closes a session with two secondary
// paths, commands in flight and a client still reporting, then the
// secondaries, and checks that no kwik goroutine is left.
func TestMultipathCloseStopsAllGoroutines(t *testing.T) {
	if !waitGoroutines(func() bool { return len(libraryGoroutines()) == 0 }) {
		t.Fatalf("kwik goroutines left by earlier tests:\n%s", strings.Join(libraryGoroutines(), "\n\n"))
	}
	srvTLS, cliTLS := testTLS(t)
	l, err := Listen("127.0.0.1:0", &Config{TLSConfig: srvTLS, SigningKey: signingKey(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var secs []*Secondary
	for range 2 {
		sec, err := ListenSecondary("127.0.0.1:0", &Config{TLSConfig: srvTLS, VerifyKeys: verifyKeys(t), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		secs = append(secs, sec)
	}
	cli, srv := dialAccept(t, l, &Config{TLSConfig: cliTLS, Logger: quietLogger()})
	c := &cluster{l: l, secs: secs, cli: cli, srv: srv}
	ids := c.addPaths(t)
	_, st := c.request(t)
	off := reserve(t, st, 2<<20)
	for i, id := range ids {
		g := Grant{StreamID: st.StreamID(), Offset: off + uint64(i)<<20, Length: 1 << 20}
		if err := srv.SendRawData(id, g, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Each secondary takes its command and writes its grant while the
	// sessions close.
	for _, sec := range secs {
		cmd, err := sec.AcceptCommand(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		go cmd.Write(make([]byte, 1<<20))
	}
	if n := len(libraryGoroutines()); n < 16 {
		t.Fatalf("only %d kwik goroutines while paths run", n)
	}
	cli.Close()
	srv.Close()
	l.Close()
	for _, sec := range secs {
		sec.Close()
	}
	if !waitGoroutines(func() bool { return len(libraryGoroutines()) == 0 }) {
		t.Fatalf("kwik goroutines left after Close:\n%s", strings.Join(libraryGoroutines(), "\n\n"))
	}
}
