package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/control"
)

func u(v uint64) *uint64 { return &v }

func TestPrintPaths(t *testing.T) {
	st := &control.Status{Paths: []control.Path{
		{ID: 0, Remote: "127.0.0.1:4433", State: "up", RTTMillis: 1.25, BytesDelivered: 3 << 20,
			RateBytesPerSec: u(12 << 20), ChunksDelivered: u(3), Strikes: u(0), InFlightBytes: u(256 << 10)},
		{ID: 1, Remote: "10.0.0.2:4434", State: "failed", BytesDelivered: 1 << 20, Duplicates: 2048},
	}, PathReportError: "PATH_REPORT: server unavailable"}
	var out bytes.Buffer
	printPaths(&out, st)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("printed %d lines, want header, 2 paths, note:\n%s", len(lines), out.String())
	}
	want := [][]string{
		{"path", "server", "state", "RTT", "rate", "delivered", "chunks", "strikes", "in", "flight", "duplicates"},
		{"0", "127.0.0.1:4433", "up", "1.2", "ms", "12.0", "MiB/s", "3.0", "MiB", "3", "0", "256.0", "KiB", "0", "B"},
		{"1", "10.0.0.2:4434", "failed", "0.0", "ms", "-", "1.0", "MiB", "-", "-", "-", "2.0", "KiB"},
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d = %q, want fields %q", i, lines[i], w)
		}
	}
	if !strings.Contains(lines[3], "server unavailable") {
		t.Errorf("note %q does not say why the primary's figures are missing", lines[3])
	}
}

// TestMountMemoryCacheSize: --memory-cache takes a SIZE; a bare number
// below 1M (the MiB count it used to take) is refused with a hint, before
// anything is mounted.
func TestMountMemoryCacheSize(t *testing.T) {
	base := []string{"--primary", "127.0.0.1:1", "--ca", "/nonexistent/ca.pem", "--cache", t.TempDir()}
	err := runMount(context.Background(), append(base, "--memory-cache", "64", t.TempDir()))
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "64M") {
		t.Fatalf("--memory-cache 64: %v, want a usage error suggesting 64M", err)
	}
	if err := runMount(context.Background(), append(base, "--memory-cache", "64Q", t.TempDir())); !errors.Is(err, cli.ErrUsage) {
		t.Fatalf("--memory-cache 64Q: %v, want a usage error", err)
	}
}
