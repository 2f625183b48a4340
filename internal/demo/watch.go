package demo

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/internal/backoff"
	"github.com/kwikfs/kwikfs/internal/daemon"
)

// copyJob is one copy of the faults story: a file read from the mount,
// written to a destination and hashed, paced to take at least copyTime.
type copyJob struct {
	label string
	size  int64
	read  atomic.Int64  // bytes read so far
	half  chan struct{} // closed once half the file is read
	done  chan struct{} // closed when run has returned

	// Valid after done.
	sum     []byte // SHA-256 of what was read
	err     error
	elapsed time.Duration
}

// run copies src to dst, hashing what it reads, and returns the SHA-256.
// It stops with ctx's error between two reads once ctx is done.
func (c *copyJob) run(ctx context.Context, src, dst string) ([]byte, error) {
	start := time.Now()
	defer func() { c.elapsed = time.Since(start) }()
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	bytesPerSec := float64(c.size) / copyTime.Seconds()
	halfDone := false
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, rerr := in.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, err := out.Write(buf[:n]); err != nil {
				return nil, err // an *os.PathError: it names dst
			}
		}
		total := c.read.Add(int64(n))
		if !halfDone && 2*total >= c.size {
			close(c.half)
			halfDone = true
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, rerr // an *os.PathError: it names src
		}
		due := start.Add(time.Duration(float64(total) / bytesPerSec * float64(time.Second)))
		if err := backoff.Sleep(ctx, time.Until(due)); err != nil {
			return nil, err
		}
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", dst, err)
	}
	return h.Sum(nil), nil
}

// percent returns how much of the file c has read, in percent.
func (c *copyJob) percent() int64 {
	return 100 * c.read.Load() / max(c.size, 1)
}

// liveCopy holds the copy the watcher's lines show.
type liveCopy struct {
	mu sync.Mutex // guards c
	c  *copyJob   // nil between copies
}

func (l *liveCopy) set(c *copyJob) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c = c
}

func (l *liveCopy) get() *copyJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

// watch prints, once a second until ctx is done, a line with the live
// copy's progress and, per server, the state of its latest path, the rate
// its paths delivered at over the last second and its share of all the
// bytes delivered to the mount. A line is printed only when it differs from
// the last; none while the daemon does not answer.
func (s *story) watch(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var (
		last     map[string]uint64 // bytes delivered per server at the last line
		lastLine string
		lastAt   time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := s.status(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
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
		var parts []string
		for _, sv := range s.servers {
			d := delivered[sv.addr]
			prev, ok := last[sv.addr]
			if !ok || d < prev { // a new mount counts from 0
				prev = 0
			}
			var rate float64
			if !lastAt.IsZero() {
				rate = float64(d-prev) / now.Sub(lastAt).Seconds()
			}
			share := 0.0
			if total > 0 {
				share = 100 * float64(d) / float64(total)
			}
			stateOf := state[sv.addr]
			if stateOf == "" {
				stateOf = "-"
			}
			parts = append(parts, fmt.Sprintf("%s %-6s %5.1f MiB/s %3.0f%%", sv.label, stateOf, rate/(1<<20), share))
		}
		progress := "idle        "
		if c := s.live.get(); c != nil {
			progress = fmt.Sprintf("%-6s %3d%%", c.label, c.percent())
		}
		line := progress + " | " + strings.Join(parts, " | ")
		last, lastAt = delivered, now
		if line == lastLine {
			continue
		}
		lastLine = line
		fmt.Fprintf(s.out, "  %s  %s\n", now.Format("15:04:05"), line)
	}
}

// status asks the mount's daemon for its status, for at most 3 s.
func (s *story) status(ctx context.Context) (*daemon.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return daemon.QueryStatus(ctx, s.mnt)
}
