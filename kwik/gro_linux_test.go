package kwik

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestGROConnSplitsCoalescedDatagrams sends one GSO batch of three
// datagrams (1000, 1000 and 300 bytes) and then a lone datagram to a
// groConn: ReadFrom returns the four datagrams one by one, in order, each
// from the sender, and the batch came in with one receive.
func TestGROConnSplitsCoalescedDatagrams(t *testing.T) {
	rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc, ok := newGROConn(rc)
	if !ok {
		t.Skip("the kernel refuses UDP_GRO")
	}
	g := pc.(*groConn)
	defer g.Close()
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	want := [][]byte{bytes.Repeat([]byte{1}, 1000), bytes.Repeat([]byte{2}, 1000), bytes.Repeat([]byte{3}, 300), []byte("lone")}
	batch := bytes.Join(want[:3], nil)
	// One sendmsg, cut by the kernel into 1000-byte datagrams (UDP_SEGMENT).
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], 1000)
	if _, _, err := sc.WriteMsgUDP(batch, oob, rc.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Skipf("the kernel refuses a UDP_SEGMENT send: %v", err)
	}
	if _, err := sc.WriteTo(want[3], rc.LocalAddr()); err != nil {
		t.Fatal(err)
	}

	g.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	fills := 0
	for i, w := range want {
		if g.next >= g.end {
			fills++
		}
		n, from, err := g.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: %d bytes starting %v, want %d starting %v", i, n, buf[:min(n, 4)], len(w), w[:4])
		}
		if from.String() != sc.LocalAddr().String() {
			t.Fatalf("datagram %d from %v, want %v", i, from, sc.LocalAddr())
		}
	}
	if fills != 2 {
		t.Errorf("%d receives for the GSO batch and the lone datagram, want 2 (the batch coalesced)", fills)
	}
}

// TestGROSegmentSize parses the segment size of a UDP_GRO control message,
// and reports 0 without one.
func TestGROSegmentSize(t *testing.T) {
	cm := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(cm[unix.CmsgLen(0):], 1456)
	if got := groSegmentSize(cm); got != 1456 {
		t.Errorf("segment size %d, want 1456", got)
	}
	if got := groSegmentSize(nil); got != 0 {
		t.Errorf("segment size %d without a message, want 0", got)
	}
}

// TestUDPAddrReusesTheLastAddress: the same sender gives back the same
// *net.UDPAddr; another port, address or zone a new one, with the zone of
// a link-local IPv6 sender kept.
func TestUDPAddrReusesTheLastAddress(t *testing.T) {
	a := udpAddr(&unix.SockaddrInet4{Port: 4433, Addr: [4]byte{127, 0, 0, 1}}, nil)
	if a.String() != "127.0.0.1:4433" {
		t.Fatalf("address %v", a)
	}
	if b := udpAddr(&unix.SockaddrInet4{Port: 4433, Addr: [4]byte{127, 0, 0, 1}}, a); b != a {
		t.Error("the same sender gave a new address")
	}
	if b := udpAddr(&unix.SockaddrInet4{Port: 4434, Addr: [4]byte{127, 0, 0, 1}}, a); b == a || b.Port != 4434 {
		t.Errorf("another port gave %v", b)
	}
	ll := &unix.SockaddrInet6{Port: 4433, ZoneId: 3, Addr: [16]byte{0: 0xfe, 1: 0x80, 15: 1}}
	if b := udpAddr(ll, a); b.String() != "[fe80::1%3]:4433" {
		t.Errorf("link-local sender gave %v", b)
	}
	if b := udpAddr(&unix.SockaddrUnix{Name: "x"}, a); b != nil {
		t.Errorf("a Unix address gave %v", b)
	}
}
