package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// PrimaryOptions configures a Primary. The zero value (or nil) selects the
// defaults.
type PrimaryOptions struct {
	// Catalog configures chunk size and manifest cache.
	Catalog CatalogOptions
	// Logger receives request and session logs. Default slog.Default().
	Logger *slog.Logger
	// MaxConcurrentRequests bounds the requests one session has in progress;
	// further streams wait in kwik (at most the listener's
	// kwik.Config.MaxIncomingStreams per session) until one finishes.
	// Default 64 (see limits.go for what a session can hold).
	MaxConcurrentRequests int
	// RequestTimeout bounds how long a client may take to send a request
	// and end its write side. Default 10 s.
	RequestTimeout time.Duration
	// WriteTimeout bounds how long a reply may make no progress (the client
	// stopped reading) before the stream is reset. Default 30 s.
	WriteTimeout time.Duration
	// Secondaries are the addresses (host:port, as each secondary
	// advertises itself) of the secondaries that serve a mirror of the
	// root. Each session keeps a path open to every one of them (the
	// listener needs a kwik ClusterKey shared with them) and READ replies
	// are divided between the primary and the secondary paths that are up
	// (see Coordinator). With none, every reply comes from the primary.
	Secondaries []string
	// Coordinator tunes the division of READ replies.
	Coordinator CoordinatorOptions
}

// PrimaryStats are exact counters of a Primary since it was created.
type PrimaryStats struct {
	// Sessions counts sessions accepted; ActiveSessions those being served.
	Sessions, ActiveSessions int64
	// Requests counts requests by transfer.Op; index 0 counts requests whose
	// type could not be decoded or that never arrived whole.
	Requests [transfer.NumOps]int64
	// Errors counts error replies.
	Errors int64
	// OutsideRoot counts requests refused with ErrOutsideRoot (also counted
	// in Errors).
	OutsideRoot int64
	// Aborted counts streams reset because the request or the reply could
	// not be completed.
	Aborted int64
	// DataBytes counts file data bytes the primary wrote itself in READ
	// replies (not those delegated to secondaries).
	DataBytes int64
	// CorruptReports counts REPORT_CORRUPT requests (well formed) received.
	CorruptReports int64
	// BackgroundHeld counts background READs that were held back, at
	// least once, while a foreground READ of their session was served.
	BackgroundHeld int64
}

// Primary is the primary server: it serves the file protocol of package
// transfer for the tree below its root to every session of a kwik
// listener.
type Primary struct {
	cat         *Catalog
	log         *slog.Logger
	limit       int
	h           *handler
	stats       counters
	secondaries []string
	copts       CoordinatorOptions
	cstats      coordCounters
}

// NewPrimary returns a Primary exporting the directory root.
func NewPrimary(root string, opts *PrimaryOptions) (*Primary, error) {
	var o PrimaryOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxConcurrentRequests <= 0 {
		o.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	cat, err := NewCatalog(root, &o.Catalog)
	if err != nil {
		return nil, err
	}
	o.Coordinator.fill()
	p := &Primary{cat: cat, log: o.Logger, limit: o.MaxConcurrentRequests, secondaries: slices.Clone(o.Secondaries), copts: o.Coordinator}
	p.h = &handler{cat: cat, log: o.Logger, stats: &p.stats, readTimeout: o.RequestTimeout, writeTimeout: o.WriteTimeout}
	return p, nil
}

// Catalog returns the primary's catalog.
func (p *Primary) Catalog() *Catalog { return p.cat }

// Close releases the catalog. Call it after every Serve has returned.
func (p *Primary) Close() error { return p.cat.Close() }

// Stats returns the primary's counters.
func (p *Primary) Stats() PrimaryStats {
	s := PrimaryStats{
		Sessions:       p.stats.sessions.Load(),
		ActiveSessions: p.stats.activeSessions.Load(),
		Errors:         p.stats.errors.Load(),
		OutsideRoot:    p.stats.outsideRoot.Load(),
		Aborted:        p.stats.aborted.Load(),
		DataBytes:      p.stats.dataBytes.Load(),
		CorruptReports: p.stats.corruptReports.Load(),
		BackgroundHeld: p.stats.backgroundHeld.Load(),
	}
	for i := range s.Requests {
		s.Requests[i] = p.stats.requests[i].Load()
	}
	return s
}

// CoordinatorStats returns the counters of the division of READ replies
// between the primary and its secondaries.
func (p *Primary) CoordinatorStats() CoordinatorStats { return p.cstats.snapshot() }

// Serve accepts sessions from ln and serves them until ctx is done or ln
// is closed. Each session's streams are served concurrently, at most
// MaxConcurrentRequests at a time. Serve closes the sessions it accepted
// and returns once all its goroutines have stopped: nil when ctx ended,
// otherwise the error that stopped Accept. It does not close ln.
func (p *Primary) Serve(ctx context.Context, ln *kwik.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for {
		sess, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Go(func() { p.serveSession(ctx, sess) })
	}
}

// serveSession serves the streams of one session until ctx ends or the
// session closes, then closes the session and waits for its handlers.
func (p *Primary) serveSession(ctx context.Context, sess *kwik.Session) {
	p.stats.sessions.Add(1)
	p.stats.activeSessions.Add(1)
	defer p.stats.activeSessions.Add(-1)
	peer := sess.RemoteAddr()
	p.log.Debug("session accepted", "peer", peer)

	prio := newPriority(&p.stats.backgroundHeld)
	var sc *sessionCoord
	if len(p.secondaries) > 0 {
		sc = newSessionCoord(ctx, sess, p.secondaries, &p.copts, p.log, &p.cstats, prio)
		defer sc.Close()
	}
	rep := newSessionReport(sess, sc)
	var g errgroup.Group
	g.SetLimit(p.limit)
	var err error
	for {
		var st *kwik.Stream
		st, err = sess.AcceptStream(ctx)
		if err != nil {
			break
		}
		g.Go(func() error {
			p.h.serve(ctx, st, peer, sc, rep, prio)
			return nil
		})
	}
	if ctx.Err() != nil {
		sess.CloseWithError(transfer.StreamCodeBase+kwik.ErrorCode(transfer.StatusUnavailable), "server shutting down")
	} else {
		sess.CloseWithError(kwik.NoError, "")
	}
	g.Wait()
	if errors.Is(err, kwik.ErrClosed) || ctx.Err() != nil {
		p.log.Debug("session ended", "peer", peer, "err", err)
	} else {
		p.log.Warn("session ended", "peer", peer, "err", err)
	}
}
