package kwik

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/quic-go/quic-go"
)

// ErrorCode is carried by CloseWithError, CancelRead and CancelWrite. Codes
// below 0x100 are kwik's own (the constants below); applications may use any
// other value.
type ErrorCode uint64

// Session and stream error codes used by kwik itself.
const (
	NoError           ErrorCode = 0x0 // orderly close
	InternalError     ErrorCode = 0x1 // a local failure
	ProtocolViolation ErrorCode = 0x2 // malformed or unexpected frame
	FlowControlError  ErrorCode = 0x3 // data beyond a receive window
	StreamLimitError  ErrorCode = 0x4 // a stream beyond MAX_STREAMS
	FrameSizeError    ErrorCode = 0x5 // a frame over the receiver's limit
	FinalSizeError    ErrorCode = 0x6 // data beyond or contradicting a final size
	PathRefused       ErrorCode = 0x7 // a secondary or client refused a path
	SessionLimitError ErrorCode = 0x8 // a listener or secondary at its MaxSessions refused the connection
	// PathStalled: a client closed a secondary path that received no data
	// for Config.PathStallTimeout after it was given work.
	PathStalled ErrorCode = 0x9
	// WriteStalled: a secondary closed a path whose client took none of
	// its data for Config.WriteTimeout.
	WriteStalled ErrorCode = 0xa
	// ControlQueueOverflow: a side closed a session (path 0) or a secondary
	// path whose peer stopped reading its control stream: more than
	// Config.MaxControlQueueBytes of control frames waited for it.
	ControlQueueOverflow ErrorCode = 0xb
)

var codeNames = map[ErrorCode]string{
	NoError:              "NO_ERROR",
	InternalError:        "INTERNAL_ERROR",
	ProtocolViolation:    "PROTOCOL_VIOLATION",
	FlowControlError:     "FLOW_CONTROL_ERROR",
	StreamLimitError:     "STREAM_LIMIT_ERROR",
	FrameSizeError:       "FRAME_SIZE_ERROR",
	FinalSizeError:       "FINAL_SIZE_ERROR",
	PathRefused:          "PATH_REFUSED",
	SessionLimitError:    "SESSION_LIMIT_ERROR",
	PathStalled:          "PATH_STALLED",
	WriteStalled:         "WRITE_STALLED",
	ControlQueueOverflow: "CONTROL_QUEUE_OVERFLOW",
}

// String returns the code's name, or its number in hex.
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", uint64(c))
}

// ErrClosed is matched (errors.Is) by every error that reports a closed
// session or listener: all *SessionError values, and Accept after
// Listener.Close.
var ErrClosed = errors.New("kwik: closed")

// ErrClientCertificate is matched (errors.Is) by the error of a Dial, or
// of a secondary path, that the server refused for the client's
// certificate: none was presented while the server requires one, or the
// server does not accept it (signed by a CA it does not trust, expired, or
// not for client authentication).
var ErrClientCertificate = errors.New("kwik: the server requires a client certificate signed by its client CA")

// TLS alerts a server sends about a client's certificate (RFC 8446,
// section 6), carried as QUIC CRYPTO_ERROR 0x100 + alert.
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
	alertCertificateRequired    = 116
)

// clientCertificateError returns err wrapped with ErrClientCertificate and
// what the server's TLS alert says when err reports that alert about the
// client's certificate; any other err is returned as is.
func clientCertificateError(err error) error {
	var trErr *quic.TransportError
	if !errors.As(err, &trErr) || !trErr.Remote || !trErr.ErrorCode.IsCryptoError() {
		return err
	}
	var why string
	switch uint8(trErr.ErrorCode) {
	case alertCertificateRequired:
		why = "none was presented"
	case alertUnknownCA:
		why = "the server does not trust the CA that signed the one presented"
	case alertCertificateExpired:
		why = "the one presented has expired or is not valid yet"
	case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked, alertCertificateUnknown:
		why = "the server refused the one presented"
	default:
		return err
	}
	return fmt.Errorf("%w: %s (%w)", ErrClientCertificate, why, err)
}

