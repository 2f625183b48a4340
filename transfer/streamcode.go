package transfer

import (
	"errors"

	"github.com/kwikfs/kwikfs/kwik"
)

// Stream reset codes. A server that fails after the status byte of a reply
// was sent resets the stream (kwik CancelWrite) with StreamCodeBase plus
// the Status of the failure; a client that abandons a request cancels with
// CodeCanceled.
const (
	StreamCodeBase kwik.ErrorCode = 0x100
	CodeCanceled   kwik.ErrorCode = 0x1ff
)

// StreamCode returns the reset code that carries err's Status.
func StreamCode(err error) kwik.ErrorCode { return StreamCodeBase + kwik.ErrorCode(StatusOf(err)) }

// streamCodeError maps a reset by the peer carrying a status code back to
// a *RemoteError; other errors are returned unchanged.
func streamCodeError(err error) error {
	var se *kwik.StreamError
	if errors.As(err, &se) && se.Remote && se.Code > StreamCodeBase && se.Code < CodeCanceled {
		s := Status(se.Code - StreamCodeBase)
		return &RemoteError{Status: s, Message: "reply aborted: " + s.Err().Error()}
	}
	return err
}
