package kwik

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// maxPendingSessions bounds the connections in handshake or waiting for
// Accept.
const maxPendingSessions = 64

// Listener accepts kwik sessions on a UDP address.
type Listener struct {
	conf *Config
	tr   *transport
	ql   *quic.Listener

	ctx     context.Context // canceled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the accept loop and session setups
	pending chan struct{}  // semaphore of maxPendingSessions
	queue   chan *Session  // sessions set up, handed over by Accept
	limit   *sessionLimit  // Config.MaxSessions; counts the refusals

	// overflows counts the sessions closed with ControlQueueOverflow by
	// this side (ListenerStats.ControlQueueOverflows).
	overflows atomic.Uint64

	closeOnce sync.Once
}

// ListenerStats are a Listener's counters since it started.
type ListenerStats struct {
	// Sessions is the number of sessions open now, as Sessions returns.
	Sessions int
	// Refused counts the connections refused, or lost, before they became
	// sessions, by reason.
	Refused Refusals
	// ControlQueueOverflows counts the sessions this side closed with
	// ControlQueueOverflow: their clients stopped reading their control
	// streams (see Config.MaxControlQueueBytes).
	ControlQueueOverflows uint64
}

// Listen listens for kwik sessions on the UDP address addr (host:port; port
// 0 picks one): it is the primary's side. conf.TLSConfig must hold the
// server certificate. With conf.SigningKey, its sessions may add secondary
// paths (Session.AddPath) and delegate ranges to them (Session.SendRawData).
// At most conf.MaxSessions sessions are open at once (see Config).
func Listen(addr string, conf *Config) (*Listener, error) {
	c, err := conf.resolve()
	if err != nil {
		return nil, err
	}
	tr, err := newTransport(addr, c.Logger)
	if err != nil {
		return nil, err
	}
	if c.StatelessResetSecret != nil {
		key, err := statelessResetKey(c.StatelessResetSecret)
		if err != nil {
			tr.release()
			return nil, err
		}
		tr.tr.StatelessResetKey = key
	}
	limit := newSessionLimit(c)
	limit.refused.countCertificateRefusals(tr.tr)
	ql, err := tr.tr.Listen(c.TLSConfig, c.quicConfig(false))
	if err != nil {
		tr.release()
		return nil, fmt.Errorf("kwik: listen on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		conf:    c,
		tr:      tr,
		ql:      ql,
		ctx:     ctx,
		cancel:  cancel,
		pending: make(chan struct{}, maxPendingSessions),
		queue:   make(chan *Session),
		limit:   limit,
	}
	l.wg.Go(l.acceptLoop)
	return l, nil
}

func (l *Listener) acceptLoop() {
	for {
		select {
		case l.pending <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		conn, err := l.ql.Accept(l.ctx)
		if err != nil {
			<-l.pending
			return
		}
		if !l.tr.acquire() {
			<-l.pending
			conn.CloseWithError(quic.ApplicationErrorCode(InternalError), "listener closed")
			return
		}
		l.wg.Go(func() {
			defer func() { <-l.pending }()
			src := sourceOf(conn)
			if reason := l.limit.acquire(src); reason != "" {
				l.limit.refuse(conn, reason, l.conf.Logger)
				l.tr.release()
				return
			}
			l.setup(conn, src)
		})
	}
}

// setup runs the kwik handshake on an accepted connection from src, within
// Config.SetupTimeout, and hands the session to Accept.
func (l *Listener) setup(conn *quic.Conn, src netip.Addr) {
	ctx, cancel := context.WithTimeout(l.ctx, l.conf.SetupTimeout)
	s, err := setupSession(ctx, conn, l.tr, l.conf, false)
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	l.limit.setupDone(src)
	if err != nil {
		l.limit.release(src)
		switch {
		case l.ctx.Err() != nil: // the listener is closing
		case timedOut:
			l.limit.refused.setupTimeouts.Add(1)
		default:
			l.limit.refused.setupFailures.Add(1)
		}
		l.conf.Logger.Info("kwik: session setup failed", "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	// The slot is free again as soon as the session closes, however it
	// closes (the callback only counts).
	context.AfterFunc(s.ctx, func() {
		l.limit.release(src)
		if e := s.closeErr.Load(); e != nil && !e.Remote && e.Code == ControlQueueOverflow {
			l.overflows.Add(1)
		}
	})
	select {
	case l.queue <- s:
	case <-l.ctx.Done():
		s.CloseWithError(NoError, "listener closed")
	}
}

// Accept returns the next session. It blocks until a client has completed
// the handshake, ctx is done or the listener is closed (then the error
// matches ErrClosed).
func (l *Listener) Accept(ctx context.Context) (*Session, error) {
	select {
	case s := <-l.queue:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, fmt.Errorf("kwik: listener: %w", ErrClosed)
	}
}

// Sessions returns the number of sessions that count against
// Config.MaxSessions: set up or being set up, and not yet closed.
func (l *Listener) Sessions() int { return l.limit.open() }

// Stats returns the listener's counters. It may be called at any time,
// also after Close.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{
		Sessions:              l.limit.open(),
		Refused:               l.limit.refused.snapshot(),
		ControlQueueOverflows: l.overflows.Load(),
	}
}

// Addr returns the listener's UDP address.
func (l *Listener) Addr() net.Addr { return l.tr.conn.LocalAddr() }

// Close stops accepting sessions and waits for the listener's goroutines.
// Sessions already accepted keep working; the UDP socket closes with the last
// of them.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.ql.Close()
		l.wg.Wait()
		l.tr.release()
	})
	return nil
}
