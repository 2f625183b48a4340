package kwik

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	DefaultTokenLifetime        = time.Minute
	DefaultMaxPaths             = 8
	DefaultReportInterval       = 20 * time.Millisecond
	DefaultMaxSessions          = 256
	DefaultMaxSessionsPerSource = 32
	DefaultMaxSetupsPerSource   = 8
	DefaultSetupTimeout         = 5 * time.Second
	DefaultMaxCommandsPerPath   = 16
	DefaultWriteTimeout         = 10 * time.Second
	DefaultPathStallTimeout     = 2 * time.Second
	DefaultMaxControlQueueBytes = 4 << 20
)

// maxPaths bounds Config.MaxPaths, so that a client's REPORT stays small.
const maxPaths = 32

// minPathStallTimeout is the shortest PathStallTimeout Config accepts.
const minPathStallTimeout = 10 * time.Millisecond

// minFrameLimit is the smallest MaxControlFrameSize and MaxDataFramePayload a
// peer may announce, and that Config accepts.
const minFrameLimit = 1 << 10

// minControlQueue is the smallest MaxControlQueueBytes Config accepts.
const minControlQueue = 64 << 10

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

	// MaxSessions, on a listener (Listen), bounds the sessions open at
	// once: handed to Accept or waiting for it, and not yet closed. On a
	// secondary (ListenSecondary) it bounds the open paths. A connection
	// beyond it is closed at once with SessionLimitError and the message
	// "session limit of N reached"; the dialler's Dial (or AddPath) fails
	// with that *SessionError. Default 256; negative means no limit.
	// Ignored by Dial.
	MaxSessions int
	// MaxSessionsPerSource bounds, likewise, the sessions (or a
	// secondary's paths) from one source IP address ("limit of N sessions
	// per source address reached"), so that one host cannot take every
	// slot of MaxSessions. Clients behind one NAT share it. Default 32;
	// negative means no limit. Ignored by Dial.
	MaxSessionsPerSource int
	// MaxSetupsPerSource bounds the connections from one source IP
	// address that have completed the QUIC handshake but not yet kwik's
	// (SETTINGS, and on a secondary the path token), which each hold one
	// of the 64 setup slots of a listener or secondary for up to
	// SetupTimeout ("limit of N handshakes per source address reached").
	// Default 8; negative means no limit. Ignored by Dial.
	MaxSetupsPerSource int
	// SetupTimeout bounds, on a listener or secondary, the time from the
	// end of the QUIC handshake to the end of kwik's: a connection that
	// has not sent SETTINGS (and a secondary path its token) by then is
	// closed. Default 5 s. Ignored by Dial.
	SetupTimeout time.Duration
	// MaxCommandsPerPath, on a secondary, bounds the commands of one path
	// handed to AcceptCommand and not yet done (closed, or their grant
	// written whole): the path reads no further command meanwhile, so one
	// client cannot hold every command slot of the server. Default 16.
	MaxCommandsPerPath int
	// WriteTimeout, on a secondary, bounds each write of a command's data
	// (Command.Write, WriteAt): a client that takes none of it for that
	// long (it stopped reading, or its link died without a word) has its
	// path closed with WriteStalled, which ends its commands and frees
	// their slots. Default 10 s.
	WriteTimeout time.Duration
	// LocalAddr is the UDP address (host:port) Dial binds its socket to,
	// which the secondary paths share; "" means any address and a free
	// port. Ignored by Listen and ListenSecondary.
	LocalAddr string
	// FrameTimeout bounds how long a control frame may take to arrive
	// once its first byte has, and how long a new data stream may take to
	// deliver its stream header and first frame header. A peer that starts
	// a control frame and never finishes it, or opens data streams and sends
	// nothing on them (while keeping the connection alive), has its session
	// (or its secondary path) closed with ProtocolViolation. Waiting between
	// control frames, and for the payload of a frame, is not bounded here.
	// Default: IdleTimeout, so that a frame cut in two by a network outage
	// ends the session no sooner than the outage itself would.
	FrameTimeout time.Duration

	// StatelessResetSecret, on a listener, lets it reset at once the
	// sessions of an earlier run that peers still hold: a restarted server
	// with the same secret answers their packets with a QUIC stateless reset,
	// so clients reconnect immediately instead of after IdleTimeout. It must
	// be a persistent secret of at least 32 bytes known only to the server
	// (kwik servers use one derived from their TLS key); kwik derives the reset key from
	// it. Nil disables stateless resets. Ignored by Dial.
	StatelessResetSecret []byte

	// SigningKey, on a Listen, is the primary's Ed25519 private key: its
	// sessions sign path tokens (AddPath) and relayed commands
	// (SendRawData) with it; without it they refuse both with
	// ErrNoSigningKey. Ignored elsewhere: neither a client nor a secondary
	// ever holds it.
	SigningKey ed25519.PrivateKey
	// VerifyKeys, on a secondary (ListenSecondary requires at least one),
	// are the primary public keys whose signatures it accepts on path
	// tokens and commands: one, or the old and the new one while the
	// primary's key is replaced. A secondary holds no key that signs, so
	// neither it nor anyone who takes its files can mint a token or a
	// command. Ignored elsewhere.
	VerifyKeys []ed25519.PublicKey
	// AdvertiseAddr, on a secondary, is the address the primary names in
	// its path tokens (AddPath's addr), spelled exactly the same way: the
	// secondary admits only tokens for this address. Default: the bound
	// address, Secondary.Addr().String(). Ignored elsewhere.
	AdvertiseAddr string
	// TokenLifetime, on a primary, is how long a path token or a relayed
	// command stays valid after it was issued. The clocks of the primary
	// and its secondaries must agree well within it. Default 1 minute.
	TokenLifetime time.Duration
	// MaxPaths, on a client, bounds the secondary paths open (dialling or
	// up) at once; an ADD_PATH beyond it fails that path with ErrPathLimit.
	// Default 8, at most 32.
	MaxPaths int
	// ReportInterval, on a client, is how often it reports to the primary
	// (REPORT frames) while data arrives; a stream that has received all its
	// bytes is reported at once. Default 20 ms.
	ReportInterval time.Duration
	// PathStallTimeout, on a client, is how long a secondary path may stay
	// silent after it was given work: a path on which no granted data has
	// arrived for PathStallTimeout since the first command relayed to it
	// after its last granted data is closed as stalled (PathError with code
	// PathStalled, matching ErrPathStalled), and the primary learns it as
	// PathFailed. Bytes outside the path's grants are no progress. A path
	// that keeps receiving granted data, however slowly, or that has been
	// given nothing since its last data, is never closed for it (see
	// doc.go, Stall detection). It must exceed the secondary's worst
	// honest time to answer a command (RTT, queueing, a disk read).
	// Default 2 s, minimum 10 ms; negative disables stall detection.
	// Ignored by Listen and ListenSecondary.
	PathStallTimeout time.Duration
	// MaxControlQueueBytes bounds, per path, the control frames this side
	// holds for a peer that does not read them: frames queued and frames
	// being written to the control stream (window updates, coalesced to
	// one per stream, are not counted). A frame that would take it beyond
	// the bound is dropped (PathStats.ControlFramesDropped) and the path
	// ends with ControlQueueOverflow: the whole session for path 0, only
	// that path for a client's secondary path (whose secondary stopped
	// reading the commands relayed to it). The peer's control stream
	// window (QUIC's, sized like StreamReceiveWindow) comes on top. A
	// frame is always queued when nothing is held, so a single frame
	// larger than the bound never overflows. Default 4 MiB, minimum 64 KiB.
	MaxControlQueueBytes int

	// HandshakeTimeout bounds the QUIC and TLS handshakes and the exchange of
	// SETTINGS (and, on a secondary, the presentation of the path token).
	// Default 10 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session that has heard nothing from its peer for
	// that long. Default 30 s.
	IdleTimeout time.Duration
	// KeepAlivePeriod is how often an otherwise idle session pings its peer;
	// negative disables keep-alives. Default 10 s.
	KeepAlivePeriod time.Duration

	// Logger receives the session's log records. Default slog.Default().
	Logger *slog.Logger

	// now is the clock for tokens and commands; nil means time.Now. Tests
	// in this package set it to issue or judge expired tokens.
	now func() time.Time
	// beforeControlRead, if set, is called by the control reader of path 0
	// before it reads each frame; it may block, and must return once ctx
	// (the session's) is done. Tests in this package set it to make a
	// peer stop reading its control stream.
	beforeControlRead func(ctx context.Context)
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
	setDefault(&r.TokenLifetime, DefaultTokenLifetime)
	setDefault(&r.MaxPaths, DefaultMaxPaths)
	setDefault(&r.ReportInterval, DefaultReportInterval)
	setDefault(&r.MaxSessions, DefaultMaxSessions)
	setDefault(&r.MaxSessionsPerSource, DefaultMaxSessionsPerSource)
	setDefault(&r.MaxSetupsPerSource, DefaultMaxSetupsPerSource)
	setDefault(&r.SetupTimeout, DefaultSetupTimeout)
	setDefault(&r.MaxCommandsPerPath, DefaultMaxCommandsPerPath)
	setDefault(&r.WriteTimeout, DefaultWriteTimeout)
	setDefault(&r.FrameTimeout, r.IdleTimeout)
	setDefault(&r.PathStallTimeout, DefaultPathStallTimeout)
	setDefault(&r.MaxControlQueueBytes, DefaultMaxControlQueueBytes)
	if r.PathStallTimeout < 0 {
		r.PathStallTimeout = 0 // disabled
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.VerifyKeys = slices.Clone(c.VerifyKeys)
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
	case r.SigningKey != nil && len(r.SigningKey) != ed25519.PrivateKeySize:
		return nil, fmt.Errorf("kwik: SigningKey of %d bytes, want an Ed25519 private key of %d", len(r.SigningKey), ed25519.PrivateKeySize)
	case r.MaxPaths < 0 || r.MaxPaths > maxPaths:
		return nil, fmt.Errorf("kwik: MaxPaths %d outside [0, %d]", r.MaxPaths, maxPaths)
	case r.TokenLifetime < 0 || r.ReportInterval < 0:
		return nil, errors.New("kwik: negative TokenLifetime or ReportInterval")
	case r.FrameTimeout < 0:
		return nil, errors.New("kwik: negative FrameTimeout")
	case r.MaxControlQueueBytes < minControlQueue:
		return nil, fmt.Errorf("kwik: MaxControlQueueBytes %d below %d", r.MaxControlQueueBytes, minControlQueue)
	case r.PathStallTimeout > 0 && r.PathStallTimeout < minPathStallTimeout:
		return nil, fmt.Errorf("kwik: PathStallTimeout %v below %v", r.PathStallTimeout, minPathStallTimeout)
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
	return c.quicConfigFor(isClient, false)
}

// quicConfigFor is quicConfig for a side that may also be a secondary: a
// secondary's peers (clients) open the control stream and no data stream.
func (c *Config) quicConfigFor(isClient, secondary bool) *quic.Config {
	streamWin := c.StreamReceiveWindow + c.StreamReceiveWindow/8 + 64<<10
	connWin := c.SessionReceiveWindow + c.SessionReceiveWindow/8 + 128<<10
	uni := int64(max(4096, 4*c.MaxIncomingStreams))
	bidi := int64(1) // the control stream, opened by the dialer
	if isClient {
		bidi = -1
	}
	if secondary {
		uni = -1
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
