package kwik

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// groBufferSize holds the largest datagram the kernel coalesces for a
// UDP_GRO socket (a 64 KiB IP payload).
const groBufferSize = 1 << 16

// groConn is a dialing side's UDP socket as quic-go sees it, with UDP_GRO
// on: the kernel hands over runs of datagrams from one sender that
// arrived together (on loopback, a whole GSO send of the server's) as one
// buffer with their segment size, and ReadFrom returns them one by one
// from memory. A client receives about a thousand datagrams per MiB of
// file data; fetching them one system call per datagram (quic-go's
// recvmmsg fetches 8 a call) was a quarter of the daemon's CPU in a cold
// read on loopback.
//
// quic-go treats a net.PacketConn that is not a *net.UDPConn as a plain
// one: one ReadFrom and one WriteTo per datagram, no GSO and no ECN. A
// client sends only requests and acknowledgements, so it loses nothing
// that matters, while the servers keep quic-go's GSO for the data they
// send. SyscallConn is still there, so quic-go sets the don't-fragment bit
// and discovers the path MTU as before.
//
// ReadFrom must not be called concurrently (quic-go reads from one
// goroutine); the other methods may be.
type groConn struct {
	c   *net.UDPConn
	raw syscall.RawConn

	// The last coalesced read: buf[next:end] is still to be returned, in
	// datagrams of seg bytes (the last may be shorter; seg 0: one
	// datagram), all from from.
	buf       []byte
	oob       []byte
	next, end int
	seg       int
	from      *net.UDPAddr
}

// newGROConn turns UDP_GRO on for c and wraps it in a groConn; ok is false
// (and c is unchanged) when the kernel refuses the option.
func newGROConn(c *net.UDPConn) (pc net.PacketConn, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return nil, false
	}
	return &groConn{
		c:   c,
		raw: raw,
		buf: make([]byte, groBufferSize),
		oob: make([]byte, unix.CmsgSpace(4)),
	}, true
}

// ReadFrom copies the next datagram into p (truncated to len(p)) and
// returns its length and sender.
func (g *groConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if g.next >= g.end {
		if err := g.fill(); err != nil {
			return 0, nil, err
		}
	}
	size := g.end - g.next
	if g.seg > 0 {
		size = min(size, g.seg)
	}
	n := copy(p, g.buf[g.next:g.next+size])
	g.next += size
	return n, g.from, nil
}

// fill waits for the next datagram, or run of coalesced datagrams.
func (g *groConn) fill() error {
	var (
		n, oobn int
		from    unix.Sockaddr
		rerr    error
	)
	err := g.raw.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), g.buf, g.oob, 0)
			if !errors.Is(rerr, unix.EINTR) {
				return !errors.Is(rerr, unix.EAGAIN)
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return &net.OpError{Op: "read", Net: "udp", Source: g.c.LocalAddr(), Err: err}
	}
	g.next, g.end, g.seg = 0, n, 0
	g.from = udpAddr(from, g.from)
	if oobn > 0 {
		g.seg = groSegmentSize(g.oob[:oobn])
	}
	return nil
}

// udpAddr returns sa as a *net.UDPAddr: last when it is the same address
// (a client hears from a few servers, so most receives allocate nothing),
// nil for another kind of address. A link-local IPv6 sender keeps its
// zone, as the interface index.
func udpAddr(sa unix.Sockaddr, last *net.UDPAddr) *net.UDPAddr {
	var (
		ip   net.IP
		port int
		zone string
	)
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = net.IP(sa.Addr[:]), sa.Port
	case *unix.SockaddrInet6:
		ip, port = net.IP(sa.Addr[:]), sa.Port
		if sa.ZoneId != 0 {
			zone = strconv.Itoa(int(sa.ZoneId))
		}
	default:
		return nil
	}
	if last != nil && last.Port == port && last.Zone == zone && last.IP.Equal(ip) {
		return last
	}
	return &net.UDPAddr{IP: append(net.IP(nil), ip...), Port: port, Zone: zone}
}

// groSegmentSize returns the segment size a UDP_GRO control message in oob
// gives, or 0 when there is none (the buffer holds one datagram).
func groSegmentSize(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_UDP || m.Header.Type != unix.UDP_GRO {
			continue
		}
		switch {
		case len(m.Data) >= 4:
			return int(binary.NativeEndian.Uint32(m.Data))
		case len(m.Data) >= 2:
			return int(binary.NativeEndian.Uint16(m.Data))
		}
	}
	return 0
}

// WriteTo sends one datagram.
func (g *groConn) WriteTo(p []byte, addr net.Addr) (int, error) { return g.c.WriteTo(p, addr) }

// Close closes the socket; a ReadFrom under way returns an error.
func (g *groConn) Close() error { return g.c.Close() }

// LocalAddr returns the socket's address.
func (g *groConn) LocalAddr() net.Addr { return g.c.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (g *groConn) SetDeadline(t time.Time) error { return g.c.SetDeadline(t) }

// SetReadDeadline sets the deadline of ReadFrom's wait for new datagrams.
func (g *groConn) SetReadDeadline(t time.Time) error { return g.c.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (g *groConn) SetWriteDeadline(t time.Time) error { return g.c.SetWriteDeadline(t) }

// SyscallConn returns the socket's raw connection (quic-go sets the
// don't-fragment bit through it).
func (g *groConn) SyscallConn() (syscall.RawConn, error) { return g.raw, nil }

// SetReadBuffer sets the socket's receive buffer size.
func (g *groConn) SetReadBuffer(n int) error { return g.c.SetReadBuffer(n) }

// SetWriteBuffer sets the socket's send buffer size.
func (g *groConn) SetWriteBuffer(n int) error { return g.c.SetWriteBuffer(n) }

var _ net.PacketConn = (*groConn)(nil)
