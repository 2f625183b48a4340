package transfer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/transfer"
)

// silentPrimary is a real Primary on 127.0.0.1, configured like
// kwik-primary (a stateless-reset secret, so that a restarted primary resets
// the sessions of its previous run), reached through a relay. Kill makes it
// vanish without a word, as a SIGKILLed or SIGSTOPped process or a cut
// network does: the relay drops everything, then the listener and its
// sessions are closed (their CONNECTION_CLOSE is dropped). Restart listens
// again on the same address and restores the relay.
type silentPrimary struct {
	t       *testing.T
	primary *server.Primary
	bundle  *certgen.Bundle
	secret  []byte
	backend string // where the listener binds
	relay   *linkemu.Relay

	ln     *kwik.Listener
	cancel context.CancelFunc
	done   chan error
}

func startSilentPrimary(t *testing.T, root string) *silentPrimary {
	t.Helper()
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := server.NewPrimary(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp := &silentPrimary{t: t, primary: p, bundle: b, secret: make([]byte, 32), backend: "127.0.0.1:0"}
	rand.Read(sp.secret)
	sp.listen()
	relay, err := linkemu.New(sp.backend, linkemu.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sp.relay = relay
	t.Cleanup(func() {
		sp.Kill()
		relay.Close()
		p.Close()
	})
	return sp
}

func (sp *silentPrimary) listen() {
	tlsConf, err := sp.bundle.ServerTLS()
	if err != nil {
		sp.t.Fatal(err)
	}
	ln, err := kwik.Listen(sp.backend, &kwik.Config{TLSConfig: tlsConf, StatelessResetSecret: sp.secret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		sp.t.Fatalf("listen on %s: %v", sp.backend, err)
	}
	sp.ln, sp.backend = ln, ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	sp.cancel, sp.done = cancel, make(chan error, 1)
	go func() { sp.done <- sp.primary.Serve(ctx, ln) }()
}

// Kill makes the primary vanish silently; killing a dead one does nothing.
func (sp *silentPrimary) Kill() {
	if sp.ln == nil {
		return
	}
	sp.relay.Cut(true)
	sp.cancel()
	if err := <-sp.done; err != nil {
		sp.t.Errorf("Serve: %v", err)
	}
	sp.ln.Close()
	sp.ln = nil
}

// Restart serves again on the same address, and the relay forwards again.
func (sp *silentPrimary) Restart() {
	sp.listen()
	sp.relay.Cut(false)
}

// client returns a client of sp with the options of the mount daemon
// (default backoff and kwik timeouts) and the given liveness timeout (0 for
// the default).
func (sp *silentPrimary) client(t *testing.T, liveness time.Duration) *transfer.Client {
	tlsConf, err := sp.bundle.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := transfer.NewClient(sp.relay.Addr(), &transfer.ClientOptions{
		Config:          &kwik.Config{TLSConfig: tlsConf, Logger: slog.New(slog.DiscardHandler)},
		Logger:          slog.New(slog.DiscardHandler),
		LivenessTimeout: liveness,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientRecoversFromSilentPrimaryRestart: the primary vanishes without
// a word for longer than the caller's timeout (fetchTimeout, as a mount's
// --fetch-timeout) and comes back on the same address. The first request
// after the restart must succeed within about a second, whether the client
// was idle during the outage, or asked once and timed out, or kept asking
// (a mount in use: requests of 3*fetchTimeout back to back, so that dials
// run across the restart).
//
// Measured here (-race, 2 shared cores), from the restart to the first
// success, before the fix (the client kept its dead session until QUIC's
// retransmission timer, backed off during the outage, fired and the
// restarted primary answered with a stateless reset): idle 2.3 to 3.8 s,
// one timed-out request 3.7 s or no success at all within 4 s, continuous
// requests 0.85 to 2.6 s (that one depends on where the restart falls, so
// it does not always exceed the bound). After (the dead session is closed
// one liveness timeout after a request drew no packet, and redials hedge
// every liveness timeout): idle 1.06 to 1.18 s (the first request waits
// one liveness timeout on the stale session), one request 11 to 110 ms,
// continuous requests 8 to 49 ms.
func TestClientRecoversFromSilentPrimaryRestart(t *testing.T) {
	const (
		fetchTimeout = time.Second
		outage       = 4 * time.Second // > fetchTimeout
		bound        = 2 * time.Second
	)
	for _, during := range []string{"idle", "one request", "continuous requests"} {
		t.Run(during, func(t *testing.T) {
			t.Parallel() // mostly waiting out the outage
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "f"), []byte("x"), 0o644, mtime0)
			sp := startSilentPrimary(t, root)
			c := sp.client(t, time.Second) // shorter than the default, for a short test
			if _, err := c.Stat(testCtx(t), "f"); err != nil {
				t.Fatal(err)
			}

			sp.Kill()
			killed := time.Now()
			var wg sync.WaitGroup
			var firstOK time.Time // set by the requester of "continuous requests"
			switch during {
			case "one request":
				ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
				_, err := c.Stat(ctx, "f")
				cancel()
				if !errors.Is(err, transfer.ErrUnavailable) {
					t.Fatalf("Stat during the outage: %v, want ErrUnavailable", err)
				}
			case "continuous requests":
				// Each request may outlast the liveness timeout, so that
				// dials run across the restart.
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(killed) < outage+4*fetchTimeout {
						ctx, cancel := context.WithTimeout(context.Background(), 3*fetchTimeout)
						_, err := c.Stat(ctx, "f")
						cancel()
						if err == nil {
							firstOK = time.Now()
							return
						}
					}
				}()
			}
			time.Sleep(outage - time.Since(killed)) // the outage itself
			sp.Restart()
			restarted := time.Now()

			var took time.Duration
			if during == "continuous requests" {
				wg.Wait()
				if firstOK.IsZero() {
					t.Fatalf("no success within %v of the restart", 4*fetchTimeout)
				}
				took = firstOK.Sub(restarted)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 4*fetchTimeout)
				_, err := c.Stat(ctx, "f")
				cancel()
				took = time.Since(restarted)
				if err != nil {
					t.Fatalf("first Stat after the restart: %v (after %v)", err, took)
				}
			}
			t.Logf("%s during a %v outage: first success %v after the restart; %+v", during, outage, took.Round(time.Millisecond), c.Stats())
			if took > bound {
				t.Errorf("first success %v after the restart, want < %v", took.Round(time.Millisecond), bound)
			}
			if st := c.Stats(); st.Dials != 2 {
				t.Errorf("%d sessions established, want 2 (one redial)", st.Dials)
			}
		})
	}
}

// TestClientKeepsProgressingSession: a READ over a slow link (16 Mbit/s,
// so 3 MiB take about 1.6 s) that lasts many liveness timeouts (50 ms
// here) is never taken for dead: it keeps receiving. Neither is a request
// the server is slow to answer, as its QUIC acknowledgement arrives at once.
func TestClientKeepsProgressingSession(t *testing.T) {
	const size = 3 << 20
	root := t.TempDir()
	data := randomData(size, 9)
	writeFile(t, filepath.Join(root, "f"), data, 0o644, mtime0)
	sp := startSilentPrimary(t, root)
	c := sp.client(t, 50*time.Millisecond)
	ctx := testCtx(t)
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	sp.relay.SetConfig(linkemu.Config{RateBitsPerSec: 16_000_000})
	start := time.Now()
	got := make([]byte, 0, size)
	_, err = c.ReadChunks(ctx, "f", m, 0, m.NumChunks(), func(i int, b []byte) error {
		got = append(got, b...)
		return nil
	})
	took := time.Since(start)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadChunks: %d bytes, %v", len(got), err)
	}
	if took < 20*50*time.Millisecond {
		t.Fatalf("the read took %v: too fast to show anything", took)
	}
	if st := c.Stats(); st.Dials != 1 || st.SilentSessions != 0 {
		t.Errorf("after a %v read: %d dials, %d silent sessions; want 1 and 0", took.Round(time.Millisecond), st.Dials, st.SilentSessions)
	}
}

// TestClientLivenessCountsFromEachRequest: requests answered at once and
// then an idle session are no sign of a dead server, and a server that
// stops answering is still found one liveness timeout after the request it
// left unanswered. Before the fix, a request sent while a check was
// pending, and answered before that check ran, had the check re-armed from
// then on an idle session, which heard nothing and was closed as dead: a
// mount said "server silent after a request" a second or two after a copy
// and dialled anew.
func TestClientLivenessCountsFromEachRequest(t *testing.T) {
	const liveness = 300 * time.Millisecond
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "f"), randomData(1000, 1), 0o644, mtime0)
	sp := startSilentPrimary(t, root)
	c := sp.client(t, liveness)
	ctx := testCtx(t)
	for range 4 {
		if _, err := c.Manifest(ctx, "f"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(liveness / 3)
	}
	time.Sleep(4 * liveness)
	if st := c.Stats(); st.Dials != 1 || st.SilentSessions != 0 {
		t.Fatalf("after answered requests and an idle session: %d dials, %d silent sessions; want 1 and 0", st.Dials, st.SilentSessions)
	}

	// A request answered at once, then one that draws no packet.
	if _, err := c.Manifest(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	sp.relay.Cut(true)
	start := time.Now()
	cut, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { c.Manifest(cut, "f") })
	for c.Stats().SilentSessions == 0 && time.Since(start) < 10*liveness {
		time.Sleep(liveness / 30)
	}
	took := time.Since(start)
	if took < liveness || took > 2*liveness {
		t.Errorf("a request to a server that stopped answering: its session taken for dead after %v (%d silent sessions), want after %v to %v",
			took.Round(time.Millisecond), c.Stats().SilentSessions, liveness, 2*liveness)
	}
	t.Logf("the session of the unanswered request taken for dead after %v", took.Round(time.Millisecond))
}
