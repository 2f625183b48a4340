package main

import (
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/download"
)

func TestGetProgressLine(t *testing.T) {
	for _, c := range []struct {
		name  string
		st    download.Stats
		rate  float64
		files float64
		want  string
	}{
		{"scanning", download.Stats{Scanning: true, FilesTotal: 12, BytesTotal: 3 << 20}, 0, 0,
			"scanning: 12 files, 3.0 MiB so far"},
		{"running", download.Stats{FilesTotal: 300, FilesCopied: 100, FilesSkipped: 20, BytesTotal: 200 << 20, BytesDone: 50 << 20,
			Primary: "10.0.0.1:4433", Delivered: map[string]uint64{"10.0.0.1:4433": 61, "10.0.0.2:4434": 39}}, 10 << 20, 20,
			"[======>                 ]  25%  120/300 files  50.0 MiB/200.0 MiB  10.0 MiB/s  ETA 15s  primary 61% 10.0.0.2:4434 39%"},
		{"small files left", download.Stats{FilesTotal: 1000, FilesCopied: 400, BytesTotal: 100 << 20, BytesDone: 99 << 20}, 50 << 20, 100,
			"[=======================>]  99%  400/1000 files  99.0 MiB/100.0 MiB  50.0 MiB/s  ETA 6s"},
		{"failed, no data yet", download.Stats{FilesTotal: 4, FilesCopied: 1, FilesFailed: 1}, 0, 0,
			"[============>           ]  50%  1/4 files  0 B/0 B  0 B/s  1 failed"},
	} {
		if got := getProgressLine(c.st, c.rate, c.files); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestGetSummary(t *testing.T) {
	st := download.Stats{FilesTotal: 9, FilesCopied: 7, FilesSkipped: 2, Symlinks: 1, Dirs: 4,
		BytesFetched: 2 << 20, BytesFromParts: 5, BytesFromCache: 6, Elapsed: 2 * time.Second,
		Primary: "p:1", BySource: map[string]uint64{"p:1": 1, "s:2": 3}}
	want := "9 files: 7 copied, 2 skipped (complete already), 0 failed; 1 symlinks, 4 directories; " +
		"2097152 bytes fetched (2.0 MiB) in 2s (1.0 MiB/s); reused 5 bytes from .kwikpart files, 6 from the cache; " +
		"file data delivered by primary 25% s:2 75%"
	if got := getSummary(st); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestRateMeter(t *testing.T) {
	var r rateMeter
	t0 := time.Unix(1000, 0)
	for i := range 20 {
		// 1 MiB/s for 10 s, then 4 MiB/s.
		n := int64(i) << 20
		if i > 10 {
			n = 10<<20 + int64(i-10)*4<<20
		}
		r.add(t0.Add(time.Duration(i)*time.Second), n)
	}
	if got := r.rate(); got != 4<<20 {
		t.Errorf("rate over the last %v = %v, want %v", rateWindow, got, 4<<20)
	}
}
