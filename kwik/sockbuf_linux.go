package kwik

import (
	"net"

	"golang.org/x/sys/unix"
)

// setSocketBuffers asks for want bytes of receive and send buffer, with the
// privileged SO_*BUFFORCE options if the plain ones are capped by
// net.core.rmem_max / wmem_max, and returns the sizes obtained. Linux
// doubles a requested size for bookkeeping and reports the doubled value;
// the sizes returned are the requested ones, before doubling.
func setSocketBuffers(c *net.UDPConn, want int) (rcv, snd int) {
	_ = c.SetReadBuffer(want)
	_ = c.SetWriteBuffer(want)
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0
	}
	_ = raw.Control(func(fd uintptr) {
		get := func(opt int) int {
			v, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt)
			return v / 2
		}
		if rcv = get(unix.SO_RCVBUF); rcv < want {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, want)
			rcv = get(unix.SO_RCVBUF)
		}
		if snd = get(unix.SO_SNDBUF); snd < want {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, want)
			snd = get(unix.SO_SNDBUF)
		}
	})
	return rcv, snd
}
