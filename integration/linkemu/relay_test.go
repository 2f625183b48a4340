package linkemu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// failAfter bounds every blocking read: reaching it is a test failure, not a
// way of waiting.
const failAfter = 10 * time.Second

type event struct {
	up bool // client to server
	v  verdict
}

// startRelay starts a relay to target whose verdicts are sent to the returned
// channel, and closes it at the end of the test.
func startRelay(t *testing.T, target string, cfg Config) (*Relay, <-chan event) {
	t.Helper()
	events := make(chan event, 1<<16)
	r, err := newRelay(target, cfg, func(d *direction, v verdict) {
		events <- event{up: d.name == clientToServer, v: v}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r, events
}

// waitVerdicts reads n events and returns how many of each verdict each
// direction got.
func waitVerdicts(t *testing.T, events <-chan event, n int) (up, down map[verdict]int) {
	t.Helper()
	up, down = map[verdict]int{}, map[verdict]int{}
	timeout := time.After(failAfter)
	for range n {
		select {
		case e := <-events:
			if e.up {
				up[e.v]++
			} else {
				down[e.v]++
			}
		case <-timeout:
			t.Fatalf("relay decided only %d+%d of %d datagrams", len(up), len(down), n)
		}
	}
	return up, down
}

func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	setBuffers(c)
	t.Cleanup(func() { c.Close() })
	return c
}

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, a)
	if err != nil {
		t.Fatal(err)
	}
	setBuffers(c)
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(failAfter)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxDatagram)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("read from %v: %v", c.LocalAddr(), err)
	}
	return buf[:n], from
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, p []byte) {
	t.Helper()
	var err error
	if to.IsValid() {
		_, err = c.WriteToUDPAddrPort(p, to)
	} else {
		_, err = c.Write(p)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func numbered(i, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p, uint32(i))
	return p
}

// handshake sends "hello" from client to server and back, and returns the
// relay's upstream address for this client as the server sees it.
func handshake(t *testing.T, client, server *net.UDPConn) netip.AddrPort {
	t.Helper()
	send(t, client, netip.AddrPort{}, []byte("hello"))
	got, from := recv(t, server)
	if string(got) != "hello" {
		t.Fatalf("server got %q, want hello", got)
	}
	send(t, server, from, []byte("hello back"))
	if got, _ := recv(t, client); string(got) != "hello back" {
		t.Fatalf("client got %q, want hello back", got)
	}
	return from
}

// wantDir compares the counters of got with want, ignoring the lateness
// fields (they depend on the scheduler).
func wantDir(t *testing.T, name string, got, want DirStats) {
	t.Helper()
	got.TotalLate, got.MaxLate = 0, 0
	if got != want {
		t.Errorf("%s stats:\n got %+v\nwant %+v", name, got, want)
	}
}

func count(packets, size int) Count {
	return Count{Packets: uint64(packets), Bytes: uint64(packets * size)}
}

func sum(cs ...Count) Count {
	var s Count
	for _, c := range cs {
		s.Packets += c.Packets
		s.Bytes += c.Bytes
	}
	return s
}

func TestRelayForwardsBothWaysAndDelays(t *testing.T) {
	const delay = 40 * time.Millisecond
	server := listenUDP(t)
	r, _ := startRelay(t, server.LocalAddr().String(), Config{Delay: delay})
	client := dialUDP(t, r.Addr())

	start := time.Now()
	send(t, client, netip.AddrPort{}, []byte("ping"))
	got, from := recv(t, server)
	oneWay := time.Since(start)
	if string(got) != "ping" {
		t.Fatalf("server got %q", got)
	}
	if from == client.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatal("server saw the client's own address, not the relay's")
	}
	send(t, server, from, []byte("pong"))
	got, reply := recv(t, client)
	rtt := time.Since(start)
	if string(got) != "pong" || reply.String() != r.Addr() {
		t.Fatalf("client got %q from %v, want pong from %v", got, reply, r.Addr())
	}
	t.Logf("one way %v, round trip %v (delay %v)", oneWay, rtt, delay)
	if oneWay < delay {
		t.Errorf("one-way time %v below the delay %v", oneWay, delay)
	}
	if rtt < 2*delay {
		t.Errorf("round trip %v below twice the delay %v", rtt, 2*delay)
	}
	if oneWay > delay+time.Second {
		t.Errorf("one-way time %v far above the delay %v", oneWay, delay)
	}
	st := r.Stats()
	// One datagram: its lateness is both the total and the maximum, and the
	// time it took includes it.
	if up := st.ClientToServer; up.TotalLate != up.MaxLate || up.MaxLate < 0 || oneWay < delay+up.MaxLate {
		t.Errorf("lateness total %v, max %v; one way %v, delay %v", up.TotalLate, up.MaxLate, oneWay, delay)
	}
	wantDir(t, "up", st.ClientToServer, DirStats{Received: count(1, 4), Forwarded: count(1, 4)})
	wantDir(t, "down", st.ServerToClient, DirStats{Received: count(1, 4), Forwarded: count(1, 4)})
	if st.Clients != 1 {
		t.Errorf("Clients = %d, want 1", st.Clients)
	}
}

