package demo

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/control"
)

var liveServers = []serverInfo{{"primary", "p:1"}, {"secondary 1", "s1:1"}, {"secondary 2", "s2:1"}}

// liveStatus is a status whose paths delivered p, s1 and s2 MiB (the
// secondary 1 by two paths, the older failed) and whose mount fetched
// fetched MiB.
func liveStatus(p, s1, s2, fetched uint64) *control.Status {
	return &control.Status{
		FS: control.FS{BytesFetched: int64(fetched << 20)},
		Paths: []control.Path{
			{ID: 0, Remote: "p:1", State: "up", BytesDelivered: p << 20},
			{ID: 1, Remote: "s1:1", State: "failed", BytesDelivered: s1 << 19},
			{ID: 2, Remote: "s2:1", State: "up", Stalled: false, BytesDelivered: s2 << 20},
			{ID: 3, Remote: "s1:1", State: "up", BytesDelivered: s1 << 19},
		},
	}
}

// TestDisplayPerChange: the faults story's line shows, per server, its
// latest path's state, the rate since the last status and the share; a
// line is printed only when it differs from the last.
func TestDisplayPerChange(t *testing.T) {
	var out bytes.Buffer
	d := &display{servers: liveServers, out: &out, head: func(*control.Status) string { return "copy 1  50%" }}
	at := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	d.show(liveStatus(10, 20, 10, 40), at)
	d.show(liveStatus(30, 30, 20, 80), at.Add(2*time.Second))
	d.show(liveStatus(30, 30, 20, 80), at.Add(3*time.Second)) // rates drop to 0
	d.show(liveStatus(30, 30, 20, 80), at.Add(4*time.Second)) // the same again: nothing
	st := liveStatus(30, 30, 20, 80)
	st.Paths[2].State, st.Paths[2].Stalled = "failed", true
	st.Paths = append(st.Paths[:1], st.Paths[2]) // secondary 1's paths gone
	d.show(st, at.Add(5*time.Second))
	want := "" +
		"  15:04:05  copy 1  50% | primary up       0.0 MiB/s  25% | secondary 1 up       0.0 MiB/s  50% | secondary 2 up       0.0 MiB/s  25%\n" +
		"  15:04:07  copy 1  50% | primary up      10.0 MiB/s  38% | secondary 1 up       5.0 MiB/s  38% | secondary 2 up       5.0 MiB/s  25%\n" +
		"  15:04:08  copy 1  50% | primary up       0.0 MiB/s  38% | secondary 1 up       0.0 MiB/s  38% | secondary 2 up       0.0 MiB/s  25%\n" +
		"  15:04:10  copy 1  50% | primary up       0.0 MiB/s  60% | secondary 1 -        0.0 MiB/s   0% | secondary 2 stalled   0.0 MiB/s  40%\n"
	if out.String() != want {
		t.Errorf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
	d.end()
	if strings.HasSuffix(out.String(), "\n\n") {
		t.Error("end printed a newline after lines of their own")
	}
}

// TestDisplayWhileFetching: the plain demo's line says nothing while the
// mount fetches no file data, and on a terminal redraws in place, ending
// with a newline.
func TestDisplayWhileFetching(t *testing.T) {
	var out bytes.Buffer
	d := &display{servers: liveServers[:2], out: &out, inPlace: true, whileFetching: true, head: fetchedHead}
	at := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	d.show(liveStatus(0, 0, 0, 0), at) // nothing fetched yet
	if out.Len() != 0 {
		t.Fatalf("printed %q before any data flowed", out.String())
	}
	d.show(liveStatus(4, 4, 0, 8), at.Add(time.Second))
	d.show(liveStatus(4, 4, 0, 8), at.Add(2*time.Second)) // no data since: nothing
	d.show(liveStatus(6, 4, 0, 10), at.Add(3*time.Second))
	d.end()
	want := "" +
		"\r\x1b[K15:04:06  fetched 8 MiB | primary up       4.0 MiB/s  50% | secondary 1 up       4.0 MiB/s  50%" +
		"\r\x1b[K15:04:08  fetched 10 MiB | primary up       2.0 MiB/s  60% | secondary 1 up       0.0 MiB/s  40%" +
		"\n"
	if out.String() != want {
		t.Errorf("output %q\nwant   %q", out.String(), want)
	}
}
