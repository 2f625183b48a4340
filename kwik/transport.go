package kwik

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/quic-go/quic-go"
)

// socketBufferSize is what quic-go asks for on its UDP sockets (7 MiB). kwik
// sets the buffers itself before quic-go looks (with the privileged
// SO_RCVBUFFORCE if it may), so that a shortfall is reported once through
// slog instead of by quic-go's log.Printf.
const socketBufferSize = 7 << 20

var bufferWarning sync.Once

// listenUDP opens the UDP socket of a Transport and sizes its buffers.
func listenUDP(addr string, log *slog.Logger) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("kwik: resolve %q: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("kwik: listen on %q: %w", addr, err)
	}
	rcv, snd := setSocketBuffers(c, socketBufferSize)
	if rcv < socketBufferSize || snd < socketBufferSize {
		bufferWarning.Do(func() {
			log.Warn("kwik: UDP socket buffers smaller than QUIC wants; throughput may suffer",
				"receive_kib", rcv>>10, "send_kib", snd>>10, "want_kib", socketBufferSize>>10,
				"hint", "sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032")
			// This warning replaces quic-go's log.Printf about the same
			// shortfall; quic-go reads the variable only for that.
			if os.Getenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING") == "" {
				os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
			}
		})
	}
	return c, nil
}

// transport is a quic.Transport over a UDP socket that kwik owns, shared by
// a Listener and the sessions it accepted (or owned by one dialled session).
// The socket is closed when the last reference is released.
type transport struct {
	tr   *quic.Transport
	conn *net.UDPConn

	mu   sync.Mutex // guards refs
	refs int
}

func newTransport(addr string, log *slog.Logger) (*transport, error) {
	c, err := listenUDP(addr, log)
	if err != nil {
		return nil, err
	}
	return &transport{tr: &quic.Transport{Conn: c}, conn: c, refs: 1}, nil
}

// newDialTransport is newTransport for a dialing side, which receives the
// data: its socket coalesces received datagrams where the kernel allows it
// (see groConn), and quic-go reads them through it.
func newDialTransport(addr string, log *slog.Logger) (*transport, error) {
	c, err := listenUDP(addr, log)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn = c
	if g, ok := newGROConn(c); ok {
		pc = g
	}
	return &transport{tr: &quic.Transport{Conn: pc}, conn: c, refs: 1}, nil
}

// acquire adds a reference; it fails if the transport is already closed.
func (t *transport) acquire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refs == 0 {
		return false
	}
	t.refs++
	return true
}

// release drops a reference and closes the transport with the last one.
func (t *transport) release() {
	t.mu.Lock()
	t.refs--
	last := t.refs == 0
	t.mu.Unlock()
	if last {
		t.tr.Close()
		t.conn.Close()
	}
}

// statelessResetKey derives quic-go's stateless reset key from a server
// secret with HKDF-SHA256, so that the secret itself never keys anything else.
func statelessResetKey(secret []byte) (*quic.StatelessResetKey, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("kwik: stateless reset secret of %d bytes, want at least 32", len(secret))
	}
	b, err := hkdf.Key(sha256.New, secret, nil, "kwik stateless reset key", len(quic.StatelessResetKey{}))
	if err != nil {
		return nil, fmt.Errorf("kwik: derive stateless reset key: %w", err)
	}
	key := quic.StatelessResetKey(b)
	return &key, nil
}
