package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kwikfs/kwikfs/internal/control"
)

// display is the demos' live line: once a second, from the status of the
// mount's daemon, a head (what the demo is doing) and, per server, the
// state of its latest path, the rate its paths delivered at since the last
// status and its share of all the bytes delivered to the mount:
//
//	15:04:05  copy 1  48% | primary up  21.3 MiB/s  41% | secondary 1 up  15.2 MiB/s  30% | ...
//
// Its fields are set before run and not changed after; the rest is owned
// by the goroutine running run.
type display struct {
	servers []serverInfo // primary first
	out     io.Writer
	// inPlace redraws the line in place (on a terminal) instead of
	// printing a line of its own each time.
	inPlace bool
	// whileFetching shows a line only when the mount has fetched file
	// data since the last (nothing while no data flows); otherwise a line
	// is shown whenever it differs from the last (time aside).
	whileFetching bool
	// head returns the start of the line for st.
	head func(st *control.Status) string

	last        map[string]uint64 // bytes delivered per server at the last status
	lastAt      time.Time         // when that status was taken; zero before the first
	lastFetched int64             // st.FS.BytesFetched at the last status
	lastLine    string            // the last line shown, time aside
	drawn       bool              // a line is drawn in place and not ended
}

// run shows the live line of the mount at mnt once a second until ctx is
// done; a second the daemon does not answer (within 3 s) shows nothing.
func (d *display) run(ctx context.Context, mnt string) {
	defer d.end()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := control.QueryStatus(qctx, mnt)
		cancel()
		if err == nil {
			d.show(st, time.Now())
		}
	}
}

// show takes st, the status at now, and shows the line when the policy
// (whileFetching) says so.
func (d *display) show(st *control.Status, now time.Time) {
	servers := d.serverParts(st, now)
	fetched := st.FS.BytesFetched
	flowing := fetched != d.lastFetched
	d.lastFetched = fetched
	line := d.head(st) + " | " + servers
	if d.whileFetching && !flowing || !d.whileFetching && line == d.lastLine {
		return
	}
	d.lastLine = line
	line = now.Format("15:04:05") + "  " + line
	if d.inPlace {
		fmt.Fprintf(d.out, "\r\x1b[K%s", line)
		d.drawn = true
		return
	}
	fmt.Fprintf(d.out, "  %s\n", line)
}

// end ends a line drawn in place.
func (d *display) end() {
	if d.drawn {
		fmt.Fprintln(d.out)
		d.drawn = false
	}
}

// serverParts returns the per-server part of the line for st, the status
// at now, and keeps st's figures for the rates of the next.
func (d *display) serverParts(st *control.Status, now time.Time) string {
	delivered := make(map[string]uint64)
	state := make(map[string]string)
	latest := make(map[string]int)
	var total uint64
	for _, p := range st.Paths {
		delivered[p.Remote] += p.BytesDelivered
		total += p.BytesDelivered
		if id, seen := latest[p.Remote]; !seen || p.ID >= id {
			latest[p.Remote] = p.ID
			state[p.Remote] = p.State
			if p.Stalled {
				state[p.Remote] = "stalled"
			}
		}
	}
	parts := make([]string, 0, len(d.servers))
	for _, sv := range d.servers {
		n := delivered[sv.addr]
		prev, ok := d.last[sv.addr]
		if !ok || n < prev { // a new mount counts from 0
			prev = 0
		}
		var rate float64
		if !d.lastAt.IsZero() {
			rate = float64(n-prev) / now.Sub(d.lastAt).Seconds()
		}
		share := 0.0
		if total > 0 {
			share = 100 * float64(n) / float64(total)
		}
		s := state[sv.addr]
		if s == "" {
			s = "-"
		}
		parts = append(parts, fmt.Sprintf("%s %-6s %5.1f MiB/s %3.0f%%", sv.label, s, rate/(1<<20), share))
	}
	d.last, d.lastAt = delivered, now
	return strings.Join(parts, " | ")
}
