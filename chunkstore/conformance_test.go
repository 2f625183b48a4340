package chunkstore_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/kwikfs/kwikfs/chunkstore"
	"github.com/kwikfs/kwikfs/chunkstore/chunkstoretest"
)

// TestConformance runs the conformance suite, whose reference the Store
// is, on a Store in a new directory for each of its tests.
func TestConformance(t *testing.T) {
	chunkstoretest.Run(t, func(t *testing.T) chunkstoretest.Store {
		s, err := chunkstore.Open(t.TempDir(), &chunkstore.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}
