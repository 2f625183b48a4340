package demo

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/internal/backoff"
	"github.com/kwikfs/kwikfs/internal/control"
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

// liveCopy holds the copy the live line shows.
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

// head is the start of the faults story's live line: the copy's progress,
// or idle between copies.
func (l *liveCopy) head(*control.Status) string {
	if c := l.get(); c != nil {
		return fmt.Sprintf("%-6s %3d%%", c.label, c.percent())
	}
	return "idle        "
}
