//go:build !linux

package kwik

import "net"

// setSocketBuffers asks for want bytes of receive and send buffer. Off Linux
// the result is not inspected; quic-go checks it itself.
func setSocketBuffers(c *net.UDPConn, want int) (rcv, snd int) {
	_ = c.SetReadBuffer(want)
	_ = c.SetWriteBuffer(want)
	return want, want
}
