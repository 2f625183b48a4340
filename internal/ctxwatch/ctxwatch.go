// Package ctxwatch runs cleanup when a context ends, without leaving a
// goroutine behind.
package ctxwatch

import "context"

// OnDone runs f once ctx is done, in a goroutine of its own, until the
// returned release is called. release stops f from starting and, when f has
// started already, waits for it to return, so that no goroutine outlives
// the caller.
func OnDone(ctx context.Context, f func()) (release func()) {
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
