package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// ReplyTimeout bounds how long a reply other than READ (which is held
	// in memory whole) may take to send, from its first byte to its last,
	// however steadily the client reads: past it, the stream is reset with
	// ErrUnavailable and PrimaryStats.ReplyTimeouts counts it. The largest
	// reply (a LIST of transfer.MaxListLen bytes, before compression) then
	// needs a client reading 0.55 MiB/s. READ replies, which stream from the
	// file and may wait on purpose (a background READ while a foreground
	// one is served), are bound by WriteTimeout alone. Default 2 min
	// (DefaultReplyTimeout).
	ReplyTimeout time.Duration
	// ReplyBudget bounds the bytes that LIST, MANIFEST and FILES replies
	// hold, over all sessions, while they are built and sent. A listing is
	// charged an upper estimate of its memory, measured before it is built
	// (about 250 bytes per entry with a short name); a MANIFEST reply three
	// times its encoded manifest while it is encoded (once per file state,
	// as it is cached); a FILES reply the MaxBytes it asks for before it
	// is built; then every reply its length until it is sent (a
	// cached MANIFEST reply too, although its bytes are shared). A request
	// waits for its share, in the order of arrival, until it has it or its
	// session ends, and PrimaryStats.BudgetWaits counts the waits. A
	// request needing more than the whole budget waits for all of it and
	// is served alone. Default 64 MiB (DefaultReplyBudget).
	ReplyBudget int64
	// Secondaries are the addresses (host:port, as each secondary
	// advertises itself) of the secondaries that serve a mirror of the
	// root. Each session keeps a path open to every one of them (the
	// listener needs a kwik SigningKey whose public half they hold) and READ replies
	// are divided between the primary and the secondary paths that are up
	// (see Coordinator). With none, every reply comes from the primary.
	Secondaries []string
	// SecondaryNames gives, by address, the name a secondary's certificate
	// must carry, when it is not the host of its address (each secondary
	// with a certificate of its own; see kwik.Session.AddPathAs).
	SecondaryNames map[string]string
	// Coordinator tunes the division of READ replies.
	Coordinator CoordinatorOptions
}

// PrimaryStats are exact counters of a Primary since it was created.
type PrimaryStats struct {
	// Sessions counts sessions accepted; ActiveSessions those being served.
	Sessions, ActiveSessions int64
	// Requests counts requests by transfer.Op, REPORT_CORRUPT and
	// PATH_REPORT by their first byte (transfer.OpReportCorrupt,
	// OpPathReport); index 0 counts requests whose type could not be
	// decoded or that never arrived whole.
	Requests [transfer.NumOps]int64
	// Errors counts error replies; ErrorsBy counts them by the Op of the
	// request (0 when it could not be decoded) and reply status.
	Errors   int64
	ErrorsBy [transfer.NumOps][transfer.NumStatus]int64
	// OutsideRoot counts requests refused with ErrOutsideRoot (also counted
	// in Errors).
	OutsideRoot int64
	// Aborted counts streams reset because the request or the reply could
	// not be completed.
	Aborted int64
	// DataBytes counts file data bytes the primary wrote itself in READ
	// replies (not those delegated to secondaries), hedged copies
	// included.
	DataBytes int64
	// SoleReadBytes counts the file data bytes of the READ replies the
	// primary sent alone (no secondary path taking work for the file),
	// once each was written whole: what PATH_REPORT credits to path 0 for
	// them. With the DeliveredBytes of every path in CoordinatorStats it
	// sums to the body bytes of every READ reply a client received whole.
	SoleReadBytes int64
	// FilesBytes counts the file data bytes (first chunks) of the FILES
	// replies written whole.
	FilesBytes int64
	// CorruptReports counts REPORT_CORRUPT requests (well formed) received.
	CorruptReports int64
	// BackgroundHeld counts background READs that were held back, at
	// least once, while a foreground READ of their session was served.
	BackgroundHeld int64
	// BudgetWaits counts LIST, MANIFEST and FILES requests that waited for their
	// share of the reply budget (PrimaryOptions.ReplyBudget), once per
	// wait; ReplyBudgetInUse is the bytes of the budget held now, of
	// ReplyBudget in all.
	BudgetWaits, ReplyBudgetInUse, ReplyBudget int64
	// ReplyTimeouts counts replies reset because they were not sent
	// whole within PrimaryOptions.ReplyTimeout (also counted in Aborted).
	ReplyTimeouts int64
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
	names       map[string]string // PrimaryOptions.SecondaryNames
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
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = DefaultReplyTimeout
	}
	if o.ReplyBudget <= 0 {
		o.ReplyBudget = DefaultReplyBudget
	}
	cat, err := NewCatalog(root, &o.Catalog)
	if err != nil {
		return nil, err
	}
	o.Coordinator.fill()
	p := &Primary{cat: cat, log: o.Logger, limit: o.MaxConcurrentRequests, secondaries: slices.Clone(o.Secondaries), names: maps.Clone(o.SecondaryNames), copts: o.Coordinator}
	p.h = &handler{
		cat: cat, log: o.Logger, stats: &p.stats,
		readTimeout: o.RequestTimeout, writeTimeout: o.WriteTimeout, replyTimeout: o.ReplyTimeout,
		budget: newBudget(o.ReplyBudget, &p.stats.budgetWaits),
	}
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
		SoleReadBytes:  p.stats.soleReadBytes.Load(),
		FilesBytes:     p.stats.filesBytes.Load(),
		CorruptReports: p.stats.corruptReports.Load(),
		BackgroundHeld: p.stats.backgroundHeld.Load(),
		BudgetWaits:    p.stats.budgetWaits.Load(),
		ReplyTimeouts:  p.stats.replyTimeouts.Load(),
	}
	s.ReplyBudgetInUse, s.ReplyBudget = p.h.budget.inUse(), p.h.budget.size
	for i := range s.Requests {
		s.Requests[i] = p.stats.requests[i].Load()
		for j := range s.ErrorsBy[i] {
			s.ErrorsBy[i][j] = p.stats.errorsBy[i][j].Load()
		}
	}
	return s
}

// Secondaries returns the addresses of the primary's secondaries
// (PrimaryOptions.Secondaries), in their order.
func (p *Primary) Secondaries() []string { return slices.Clone(p.secondaries) }

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
		sc = newSessionCoord(ctx, sess, p.secondaries, p.names, &p.copts, p.log, &p.cstats, prio)
		defer sc.Close()
	}
	rep := newSessionReport(sess, sc)
	// Requests end with the session too: one waiting for the reply budget
	// has no one to answer any more.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sess.Context(), cancel)
	defer stop()
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
			p.h.serve(rctx, st, peer, sc, rep, prio)
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