// withCertificateRefusal returns err, or, when conn was closed by the
// server over the client's certificate, an error that says so (matching
// ErrClientCertificate) with err's text. A server refuses a certificate
// after the client's side of the handshake is complete: the refusal ends
// the connection while the client waits for SETTINGS.
func withCertificateRefusal(conn *quic.Conn, err error) error {
	cause := context.Cause(conn.Context())
	if cause == nil {
		return err
	}
	if e := clientCertificateError(cause); e != cause {
		return fmt.Errorf("%w; %v", e, err)
	}
	return err
}

// ErrStreamClosed is returned by Write after Close.
var ErrStreamClosed = errors.New("kwik: write on closed stream")

// StreamError reports that one direction of a logical stream was ended
// abruptly: by the peer's CancelWrite (Read fails) or CancelRead (Write
// fails) if Remote, or by the local call otherwise.
type StreamError struct {
	StreamID StreamID
	Code     ErrorCode
	Remote   bool
}

func (e *StreamError) Error() string {
	who := "local"
	if e.Remote {
		who = "remote"
	}
	return fmt.Sprintf("kwik: stream %d canceled by %s with code %v", e.StreamID, who, e.Code)
}

// Is reports whether target is a *StreamError with the same code and side,
// so that errors.Is(err, &StreamError{Code: c, Remote: true}) works whatever
// the stream.
func (e *StreamError) Is(target error) bool {
	t, ok := target.(*StreamError)
	return ok && t.Code == e.Code && t.Remote == e.Remote
}

// SessionError reports why a session ended. Remote tells whether the peer
// closed it; Err, if set, is the underlying cause (a QUIC or TLS error, an
// idle timeout). Every SessionError matches ErrClosed.
type SessionError struct {
	Code    ErrorCode
	Message string
	Remote  bool
	Err     error
}

func (e *SessionError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	if e.Message == "" {
		return fmt.Sprintf("kwik: session closed %s: %v", who, e.Code)
	}
	return fmt.Sprintf("kwik: session closed %s: %v: %s", who, e.Code, e.Message)
}

// Unwrap returns the cause, if any.
func (e *SessionError) Unwrap() error { return e.Err }

// Is makes every SessionError match ErrClosed.
func (e *SessionError) Is(target error) bool { return target == ErrClosed }

// sessionErrorFromQUIC translates the error that ended a QUIC connection.
func sessionErrorFromQUIC(err error) *SessionError {
	var appErr *quic.ApplicationError
	var trErr *quic.TransportError
	var idle *quic.IdleTimeoutError
	switch {
	case errors.As(err, &appErr):
		if ErrorCode(appErr.ErrorCode) == PathRefused {
			if r := refusalByText(appErr.ErrorMessage); r != nil {
				// A secondary refused the path: match its reason too.
				err = fmt.Errorf("%w (%w)", r, err)
			}
		}
		return &SessionError{Code: ErrorCode(appErr.ErrorCode), Message: appErr.ErrorMessage, Remote: appErr.Remote, Err: err}
	case errors.As(err, &trErr):
		code := InternalError
		if trErr.ErrorCode == quic.FlowControlError {
			code = FlowControlError // a peer overran QUIC's windows (see quicConfig)
		}
		return &SessionError{Code: code, Message: "QUIC: " + trErr.Error(), Remote: trErr.Remote, Err: err}
	case errors.As(err, &idle):
		return &SessionError{Code: InternalError, Message: "idle timeout", Err: err}
	default:
		return &SessionError{Code: InternalError, Message: err.Error(), Err: err}
	}
}

// isConnError reports whether err from a QUIC stream operation means that the
// whole connection is gone.
func isConnError(err error) bool {
	var appErr *quic.ApplicationError
	var trErr *quic.TransportError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var reset *quic.StatelessResetError
	return errors.As(err, &appErr) || errors.As(err, &trErr) || errors.As(err, &idle) ||
		errors.As(err, &hs) || errors.As(err, &reset) || errors.Is(err, quic.ErrTransportClosed)
}

// deadlineError is returned when a deadline passes. It matches
// os.ErrDeadlineExceeded and is a net.Error with Timeout() true.
type deadlineError struct{}

func (deadlineError) Error() string   { return "kwik: deadline exceeded" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }
func (deadlineError) Unwrap() error   { return os.ErrDeadlineExceeded }

var errDeadline error = deadlineError{}
