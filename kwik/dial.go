package kwik

import (
	"context"
	"fmt"
	"net"
)

// Dial opens a session to the kwik listener at addr (host:port). The
// handshake (QUIC, TLS and SETTINGS) is bounded by ctx and by
// conf.HandshakeTimeout. A server whose certificate does not verify against
// conf.TLSConfig fails the dial with a TLS error; a server that refuses the
// client's certificate (conf.TLSConfig.Certificates), or its absence,
// fails it with an error matching ErrClientCertificate.
func Dial(ctx context.Context, addr string, conf *Config) (*Session, error) {
	c, err := conf.resolve()
	if err != nil {
		return nil, err
	}
	// c.TLSConfig keeps the caller's ServerName: an empty one means the
	// host of each address dialled, the primary's here and later the
	// secondaries'.
	dialTLS := c.TLSConfig
	if dialTLS.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("kwik: dial %s: %w", addr, err)
		}
		dialTLS = dialTLS.Clone()
		dialTLS.ServerName = host
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("kwik: dial %s: %w", addr, err)
	}
	local := c.LocalAddr
	switch {
	case local != "":
	case ua.IP.To4() != nil:
		local = "0.0.0.0:0"
	default:
		local = ":0"
	}
	tr, err := newDialTransport(local, c.Logger)
	if err != nil {
		return nil, fmt.Errorf("kwik: dial %s: %w", addr, err)
	}
	hctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	conn, err := tr.tr.Dial(hctx, ua, dialTLS, c.quicConfig(true))
	if err != nil {
		tr.release()
		return nil, fmt.Errorf("kwik: dial %s: %w", addr, clientCertificateError(err))
	}
	s, err := setupSession(hctx, conn, tr, c, true)
	if err != nil {
		// A server that refuses the client's certificate does so after
		// the client's side of the handshake is complete: the refusal
		// ends the connection while SETTINGS are awaited.
		if cerr := context.Cause(conn.Context()); cerr != nil {
			if e := clientCertificateError(cerr); e != cerr {
				err = e
			}
		}
		return nil, fmt.Errorf("kwik: dial %s: %w", addr, err)
	}
	return s, nil
}
