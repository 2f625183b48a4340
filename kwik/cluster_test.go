package kwik

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// cluster is a primary listener, secondaries sharing its cluster key, and
// one client session with its primary-side session.
type cluster struct {
	l        *Listener
	secs     []*Secondary
	cli, srv *Session
}

// signingKey returns the test bundle's signing key.
func signingKey(t testing.TB) ed25519.PrivateKey {
	testTLS(t)
	return bundle.SigningKey
}

// verifyKeys returns the public half of the test bundle's signing key, as
// a secondary holds it.
func verifyKeys(t testing.TB) []ed25519.PublicKey {
	return []ed25519.PublicKey{signingKey(t).Public().(ed25519.PublicKey)}
}

// newCluster starts a primary, nsec secondaries on 127.0.0.1 and a client.
// mod, if not nil, adjusts the configurations before use.
func newCluster(t testing.TB, nsec int, mod func(prim, sec, cli *Config)) *cluster {
	t.Helper()
	srvTLS, cliTLS := testTLS(t)
	pc := &Config{TLSConfig: srvTLS, SigningKey: signingKey(t), Logger: quietLogger()}
	sc := &Config{TLSConfig: srvTLS, VerifyKeys: verifyKeys(t), Logger: quietLogger()}
	cc := &Config{TLSConfig: cliTLS, Logger: quietLogger()}
	if mod != nil {
		mod(pc, sc, cc)
	}
	l, err := Listen("127.0.0.1:0", pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c := &cluster{l: l}
	for range nsec {
		sec, err := ListenSecondary("127.0.0.1:0", sc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sec.Close() })
		c.secs = append(c.secs, sec)
	}
	c.cli, c.srv = dialAccept(t, l, cc)
	return c
}

// addPaths adds a path to every secondary and waits until all are up.
func (c *cluster) addPaths(t testing.TB) []PathID {
	t.Helper()
	var ids []PathID
	for _, sec := range c.secs {
		id, err := c.srv.AddPath(testCtx(t), sec.AdvertisedAddr())
		if err != nil {
			t.Fatalf("AddPath(%s): %v", sec.AdvertisedAddr(), err)
		}
		ev, err := c.srv.NextPathEvent(testCtx(t))
		if err != nil || ev.Path != id || ev.State != PathUp || ev.Err != nil {
			t.Fatalf("path event %+v, %v; want path %d up", ev, err, id)
		}
		ids = append(ids, id)
	}
	return ids
}

// serveCommands runs handle for every command sec accepts, until sec
// closes; Cleanup waits for the handlers.
func serveCommands(t testing.TB, sec *Secondary, handle func(*Command)) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := sec.AcceptCommand(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		sec.Close()
		wg.Wait()
	})
}

// writePattern answers a command by writing the pattern bytes of its
// whole grant.
func writePattern(t testing.TB) func(*Command) {
	return func(c *Command) {
		g := c.Grant()
		if _, err := c.Write(pattern(g.Offset, int(g.Length))); err != nil {
			t.Errorf("secondary write of %+v: %v", g, err)
		}
	}
}

// pattern returns bytes [off, off+n) of the reference stream content.
func pattern(off uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := off + uint64(i)
		b[i] = byte(x*7 + x>>11)
	}
	return b
}

// request opens a client stream, sends a request and returns the primary's
// end of it, with the request read.
func (c *cluster) request(t testing.TB) (cli, srv *Stream) {
	t.Helper()
	ctx := testCtx(t)
	cli, err := c.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte("get")); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	srv, err = c.srv.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if req, err := io.ReadAll(srv); err != nil || string(req) != "get" {
		t.Fatalf("request %q, %v", req, err)
	}
	return cli, srv
}

// reserve reserves exactly n bytes of st and returns their offset.
func reserve(t testing.TB, st *Stream, n uint64) uint64 {
	t.Helper()
	first := st.SendOffset()
	for n > 0 {
		_, got, err := st.Reserve(testCtx(t), n)
		if err != nil {
			t.Fatal(err)
		}
		n -= got
	}
	return first
}

// readDigest reads st to its end and returns the byte count and SHA-256.
func readDigest(t testing.TB, st *Stream) (int64, [32]byte) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, st)
	if err != nil {
		t.Fatalf("read stream %d after %d bytes: %v", st.StreamID(), n, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return n, sum
}

// pathStats returns the client's statistics of path id.
func pathStats(t testing.TB, s *Session, id PathID) PathStats {
	t.Helper()
	for _, p := range s.Stats().Paths {
		if PathID(p.ID) == id {
			return p
		}
	}
	t.Fatalf("no path %d in stats", id)
	return PathStats{}
}

// pushCommand sends b as a RAW_DATA frame for path id on the client's
// path id, as a (possibly hostile) client relaying it would.
func (c *cluster) pushCommand(t testing.TB, id PathID, b []byte) {
	t.Helper()
	c.cli.pathMu.Lock()
	p := c.cli.paths[id]
	c.cli.pathMu.Unlock()
	p.out.push(&wire.RawData{PathID: uint64(id), Command: b})
}

// command returns an encoded command for path id of the cluster's session,
// signed with the primary's keys unless keys is given.
func (c *cluster) command(id PathID, seq uint64, expiry time.Time, g Grant, payload string, keys *clusterKeys) []byte {
	if keys == nil {
		keys = c.srv.keys
	}
	return keys.signCommand(&wire.Command{
		SessionID: c.srv.id, PathID: uint64(id), Seq: seq, Expiry: unixMilli(expiry),
		Grant:   wire.Grant{StreamID: uint64(g.StreamID), Offset: g.Offset, Length: g.Length},
		Payload: []byte(payload),
	})
}

// presentToken makes the primary tell the client to dial dialAddr as a new
// path and present token, as AddPath does with a token of its own, and
// returns the path's outcome as the primary sees it.
func (c *cluster) presentToken(t testing.TB, dialAddr string, token func(id PathID) []byte) error {
	t.Helper()
	s := c.srv
	s.pathMu.Lock()
	id := s.nextPathID
	s.nextPathID++
	p := newPath(s, id, nil, nil, nil)
	p.addr = dialAddr
	s.paths[id] = p
	s.pathMu.Unlock()
	s.p0.out.push(&wire.AddPath{PathID: uint64(id), Addr: dialAddr, Token: token(id)})
	select {
	case <-p.upSignal:
	case <-testCtx(t).Done():
		t.Fatal("no PATH_STATUS")
	}
	ev, err := s.NextPathEvent(testCtx(t))
	if err != nil || ev.Path != id {
		t.Fatalf("event %+v, %v", ev, err)
	}
	if ev.Err == nil {
		return nil
	}
	if ev.State != PathFailed {
		t.Fatalf("path ended in state %v with %v", ev.State, ev.Err)
	}
	return ev.Err
}

// waitFor polls cond until it holds, failing the test after five seconds
// with what.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !eventually(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// errIs reports whether err matches target, for table tests.
func errIs(err, target error) bool { return errors.Is(err, target) }
