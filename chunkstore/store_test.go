package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// recordLog is the log a recordingHandler and its derivatives share.
type recordLog struct {
	mu   sync.Mutex // guards recs
	recs []slog.Record
}

// recordingHandler keeps every record at Debug and above.
type recordingHandler struct {
	log   *recordLog
	attrs []slog.Attr
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.log.mu.Lock()
	h.log.recs = append(h.log.recs, r)
	h.log.mu.Unlock()
	return nil
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{log: h.log, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

// levels counts the records of each level whose component attribute is
// component ("" for records without one).
func levels(recs []slog.Record, component string) map[slog.Level]int {
	n := map[slog.Level]int{}
	for _, r := range recs {
		c := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" {
				c = a.Value.String()
			}
			return true
		})
		if c == component {
			n[r.Level]++
		}
	}
	return n
}

func TestBadgerLogGoesToLoggerAtTheRightLevels(t *testing.T) {
	rl := &recordLog{}
	h := &recordingHandler{log: rl}
	opts := &Options{Logger: slog.New(h)}
	dir := t.TempDir()
	a, sa := testChunk(600, 1<<20)
	big, _ := testChunk(601, 64<<10) // a metadata record in Badger's value log
	for round := range 2 {           // the second Open seals the value log file holding big
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			mustPut(t, s, sa, a)
			if err := s.PutMeta("big", big); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rl.mu.Lock()
	got := levels(rl.recs, "badger")
	rl.mu.Unlock()
	if got[slog.LevelDebug] == 0 || got[slog.LevelInfo] != 0 {
		t.Fatalf("badger records by level after open/close = %v; want its chatter at Debug only", got)
	}

	flipChunkBit(t, dir, a)
	p := filepath.Join(dir, "000001.vlog")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, big[:4096])
	if i < 0 {
		t.Fatal("metadata record not found in 000001.vlog")
	}
	raw[i+len(big)/2] ^= 1
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Badger logs the failed read and yields an empty value, which fails
	// the record's own check.
	if _, err := s.GetMeta("big"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetMeta of a damaged value log entry = %v, want ErrCorrupt", err)
	}
	if _, err := s.Get(sa, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a damaged chunk = %v, want ErrCorrupt", err)
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if got := levels(rl.recs, "badger"); got[slog.LevelError] == 0 {
		t.Errorf("badger records by level = %v; want its read error at Error", got)
	}
	if got := levels(rl.recs, ""); got[slog.LevelWarn] != 2 {
		t.Errorf("chunkstore records by level = %v; want two Warns: the removed chunk and record", got)
	}
	for _, msg := range []string{"chunkstore: removed corrupt chunk", "chunkstore: removed corrupt metadata record"} {
		n := 0
		for _, r := range rl.recs {
			if r.Message == msg && r.Level == slog.LevelWarn {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d Warn records %q, want 1", n, msg)
		}
	}
}
