package linkemu

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// socketBuffer is the receive and send buffer size asked for on every socket
// (the kernel caps it at net.core.rmem_max / wmem_max). Big buffers keep the
// kernel from dropping bursts before the relay sees them: such drops would be
// invisible to Stats.
const socketBuffer = 4 << 20

// Direction names.
const (
	clientToServer = "client-to-server"
	serverToClient = "server-to-client"
)

// errNoUpstream is the send error for a client whose upstream socket could
// not be opened.
var errNoUpstream = errors.New("linkemu: no upstream socket")

// maxDatagram is the largest UDP payload the relay reads.
const maxDatagram = 64 << 10

// Count is a number of datagrams and their total UDP payload bytes.
type Count struct {
	Packets uint64
	Bytes   uint64
}

func (c *Count) add(n int) {
	c.Packets++
	c.Bytes += uint64(n)
}

func (c *Count) sub(n int) {
	c.Packets--
	c.Bytes -= uint64(n)
}

// DirStats counts what happened to the datagrams of one direction. At every
// snapshot Received = Forwarded + DroppedLoss + DroppedQueue + DroppedCut +
// SendFailed + Queued, exactly. A datagram is counted in Forwarded just
// before it is written to its destination socket (so a receiver never sees
// a datagram that Stats do not count yet); if the write fails, it moves to
// SendFailed.
type DirStats struct {
	Received     Count // read by the relay
	Forwarded    Count // written to the destination socket
	DroppedLoss  Count // dropped by random loss
	DroppedQueue Count // dropped by bottleneck queue overflow
	DroppedCut   Count // dropped while cut, or in the link when it was cut
	SendFailed   Count // the write to the destination failed
	Queued       Count // admitted and not yet delivered (after Close: discarded)

	// How late the delivery goroutine handed datagrams to their socket,
	// compared with the time the link model gave them: the sum over all
	// forwarded datagrams and the maximum. A mean (TotalLate /
	// Forwarded.Packets) well above a millisecond means the relay was
	// starved of CPU and the link was burstier than configured.
	TotalLate time.Duration
	MaxLate   time.Duration
}

// Stats is a snapshot of a relay's counters.
type Stats struct {
	ClientToServer DirStats
	ServerToClient DirStats
	Clients        int // client addresses seen (one upstream socket each)
}

// Relay is a user-space UDP relay emulating a link between clients and one
// target server. Create it with New; it runs until Close.
type Relay struct {
	target   netip.AddrPort
	listener *net.UDPConn
	up       *direction // client to server
	down     *direction // server to client
	done     chan struct{}
	wg       sync.WaitGroup
	// onArrive, if set (by tests, before any traffic), is called after the
	// relay has decided the fate of each datagram it read.
	onArrive func(d *direction, v verdict)

	// blackholed holds the client addresses whose datagrams are dropped
	// before the link sees them (see Blackhole); replaced, never changed.
	blackholed atomic.Pointer[map[netip.Addr]bool]

	mu     sync.Mutex // guards the fields below
	cfg    Config
	flows  map[netip.AddrPort]*flow
	closed bool
}

// flow is one client: its address and its upstream socket, connected to the
// target.
type flow struct {
	client netip.AddrPort
	conn   *net.UDPConn
}

// packet is one admitted datagram waiting for delivery.
type packet struct {
	buf  *[]byte // pooled storage; data aliases it
	data []byte
	due  time.Time
	flow *flow // the client it comes from or goes to
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}

func newPacket(data []byte, f *flow) *packet {
	p := &packet{flow: f}
	if len(data) <= 2048 {
		p.buf = bufPool.Get().(*[]byte)
		p.data = (*p.buf)[:len(data)]
	} else {
		p.data = make([]byte, len(data))
	}
	copy(p.data, data)
	return p
}

func (p *packet) free() {
	if p.buf != nil {
		bufPool.Put(p.buf)
	}
	p.buf, p.data = nil, nil
}

// New starts a relay that listens on 127.0.0.1 (a random UDP port) and
// forwards to target, a UDP address such as "127.0.0.1:4433", through a link
// emulated with cfg. It fails if cfg is invalid (ErrInvalidConfig) or if
// target cannot be resolved or the socket cannot be opened.
func New(target string, cfg Config) (*Relay, error) {
	return newRelay(target, cfg, nil)
}

func newRelay(target string, cfg Config, onArrive func(*direction, verdict)) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("linkemu: resolve target %q: %w", target, err)
	}
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen: %w", err)
	}
	setBuffers(l)
	r := &Relay{
		target:   ta.AddrPort(),
		listener: l,
		done:     make(chan struct{}),
		onArrive: onArrive,
		cfg:      cfg,
		flows:    make(map[netip.AddrPort]*flow),
	}
	r.up = newDirection(clientToServer, cfg, 0, func(p *packet) error {
		if p.flow.conn == nil {
			return errNoUpstream
		}
		_, err := p.flow.conn.Write(p.data)
		return err
	})
	r.down = newDirection(serverToClient, cfg, 1, func(p *packet) error {
		_, err := l.WriteToUDPAddrPort(p.data, p.flow.client)
		return err
	})
	r.wg.Add(3)
	go r.readClients()
	go r.up.deliver(r.done, &r.wg)
	go r.down.deliver(r.done, &r.wg)
	return r, nil
}

