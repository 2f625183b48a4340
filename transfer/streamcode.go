package transfer

import (
	"context"
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

// onDone runs f once ctx is done, in a goroutine of its own, until the
// returned release is called. release stops f from starting and, when f has
// started already, waits for it to return, so that no goroutine outlives
// the caller.
func onDone(ctx context.Context, f func()) (release func()) {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		f()
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}
