package kwik

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
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
	// ErrTokenInvalid: the token is malformed or its MAC does not verify
	// under the secondary's cluster key.
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
	errCommandMAC      = errors.New("command MAC does not verify")
	errCommandPath     = errors.New("command for another session or path")
	errCommandReplayed = errors.New("command replayed")
	errCommandExpired  = errors.New("command expired")
)

// clusterKeys are the keys derived from a cluster key: one for path tokens,
// one for relayed commands, so that neither can pass for the other.
type clusterKeys struct {
	token, command []byte
}

func newClusterKeys(secret []byte) (*clusterKeys, error) {
	if len(secret) < minClusterKey {
		return nil, fmt.Errorf("kwik: cluster key of %d bytes, want at least %d", len(secret), minClusterKey)
	}
	tk, err := hkdf.Key(sha256.New, secret, nil, "kwik path token key", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("kwik: derive token key: %w", err)
	}
	ck, err := hkdf.Key(sha256.New, secret, nil, "kwik relayed command key", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("kwik: derive command key: %w", err)
	}
	return &clusterKeys{token: tk, command: ck}, nil
}

func sum(key, msg []byte) (out [wire.MACLen]byte) {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	m.Sum(out[:0])
	return out
}

// unixMilli encodes a time for the wire (0 for times before 1970).
func unixMilli(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

// issueToken returns an encoded path token admitting path pid of session
// sid at the secondary addr until expiry.
func (k *clusterKeys) issueToken(sid uint64, pid PathID, addr string, expiry time.Time) []byte {
	t := wire.PathToken{SessionID: sid, PathID: uint64(pid), Expiry: unixMilli(expiry), Addr: addr}
	b := t.AppendSigned(nil)
	t.MAC = sum(k.token, b)
	return append(b, t.MAC[:]...)
}

// verifyToken checks an encoded token for the secondary at addr at time now.
// The MAC is checked first, over the bytes received, so that only genuine
// tokens are judged on their address and expiry.
func (k *clusterKeys) verifyToken(b []byte, addr string, now time.Time) (*wire.PathToken, error) {
	t, err := wire.ParsePathToken(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	if want := sum(k.token, b[:len(b)-wire.MACLen]); !hmac.Equal(want[:], t.MAC[:]) {
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

// signCommand sets c.MAC and returns the encoded command.
func (k *clusterKeys) signCommand(c *wire.Command) []byte {
	b := c.AppendSigned(nil)
	c.MAC = sum(k.command, b)
	return append(b, c.MAC[:]...)
}

// verifyCommand decodes an encoded command and checks its MAC over the
// bytes received. Session, path, sequence number and expiry are the
// caller's to check.
func (k *clusterKeys) verifyCommand(b []byte) (*wire.Command, error) {
	c, err := wire.ParseCommand(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCommandMAC, err)
	}
	if want := sum(k.command, b[:len(b)-wire.MACLen]); !hmac.Equal(want[:], c.MAC[:]) {
		return nil, errCommandMAC
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