// TestRelayRate checks the real bottleneck: 100 datagrams of 1250 bytes at
// 10 Mbit/s cannot all arrive before 100 ms.
func TestRelayRate(t *testing.T) {
	const n, size = 100, 1250
	server := listenUDP(t)
	r, _ := startRelay(t, server.LocalAddr().String(), Config{RateBitsPerSec: 10e6, QueueBytes: n * size})
	client := dialUDP(t, r.Addr())

	start := time.Now()
	for i := range n {
		send(t, client, netip.AddrPort{}, numbered(i, size))
	}
	for i := range n {
		got, _ := recv(t, server)
		if seq := int(binary.BigEndian.Uint32(got)); seq != i {
			t.Fatalf("datagram %d arrived as number %d", seq, i)
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d x %d bytes at 10 Mbit/s took %v (ideal 100ms)", n, size, elapsed)
	if elapsed < 100*time.Millisecond {
		t.Fatalf("took %v, faster than the 10 Mbit/s bottleneck allows", elapsed)
	}
	wantDir(t, "up", r.Stats().ClientToServer, DirStats{Received: count(n, size), Forwarded: count(n, size)})
}

// TestRelayJitterKeepsOrder sends a burst through a jittery link: every
// datagram takes at least Delay-Jitter, and none overtakes another.
func TestRelayJitterKeepsOrder(t *testing.T) {
	const n, delay, jitter = 300, 20 * time.Millisecond, 15 * time.Millisecond
	server := listenUDP(t)
	r, _ := startRelay(t, server.LocalAddr().String(), Config{Delay: delay, Jitter: jitter, Seed: 5})
	client := dialUDP(t, r.Addr())
	base := time.Now()
	for i := range n {
		p := numbered(i, 12)
		binary.BigEndian.PutUint64(p[4:], uint64(time.Since(base)))
		send(t, client, netip.AddrPort{}, p)
	}
	var lo, hi time.Duration
	for i := range n {
		p, _ := recv(t, server)
		oneWay := time.Since(base) - time.Duration(binary.BigEndian.Uint64(p[4:]))
		if seq := int(binary.BigEndian.Uint32(p)); seq != i {
			t.Fatalf("datagram %d arrived in place %d", seq, i)
		}
		if oneWay < delay-jitter {
			t.Fatalf("datagram %d took %v, less than %v-%v", i, oneWay, delay, jitter)
		}
		if i == 0 || oneWay < lo {
			lo = oneWay
		}
		hi = max(hi, oneWay)
	}
	t.Logf("one-way times of a %d-datagram burst: %v to %v (delay %v±%v)", n, lo, hi, delay, jitter)
}

func TestRelayLossAllDropsExactly(t *testing.T) {
	const n, size = 50, 100
	server := listenUDP(t)
	r, events := startRelay(t, server.LocalAddr().String(), Config{})
	client := dialUDP(t, r.Addr())
	upstream := handshake(t, client, server)
	waitVerdicts(t, events, 2)

	r.SetConfig(Config{Loss: 1})
	for i := range n {
		send(t, client, netip.AddrPort{}, numbered(i, size))
		send(t, server, upstream, numbered(i, size))
	}
	up, down := waitVerdicts(t, events, 2*n)
	if up[lost] != n || down[lost] != n {
		t.Fatalf("lost %d up and %d down, want %d each", up[lost], down[lost], n)
	}
	st := r.Stats()
	hello, helloBack := count(1, len("hello")), count(1, len("hello back"))
	wantDir(t, "up", st.ClientToServer, DirStats{Received: sum(hello, count(n, size)), Forwarded: hello, DroppedLoss: count(n, size)})
	wantDir(t, "down", st.ServerToClient, DirStats{Received: sum(helloBack, count(n, size)), Forwarded: helloBack, DroppedLoss: count(n, size)})

	// Nothing lost can still arrive: the first thing after restoring the
	// link is the marker.
	r.SetConfig(Config{})
	send(t, client, netip.AddrPort{}, []byte("marker"))
	send(t, server, upstream, []byte("marker"))
	if got, _ := recv(t, server); string(got) != "marker" {
		t.Fatalf("server got %q after total loss, want marker", got)
	}
	if got, _ := recv(t, client); string(got) != "marker" {
		t.Fatalf("client got %q after total loss, want marker", got)
	}
}

// TestRelayLossIsReproducible checks that a seeded relay drops exactly the
// datagrams its link model predicts for that seed.
func TestRelayLossIsReproducible(t *testing.T) {
	const n, size = 500, 64
	var patterns [][]int
	for _, seed := range []uint64{7, 8} {
		cfg := Config{Loss: 0.3, Seed: seed}
		dropped := lossPattern(cfg, 0, n) // the up direction is stream 0
		patterns = append(patterns, dropped)
		var want []int
		for i := range n {
			if !slices.Contains(dropped, i) {
				want = append(want, i)
			}
		}

		server := listenUDP(t)
		r, _ := startRelay(t, server.LocalAddr().String(), cfg)
		client := dialUDP(t, r.Addr())
		for i := range n {
			send(t, client, netip.AddrPort{}, numbered(i, size))
		}
		var got []int
		for len(got) < len(want) {
			p, _ := recv(t, server)
			got = append(got, int(binary.BigEndian.Uint32(p)))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d: received %v\nwant %v", seed, got, want)
		}
		wantDir(t, fmt.Sprintf("seed %d up", seed), r.Stats().ClientToServer, DirStats{
			Received:    count(n, size),
			Forwarded:   count(len(want), size),
			DroppedLoss: count(len(dropped), size),
		})
		t.Logf("seed %d: %d of %d lost", seed, len(dropped), n)
	}
	if slices.Equal(patterns[0], patterns[1]) {
		t.Fatal("seeds 7 and 8 lose the same datagrams")
	}
}

func TestRelayCutDropsBothWaysAndRestores(t *testing.T) {
	const n, size = 40, 200
	server := listenUDP(t)
	r, events := startRelay(t, server.LocalAddr().String(), Config{})
	client := dialUDP(t, r.Addr())
	upstream := handshake(t, client, server)
	waitVerdicts(t, events, 2)

	// Datagrams already in the link die with it.
	r.SetConfig(Config{Delay: time.Hour})
	send(t, client, netip.AddrPort{}, numbered(0, size))
	send(t, server, upstream, numbered(0, size))
	if up, down := waitVerdicts(t, events, 2); up[pass] != 1 || down[pass] != 1 {
		t.Fatalf("verdicts %v %v, want one pass each way", up, down)
	}
	if st := r.Stats(); st.ClientToServer.Queued != count(1, size) || st.ServerToClient.Queued != count(1, size) {
		t.Fatalf("queued %+v, %+v; want one datagram each way", st.ClientToServer.Queued, st.ServerToClient.Queued)
	}
	r.Cut(true)
	r.SetConfig(Config{})
	for i := range n {
		send(t, client, netip.AddrPort{}, numbered(i, size))
		send(t, server, upstream, numbered(i, size))
	}
	if up, down := waitVerdicts(t, events, 2*n); up[cut] != n || down[cut] != n {
		t.Fatalf("cut %d up and %d down, want %d each", up[cut], down[cut], n)
	}
	st := r.Stats()
	hello, helloBack := count(1, len("hello")), count(1, len("hello back"))
	wantDir(t, "up", st.ClientToServer, DirStats{Received: sum(hello, count(n+1, size)), Forwarded: hello, DroppedCut: count(n+1, size)})
	wantDir(t, "down", st.ServerToClient, DirStats{Received: sum(helloBack, count(n+1, size)), Forwarded: helloBack, DroppedCut: count(n+1, size)})

	r.Cut(false)
	send(t, client, netip.AddrPort{}, []byte("back"))
	send(t, server, upstream, []byte("back"))
	if got, _ := recv(t, server); string(got) != "back" {
		t.Fatalf("server got %q after the cut, want back", got)
	}
	if got, _ := recv(t, client); string(got) != "back" {
		t.Fatalf("client got %q after the cut, want back", got)
	}
	st = r.Stats()
	if st.ClientToServer.Forwarded.Packets != 2 || st.ServerToClient.Forwarded.Packets != 2 {
		t.Fatalf("forwarded %d up and %d down after restoring, want 2 each", st.ClientToServer.Forwarded.Packets, st.ServerToClient.Forwarded.Packets)
	}
}

// TestRelayQueueOverflow sends a burst into a slow bottleneck: 1000-byte
// datagrams take 250 ms each at 32 kbit/s, and the 3000-byte queue holds 3.
func TestRelayQueueOverflow(t *testing.T) {
	const n, size, slot = 20, 1000, 250 * time.Millisecond
	server := listenUDP(t)
	r, events := startRelay(t, server.LocalAddr().String(), Config{RateBitsPerSec: 32000, QueueBytes: 3 * size})
	client := dialUDP(t, r.Addr())

	start := time.Now()
	for i := range n {
		send(t, client, netip.AddrPort{}, numbered(i, size))
	}
	up, _ := waitVerdicts(t, events, n)
	if up[pass] != 3 || up[overflow] != n-3 {
		t.Fatalf("verdicts %v, want 3 pass and %d overflow", up, n-3)
	}
	for i := range 3 {
		p, _ := recv(t, server)
		at := time.Since(start)
		if seq := int(binary.BigEndian.Uint32(p)); seq != i {
			t.Fatalf("datagram %d arrived as number %d", seq, i)
		}
		if at < time.Duration(i+1)*slot {
			t.Fatalf("datagram %d arrived after %v, before its departure at %v", i, at, time.Duration(i+1)*slot)
		}
	}
	wantDir(t, "up", r.Stats().ClientToServer, DirStats{
		Received:     count(n, size),
		Forwarded:    count(3, size),
		DroppedQueue: count(n-3, size),
	})
}

func TestRelaySeveralClients(t *testing.T) {
	const clients, rounds = 3, 20
	server := listenUDP(t)
	r, _ := startRelay(t, server.LocalAddr().String(), Config{Delay: time.Millisecond})

	// The server echoes every datagram, prefixed with the address it came
	// from.
	echoed := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for range clients * rounds {
			n, from, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				echoed <- err
				return
			}
			if _, err := server.WriteToUDPAddrPort(fmt.Appendf(nil, "%v %s", from, buf[:n]), from); err != nil {
				echoed <- err
				return
			}
		}
		echoed <- nil
	}()

	conns := make([]*net.UDPConn, clients)
	for i := range conns {
		conns[i] = dialUDP(t, r.Addr())
	}
	for round := range rounds {
		for i, c := range conns {
			send(t, c, netip.AddrPort{}, fmt.Appendf(nil, "client %d round %d", i, round))
		}
	}
	seen := map[string]int{} // upstream address -> client
	for i, c := range conns {
		for round := range rounds {
			p, _ := recv(t, c)
			var upstream string
			var ci, cr int
			if _, err := fmt.Sscanf(string(p), "%s client %d round %d", &upstream, &ci, &cr); err != nil {
				t.Fatalf("client %d got %q: %v", i, p, err)
			}
			if ci != i || cr != round {
				t.Fatalf("client %d, round %d got the reply for client %d round %d", i, round, ci, cr)
			}
			if prev, ok := seen[upstream]; ok && prev != i {
				t.Fatalf("clients %d and %d share upstream address %s", prev, i, upstream)
			}
			seen[upstream] = i
		}
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if len(seen) != clients || st.Clients != clients {
		t.Fatalf("%d upstream addresses, Stats.Clients %d; want %d", len(seen), st.Clients, clients)
	}
	if got := st.ClientToServer.Forwarded.Packets; got != clients*rounds {
		t.Fatalf("forwarded %d datagrams up, want %d", got, clients*rounds)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New("127.0.0.1:1", Config{Loss: 2}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New with Loss 2: %v, want ErrInvalidConfig", err)
	}
	r, err := New("127.0.0.1:1", Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer func() {
		if p := recover(); p == nil {
			t.Fatal("SetConfig with a negative delay did not panic")
		} else if err, ok := p.(error); !ok || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("SetConfig panicked with %v, want ErrInvalidConfig", p)
		}
		if got := r.Config(); got != (Config{}) {
			t.Fatalf("config after a rejected SetConfig: %+v", got)
		}
	}()
	r.SetConfig(Config{Delay: -time.Second})
}

// TestCloseWithDatagramsInFlight checks that Close neither waits for nor
// delivers datagrams still in the link, and that the counters stay exact.
func TestCloseWithDatagramsInFlight(t *testing.T) {
	server := listenUDP(t)
	r, events := startRelay(t, server.LocalAddr().String(), Config{Delay: time.Hour})
	client := dialUDP(t, r.Addr())
	send(t, client, netip.AddrPort{}, []byte("late"))
	waitVerdicts(t, events, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wantDir(t, "up", r.Stats().ClientToServer, DirStats{Received: count(1, 4), Queued: count(1, 4)})
	// The relay's port is closed: nothing reads what the client sends.
	send(t, client, netip.AddrPort{}, []byte("after close"))
	if got := r.Stats().ClientToServer.Received.Packets; got != 1 {
		t.Fatalf("received %d datagrams after Close", got)
	}
}

// BenchmarkRelayDatagrams measures the relay's cost per 1200-byte datagram
// with no limits (compare with -run=^$ -bench=Direct): the client sends
// windows of 32 datagrams and waits for the server to read them.
func BenchmarkRelayDatagrams(b *testing.B) { benchmarkDatagrams(b, true) }

// BenchmarkDirectDatagrams is BenchmarkRelayDatagrams without the relay.
func BenchmarkDirectDatagrams(b *testing.B) { benchmarkDatagrams(b, false) }

func benchmarkDatagrams(b *testing.B, viaRelay bool) {
	const window, size = 32, 1200
	server := listenUDP(b)
	addr := server.LocalAddr().String()
	if viaRelay {
		r, err := New(addr, Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		addr = r.Addr()
	}
	a, _ := net.ResolveUDPAddr("udp", addr)
	client, err := net.DialUDP("udp", nil, a)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	p, buf := make([]byte, size), make([]byte, 2048)
	b.SetBytes(size)
	for sent := 0; b.Loop(); sent++ {
		if _, err := client.Write(p); err != nil {
			b.Fatal(err)
		}
		if sent%window == window-1 {
			for range window {
				if err := server.SetReadDeadline(time.Now().Add(failAfter)); err != nil {
					b.Fatal(err)
				}
				if _, _, err := server.ReadFrom(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// TestRelayBlackhole: a blackholed client address gets nothing through in
// either direction, uncounted, while another client is relayed as before;
// lifting it lets the first through again.
func TestRelayBlackhole(t *testing.T) {
	server := listenUDP(t)
	r, _ := startRelay(t, server.LocalAddr().String(), Config{})
	ra, err := net.ResolveUDPAddr("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dialFrom := func(ip string) *net.UDPConn {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, ra)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dialFrom("127.0.0.2"), dialFrom("127.0.0.1")
	send(t, a, netip.AddrPort{}, []byte("a1"))
	_, fromA := recv(t, server)
	r.Blackhole(netip.MustParseAddr("127.0.0.2"), true)
	send(t, a, netip.AddrPort{}, []byte("a2")) // dropped on the way up
	send(t, server, fromA, []byte("to a"))     // dropped on the way down
	send(t, b, netip.AddrPort{}, []byte("b1"))
	if got, _ := recv(t, server); string(got) != "b1" {
		t.Fatalf("server got %q, want b1 (a2 blackholed)", got)
	}
	a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := a.Read(make([]byte, 64)); err == nil {
		t.Fatalf("the blackholed client received %d bytes", n)
	}
	st := r.Stats()
	// a1 and b1, two bytes each; a2 is counted nowhere.
	wantDir(t, "up", st.ClientToServer, DirStats{Received: count(2, 2), Forwarded: count(2, 2)})
	r.Blackhole(netip.MustParseAddr("127.0.0.2"), false)
	send(t, a, netip.AddrPort{}, []byte("a3"))
	if got, _ := recv(t, server); string(got) != "a3" {
		t.Fatalf("server got %q after the blackhole was lifted, want a3", got)
	}
}
