package kwik

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kwikfs/kwikfs/kwik/internal/wire"
)

// Reasons a secondary refuses a path. The secondary closes the connection
// with PathRefused and the reason's text; the client's error and the
// primary's PathEvent.Err match the same sentinel with errors.Is.
var (
	// ErrTokenMissing: the client presented no path token (no ADD_PATH as
	// the second control frame, within HandshakeTimeout).
	ErrTokenMissing = errors.New("kwik: path token missing")
	// ErrTokenInvalid: the token is malformed or its signature does not
	// verify under any of the secondary's VerifyKeys.
	ErrTokenInvalid = errors.New("kwik: path token invalid")
	// ErrTokenExpired: the token's expiry has passed.
	ErrTokenExpired = errors.New("kwik: path token expired")
	// ErrTokenWrongSecondary: the token was issued for another secondary's
	// address.
	ErrTokenWrongSecondary = errors.New("kwik: path token for another secondary")
	// ErrTokenReused: a connection was already admitted with this token.
	ErrTokenReused = errors.New("kwik: path token already used")
	// ErrPathLimit: the client already has Config.MaxPaths secondary paths.
	ErrPathLimit = errors.New("kwik: client path limit reached")
)

// refusals are the refusal reasons, found again by their text.
var refusals = []error{ErrTokenMissing, ErrTokenInvalid, ErrTokenExpired, ErrTokenWrongSecondary, ErrTokenReused, ErrPathLimit}

func refusalByText(msg string) error {
	for _, e := range refusals {
		if e.Error() == msg {
			return e
		}
	}
	return nil
}

// Reasons a secondary refuses a relayed command. They are counted
// (SecondaryStats) and logged, never returned by the API.
var (
	errCommandSignature = errors.New("command signature does not verify")
	errCommandPath      = errors.New("command for another session or path")
	errCommandReplayed  = errors.New("command replayed")
	errCommandExpired   = errors.New("command expired")
)

// Signature contexts (Ed25519ctx, RFC 8032): a token's signature never
// verifies as a command's, nor the other way round.
const (
	tokenContext   = "kwik path token v1"
	commandContext = "kwik relayed command v1"
)

// clusterKeys are the primary's keys as one side holds them: a primary its
// Ed25519 private key, which signs path tokens and relayed commands (and
// verifies with its public half); a secondary only public keys, which
// verify: it cannot mint a token or a command.
type clusterKeys struct {
	sign   ed25519.PrivateKey  // nil on a secondary
	verify []ed25519.PublicKey // tried in order
}

// newSigningKeys returns a primary's keys for the private key priv.
func newSigningKeys(priv ed25519.PrivateKey) (*clusterKeys, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("kwik: signing key of %d bytes, want an Ed25519 private key of %d", len(priv), ed25519.PrivateKeySize)
	}
	return &clusterKeys{sign: priv, verify: []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}}, nil
}

// newVerifyKeys returns a secondary's keys for the primary public keys
// pubs (at least one).
func newVerifyKeys(pubs []ed25519.PublicKey) (*clusterKeys, error) {
	if len(pubs) == 0 {
		return nil, ErrNoSigningKey
	}
	for _, k := range pubs {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("kwik: verify key of %d bytes, want an Ed25519 public key of %d", len(k), ed25519.PublicKeySize)
		}
	}
	return &clusterKeys{verify: slices.Clone(pubs)}, nil
}

// signature signs msg in context ctx; it panics without a private key (a
// programming error: only a primary's sessions sign).
func (k *clusterKeys) signature(ctx string, msg []byte) []byte {
	sig, err := k.sign.Sign(nil, msg, &ed25519.Options{Context: ctx})
	if err != nil {
		panic(fmt.Sprintf("kwik: Ed25519 sign: %v", err))
	}
	return sig
}

// verified reports whether sig is a signature of msg in context ctx by one
// of the verify keys.
func (k *clusterKeys) verified(ctx string, msg, sig []byte) bool {
	for _, pub := range k.verify {
		if ed25519.VerifyWithOptions(pub, msg, sig, &ed25519.Options{Context: ctx}) == nil {
			return true
		}
	}
	return false
}

// unixMilli encodes a time for the wire (0 for times before 1970).
func unixMilli(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

// issueToken returns an encoded path token admitting path pid of session
// sid at the secondary addr until expiry.
func (k *clusterKeys) issueToken(sid uint64, pid PathID, addr string, expiry time.Time) []byte {
	t := wire.PathToken{SessionID: sid, PathID: uint64(pid), Expiry: unixMilli(expiry), Addr: addr}
	b := t.AppendSigned(nil)
	return append(b, k.signature(tokenContext, b)...)
}

// verifyToken checks an encoded token for the secondary at addr at time now.
// The signature is checked first, over the bytes received, so that only
// genuine tokens are judged on their address and expiry.
func (k *clusterKeys) verifyToken(b []byte, addr string, now time.Time) (*wire.PathToken, error) {
	t, err := wire.ParsePathToken(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if !k.verified(tokenContext, b[:len(b)-wire.SigLen], t.Sig[:]) {
		return nil, ErrTokenInvalid
	}
	if t.Addr != addr {
		return nil, fmt.Errorf("%w: issued for %q, this is %q", ErrTokenWrongSecondary, t.Addr, addr)
	}
	if t.Expiry < unixMilli(now) {
		return nil, ErrTokenExpired
	}
	return t, nil
}

// signCommand sets c.Sig and returns the encoded command.
func (k *clusterKeys) signCommand(c *wire.Command) []byte {
	b := c.AppendSigned(nil)
	copy(c.Sig[:], k.signature(commandContext, b))
	return append(b, c.Sig[:]...)
}

// verifyCommand decodes an encoded command and checks its signature over
// the bytes received. Session, path, sequence number and expiry are the
// caller's to check.
func (k *clusterKeys) verifyCommand(b []byte) (*wire.Command, error) {
	c, err := wire.ParseCommand(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCommandSignature, err)
	}
	if !k.verified(commandContext, b[:len(b)-wire.SigLen], c.Sig[:]) {
		return nil, errCommandSignature
	}
	return c, nil
}

// PathError reports why a path failed or closed: in PathEvent.Err, in
// PathStats.Err and from AddPath. Code and Message are those of the path
// connection's close (PathRefused with the reason's text for a refused
// token); Err, if set, is the cause: one of the refusal sentinels
// (ErrTokenExpired, ...) or the QUIC, TLS or dial error.
type PathError struct {
	Path    PathID
	Addr    string
	Code    ErrorCode
	Message string
	Remote  bool // the far end (secondary, or the client for the primary) ended it
	Err     error
}

func (e *PathError) Error() string {
	what := "failed"
	if e.Code == NoError {
		what = "closed"
	}
	return fmt.Sprintf("kwik: path %d to %s %s: %v: %s", e.Path, e.Addr, what, e.Code, e.Message)
}

// Unwrap returns the cause, if any.
func (e *PathError) Unwrap() error { return e.Err }

// pathErrorFrom builds the PathError of path p from the error that ended it.
func pathErrorFrom(id PathID, addr string, err error) *PathError {
	pe := &PathError{Path: id, Addr: addr}
	var se *SessionError
	var already *PathError
	switch {
	case errors.As(err, &already):
		return already
	case errors.As(err, &se):
		pe.Code, pe.Message, pe.Remote, pe.Err = se.Code, se.Message, se.Remote, se.Err
		if se.Code == PathRefused {
			if r := refusalByText(se.Message); r != nil {
				pe.Err = r
			}
		}
	default:
		pe.Code, pe.Message, pe.Err = InternalError, err.Error(), err
	}
	return pe
}
