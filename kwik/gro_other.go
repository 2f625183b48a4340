//go:build !linux

package kwik

import "net"

// newGROConn reports that UDP_GRO is not to be had off Linux: the socket
// is used as it is.
func newGROConn(c *net.UDPConn) (net.PacketConn, bool) { return nil, false }
