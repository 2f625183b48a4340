package ctxwatch

import (
	"context"
	"sync/atomic"
	"testing"
)

func TestReleaseBeforeDoneNeverRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	release := OnDone(ctx, func() { ran.Store(true) })
	release()
	cancel()
	if ran.Load() {
		t.Fatal("f ran after release")
	}
}

func TestReleaseAfterDoneWaitsForF(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var ran atomic.Bool
	release := OnDone(ctx, func() { ran.Store(true) })
	cancel()
	release()
	if !ran.Load() {
		t.Fatal("release returned before f finished")
	}
}
