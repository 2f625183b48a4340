package server

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// priority orders the READ replies of one session: while a foreground
// READ (a process waiting in read(2) on the client) is being served,
// background READs (prefetch, transfer.Request.Background) send nothing
// new. A background reply already under way stops between chunks, or,
// divided between paths, between units; what it has sent or assigned goes
// on. It resumes as soon as no foreground READ is left.
//
// newPriority returns the priority of a session; held, if not nil, counts
// the background READs it holds back (each once).
func newPriority(held *atomic.Int64) *priority {
	if held == nil {
		held = new(atomic.Int64)
	}
	return &priority{held: held}
}

type priority struct {
	held *atomic.Int64 // background READs held back at least once

	mu sync.Mutex
	// guarded by mu:
	foreground int           // foreground READs being served
	idle       chan struct{} // closed when foreground drops to zero; nil unless someone waits
}

// beginForeground records a foreground READ being served; the returned
// function records its end and must be called exactly once.
func (p *priority) beginForeground() (end func()) {
	p.mu.Lock()
	p.foreground++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.foreground--
			if p.foreground == 0 && p.idle != nil {
				close(p.idle)
				p.idle = nil
			}
		})
	}
}

// busy reports whether a foreground READ is being served.
func (p *priority) busy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.foreground > 0
}

// waitIdle returns once no foreground READ is being served (at once if
// none is), or with ctx's error when ctx ends first. *counted records
// whether the READ it waits for has been counted as held back.
func (p *priority) waitIdle(ctx context.Context, counted *bool) error {
	for {
		p.mu.Lock()
		if p.foreground == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		idle := p.idle
		p.mu.Unlock()
		if !*counted {
			*counted = true
			p.held.Add(1)
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// gatedWriter is a background READ's reply writer: each Write waits until
// no foreground READ of the session is being served.
type gatedWriter struct {
	ctx     context.Context
	prio    *priority
	w       io.Writer
	counted bool // held back once already
}

func (g *gatedWriter) Write(b []byte) (int, error) {
	if err := g.prio.waitIdle(g.ctx, &g.counted); err != nil {
		return 0, err
	}
	return g.w.Write(b)
}
