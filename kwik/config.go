package kwik

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the TLS application protocol kwik negotiates.
const ALPN = "kwik/1"

// Defaults for the zero fields of a Config.
const (
	DefaultStreamReceiveWindow  = 8 << 20
	DefaultSessionReceiveWindow = 32 << 20
	DefaultMaxIncomingStreams   = 1024
	DefaultMaxControlFrameSize  = 64 << 10
	DefaultMaxDataFramePayload  = 256 << 10
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultIdleTimeout          = 30 * time.Second
	DefaultKeepAlivePeriod      = 10 * time.Second
)

// minFrameLimit is the smallest MaxControlFrameSize and MaxDataFramePayload a
// peer may announce, and that Config accepts.
const minFrameLimit = 1 << 10

// Config configures a Dial or a Listen. A zero field takes its default.
// Config is not modified and may be shared.
type Config struct {
	// TLSConfig is required. kwik clones it, forces TLS 1.3 and sets
	// NextProtos to [ALPN]. A client's ServerName, if empty, is the host part
	// of the dialled address.
	TLSConfig *tls.Config

	// StreamReceiveWindow is how many bytes this side buffers per logical
	// stream: the peer may send up to that many bytes beyond what the
	// application has read. Default 8 MiB.
	StreamReceiveWindow uint64
	// SessionReceiveWindow bounds the bytes buffered over all the streams of
	// a session. Default 32 MiB.
	SessionReceiveWindow uint64
	// MaxIncomingStreams is how many logical streams the peer may have open
	// at once (opened by the peer and not yet finished). Default 1024.
	MaxIncomingStreams int
	// MaxControlFrameSize bounds the body of a control frame this side
	// accepts; a bigger frame closes the session with FrameSizeError.
	// Default 64 KiB, minimum 1 KiB.
	MaxControlFrameSize int
	// MaxDataFramePayload bounds the payload of a data frame this side
	// accepts; a bigger frame closes the session with FrameSizeError. The
	// sender uses the smaller of both sides' values. Default 256 KiB,
	// minimum 1 KiB.
	MaxDataFramePayload int

	// StatelessResetSecret, on a listener, lets it reset at once the
	// sessions of an earlier run that peers still hold: a restarted server
	// with the same secret answers their packets with a QUIC stateless reset,
	// so clients reconnect immediately instead of after IdleTimeout. It must
	// be a persistent secret of at least 32 bytes known only to the server
	// (kwik-primary uses its cluster key); kwik derives the reset key from
	// it. Nil disables stateless resets. Ignored by Dial.
	StatelessResetSecret []byte

	// HandshakeTimeout bounds the QUIC and TLS handshakes and the exchange of
	// SETTINGS. Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session that has heard nothing from its peer for
	// that long. Default 30 s.
	IdleTimeout time.Duration
	// KeepAlivePeriod is how often an otherwise idle session pings its peer;
	// negative disables keep-alives. Default 10 s.
	KeepAlivePeriod time.Duration

	// Logger receives the session's log records. Default slog.Default().
	Logger *slog.Logger
}

// resolve returns a copy of c with defaults applied, validated.
func (c *Config) resolve() (*Config, error) {
	if c == nil {
		return nil, errors.New("kwik: nil Config")
	}
	if c.TLSConfig == nil {
		return nil, errors.New("kwik: Config.TLSConfig is required")
	}
	r := *c
	r.TLSConfig = c.TLSConfig.Clone()
	r.TLSConfig.MinVersion = tls.VersionTLS13
	r.TLSConfig.MaxVersion = tls.VersionTLS13
	r.TLSConfig.NextProtos = []string{ALPN}
	setDefault(&r.StreamReceiveWindow, DefaultStreamReceiveWindow)
	setDefault(&r.SessionReceiveWindow, DefaultSessionReceiveWindow)
	setDefault(&r.MaxIncomingStreams, DefaultMaxIncomingStreams)
	setDefault(&r.MaxControlFrameSize, DefaultMaxControlFrameSize)
	setDefault(&r.MaxDataFramePayload, DefaultMaxDataFramePayload)
	setDefault(&r.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&r.IdleTimeout, DefaultIdleTimeout)
	setDefault(&r.KeepAlivePeriod, DefaultKeepAlivePeriod)
	if r.KeepAlivePeriod < 0 {
		r.KeepAlivePeriod = 0
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	switch {
	case r.MaxIncomingStreams < 0:
		return nil, fmt.Errorf("kwik: MaxIncomingStreams %d is negative", r.MaxIncomingStreams)
	case r.MaxControlFrameSize < minFrameLimit:
		return nil, fmt.Errorf("kwik: MaxControlFrameSize %d below %d", r.MaxControlFrameSize, minFrameLimit)
	case r.MaxDataFramePayload < minFrameLimit:
		return nil, fmt.Errorf("kwik: MaxDataFramePayload %d below %d", r.MaxDataFramePayload, minFrameLimit)
	case r.StreamReceiveWindow > maxWindow || r.SessionReceiveWindow > maxWindow:
		return nil, fmt.Errorf("kwik: receive windows above %d bytes", uint64(maxWindow))
	}
	return &r, nil
}

// maxWindow keeps window arithmetic far from overflow.
const maxWindow = 1 << 40

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// quicConfig returns the quic-go configuration for one path.
//
// A logical stream with one source is read straight from its QUIC stream
// (see source), so unread data waits in quic-go's buffers: QUIC's windows
// are kwik's plus an allowance for frame headers, and bound that memory
// (quic-go closes the connection with FLOW_CONTROL_ERROR if a peer exceeds
// them). They are fixed (initial = maximum), large enough that an honest
// sender, bound by kwik's smaller windows, is never throttled by QUIC.
func (c *Config) quicConfig(isClient bool) *quic.Config {
	streamWin := c.StreamReceiveWindow + c.StreamReceiveWindow/8 + 64<<10
	connWin := c.SessionReceiveWindow + c.SessionReceiveWindow/8 + 128<<10
	uni := int64(max(4096, 4*c.MaxIncomingStreams))
	bidi := int64(1) // the control stream, opened by the dialer
	if isClient {
		bidi = -1
	}
	return &quic.Config{
		HandshakeIdleTimeout:           c.HandshakeTimeout,
		MaxIdleTimeout:                 c.IdleTimeout,
		KeepAlivePeriod:                c.KeepAlivePeriod,
		InitialStreamReceiveWindow:     streamWin,
		MaxStreamReceiveWindow:         streamWin,
		InitialConnectionReceiveWindow: connWin,
		MaxConnectionReceiveWindow:     connWin,
		MaxIncomingStreams:             bidi,
		MaxIncomingUniStreams:          uni,
	}
}