func setBuffers(c *net.UDPConn) {
	// Best effort: the kernel silently caps the sizes, and a smaller buffer
	// only makes drops before the relay more likely.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
}

// Addr returns the relay's UDP address ("127.0.0.1:port"): what a client
// dials instead of the target.
func (r *Relay) Addr() string { return r.listener.LocalAddr().String() }

// Config returns the configuration in force.
func (r *Relay) Config() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// SetConfig changes the link in both directions for datagrams arriving from
// now on; datagrams already in the link keep the schedule they were given.
// Loss and jitter generators are reseeded only if cfg.Seed differs from the
// current seed. SetConfig panics if cfg is invalid (see Config.Validate): a
// test passing a negative rate is a programming error.
func (r *Relay) SetConfig(cfg Config) {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.cfg = cfg
	r.mu.Unlock()
	r.up.setConfig(cfg)
	r.down.setConfig(cfg)
}

// Cut with true makes the path dead: every datagram in the link (queued or
// propagating) and every datagram arriving later, in both directions, is
// dropped and counted in DroppedCut. Cut(false) restores the path with an
// empty link. Datagrams being written to a socket at the instant of the cut
// still go out.
func (r *Relay) Cut(dead bool) {
	r.up.setCut(dead)
	r.down.setCut(dead)
}

// Blackhole with true drops every datagram from and to the clients at
// address ip (any port), in both directions, from now on, before the link
// sees it: they are counted nowhere. Blackhole(ip, false) lets them through
// again. Other clients are not affected: it stands for one client whose
// network died without a word.
func (r *Relay) Blackhole(ip netip.Addr, dead bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[netip.Addr]bool)
	if old := r.blackholed.Load(); old != nil {
		maps.Copy(m, *old)
	}
	if dead {
		m[ip] = true
	} else {
		delete(m, ip)
	}
	r.blackholed.Store(&m)
}

// dropped reports whether the datagrams of client are blackholed.
func (r *Relay) dropped(client netip.AddrPort) bool {
	m := r.blackholed.Load()
	return m != nil && (*m)[client.Addr()]
}

// Stats returns the counters of both directions. Each direction's counters
// are an exact, consistent snapshot.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	n := len(r.flows)
	r.mu.Unlock()
	return Stats{ClientToServer: r.up.stats(), ServerToClient: r.down.stats(), Clients: n}
}

// Close stops the relay: it closes every socket, stops every goroutine and
// waits for them. Datagrams still in the link are discarded (they stay
// counted in Queued). Close is idempotent and always returns nil after the
// first call.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	err := r.listener.Close()
	for _, f := range r.flows {
		if cerr := f.conn.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	r.up.discard()
	r.down.discard()
	if err != nil {
		return fmt.Errorf("linkemu: close: %w", err)
	}
	return nil
}

// readClients reads datagrams from clients until the listener is closed.
func (r *Relay) readClients() {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.listener.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // transient (e.g. an ICMP error); keep relaying
		}
		now := time.Now()
		if r.dropped(from) {
			continue
		}
		f, ok := r.flowFor(from)
		if !ok {
			return // closed
		}
		v := r.up.arrive(now, buf[:n], f)
		if r.onArrive != nil {
			r.onArrive(r.up, v)
		}
	}
}

// flowFor returns the flow of client, creating its upstream socket and reader
// on first use. It returns false if the relay is closed. A failure to open
// the upstream socket is retried on the client's next datagram.
func (r *Relay) flowFor(client netip.AddrPort) (*flow, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	if f, ok := r.flows[client]; ok {
		return f, true
	}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.target))
	if err != nil {
		// A flow without a socket: its datagrams count as SendFailed, and
		// the next datagram from this client tries again.
		return &flow{client: client}, true
	}
	setBuffers(c)
	f := &flow{client: client, conn: c}
	r.flows[client] = f
	r.wg.Add(1)
	go r.readServer(f)
	return f, true
}

// readServer reads the target's replies to one client until its socket is
// closed.
func (r *Relay) readServer(f *flow) {
	defer r.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ECONNREFUSED after an ICMP port unreachable (the server is
			// not listening, yet or any more): keep the flow.
			continue
		}
		if r.dropped(f.client) {
			continue
		}
		v := r.down.arrive(time.Now(), buf[:n], f)
		if r.onArrive != nil {
			r.onArrive(r.down, v)
		}
	}
}
