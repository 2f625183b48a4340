package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kwikfs/kwikfs/internal/control"
)

func TestProgressLine(t *testing.T) {
	for _, c := range []struct {
		name string
		p    control.PrefetchJob
		want string
	}{
		{"scanning", control.PrefetchJob{ID: 3, State: control.JobRunning, Scanning: true, FilesTotal: 120, BytesTotal: 5 << 20},
			"job 3 scanning: 120 files, 5.0 MiB so far"},
		{"running", control.PrefetchJob{ID: 3, State: control.JobRunning, FilesDone: 60, FilesTotal: 120,
			BytesDone: 1 << 30, BytesTotal: 4 << 30, Rate: 10 << 20, ETASeconds: 307.2},
			"job 3 [======>                 ]  25%  60/120 files  1.0 GiB/4.0 GiB  10.0 MiB/s  ETA 5m7s"},
		{"done from cache", control.PrefetchJob{ID: 4, State: control.JobDone, FilesDone: 2, FilesTotal: 2,
			BytesDone: 2 << 20, BytesTotal: 2 << 20, BytesFetched: 1 << 20, Rate: 1 << 20},
			"job 4 [========================] 100%  2/2 files  2.0 MiB/2.0 MiB  1.0 MiB/s  done (1.0 MiB fetched, the rest was in the cache)"},
		{"failed", control.PrefetchJob{ID: 5, State: control.JobFailed, FilesDone: 1, FilesFailed: 1, FilesTotal: 2,
			BytesDone: 10, BytesTotal: 10, BytesFetched: 10},
			"job 5 [========================] 100%  1/2 files  10 B/10 B  0 B/s  1 failed  failed"},
		{"empty files", control.PrefetchJob{ID: 6, State: control.JobRunning, FilesDone: 1, FilesTotal: 4},
			"job 6 [======>                 ]  25%  1/4 files  0 B/0 B  0 B/s"},
	} {
		if got := progressLine(c.p); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestPrintPrefetchJobs(t *testing.T) {
	var out bytes.Buffer
	printPrefetchJobs(&out, []control.PrefetchJob{
		{ID: 1, Paths: []string{"", "a b"}, State: control.JobRunning, Resumed: 1, FilesDone: 3, FilesTotal: 9,
			BytesDone: 3 << 20, BytesTotal: 9 << 20, BytesFetched: 1 << 20, Rate: 2 << 20},
		{ID: 2, Paths: []string{"x"}, State: control.JobFailed, FilesFailed: 1, FilesTotal: 1, Error: `"x": boom`},
	})
	got := out.String()
	for _, want := range []string{
		"prefetch  paths", "\n1         /, /a b  running (resumed 1x)  3/9 ", "3.0 MiB/9.0 MiB", "1.0 MiB", "2.0 MiB/s",
		"\n2         /x       failed", "0/1 (1 failed)", `job 2: "x": boom`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
