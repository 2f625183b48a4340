package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/internal/backoff"
	"github.com/kwikfs/kwikfs/internal/ctxwatch"
	"github.com/kwikfs/kwikfs/kwik"
)

// ErrClientClosed is returned by the operations of a closed Client.
var ErrClientClosed = errors.New("transfer: client closed")

// RedialBackoff spaces the attempts of one operation to reach its server:
// the first retry waits Initial, each further one twice as long, at most
// Max. Each wait is jittered: drawn at random from 80 to 100% of that
// (backoff.DefaultJitter), so that the clients of a server that went away
// do not all retry it at the same moments.
type RedialBackoff struct {
	// Initial is the first wait. Default 50 ms.
	Initial time.Duration
	// Max is the longest wait. Default 2 s.
	Max time.Duration
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// Config is the kwik configuration for dialing; its TLSConfig is
	// required.
	Config *kwik.Config
	// Logger receives connection logs. Default slog.Default().
	Logger *slog.Logger
	// RedialBackoff spaces dial attempts; zero fields take their defaults.
	RedialBackoff RedialBackoff
	// LivenessTimeout is how long a session may stay silent (not one packet
	// received on any of its paths) after a request was sent on it before
	// the client takes it for dead: it closes the session, so that the
	// requests waiting on it are retried on a new one, and the next request
	// dials anew. Once a session has been established, a redial also starts
	// a new attempt every liveness timeout while none succeeded (see
	// Client.dial). A live server acknowledges a request within a round
	// trip, however long it takes to answer; silence means a server that is
	// gone, stopped, or restarted (a restarted one resets the old session
	// only when a packet reaches it, which QUIC's retransmission timer,
	// backed off during the outage, may delay for seconds). A session that
	// keeps receiving, like a long READ in progress, is never closed.
	// Default 3 s (1 s closed live sessions of a machine loaded with 32
	// mounts and their servers: a starved server may not acknowledge in
	// time, and each false alarm costs a redial and retried requests); it
	// is raised to 8 smoothed round-trip times of the server's path when
	// that is longer.
	LivenessTimeout time.Duration
}

// DefaultLivenessTimeout is the default ClientOptions.LivenessTimeout.
const DefaultLivenessTimeout = 3 * time.Second

// livenessRTTs is how many smoothed round-trip times the liveness timeout
// lasts at least.
const livenessRTTs = 8

// ClientStats are exact counters of a Client since it was created.
type ClientStats struct {
	// Requests counts request streams sent.
	Requests int64
	// Chunks counts chunks received and verified; DataBytes their bytes
	// (file data only, no protocol overhead).
	Chunks, DataBytes int64
	// CorruptChunks counts chunks that failed verification.
	CorruptChunks int64
	// Dials counts sessions established; Redials those after the first.
	Dials, Redials int64
	// SilentSessions counts sessions closed because they stayed silent
	// for the liveness timeout after a request (ClientOptions.LivenessTimeout).
	SilentSessions int64
}

// Client is the client side of the file protocol: it talks to one server
// over one kwik session, dialed on the first request and dialed again (with
// backoff) on a later request after the session died. All methods are safe
// for concurrent use.
//
// Every operation honours its ctx: if the server cannot be reached, or does
// not answer, before ctx ends, the operation fails with an error wrapping
// both ErrUnavailable and ctx.Err(). Errors the server reports wrap the
// sentinel errors of this package (as *RemoteError).
type Client struct {
	addr     string
	conf     *kwik.Config
	log      *slog.Logger
	redial   RedialBackoff
	liveness time.Duration

	closeCtx context.Context // done when Close is called; bounds dials
	cancel   context.CancelFunc

	mu sync.Mutex
	// guarded by mu:
	sess    *kwik.Session // nil before the first dial and after a failed one
	dialing chan struct{} // non-nil while a dial is in progress; closed when it ends
	closed  bool
	rtt     time.Duration // smoothed RTT of the last session when dialled; 0 before
	// The liveness check of sess (see watch): armed while a check is
	// pending, on session watched; gen tells a check from one armed
	// before it. base is the session's count of received packets when the
	// oldest request the check stands for was sent, and the check is due
	// limit after that request. latest and latestAt are the count and time
	// of the newest request sent since (hasLatest), for the check after.
	armed, hasLatest bool
	gen              uint64
	watched          *kwik.Session
	base, latest     uint64
	latestAt         time.Time
	limit            time.Duration
	timer            *time.Timer

	checks sync.WaitGroup // the liveness check running or pending

	bufs sync.Pool // of *[]byte, chunk buffers

	requests, chunks, dataBytes, corrupt, dials, silent atomic.Int64
}

// NewClient returns a Client for the server at addr (host:port). It does
// not dial: the first request does.
func NewClient(addr string, opts *ClientOptions) *Client {
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RedialBackoff.Initial <= 0 {
		o.RedialBackoff.Initial = 50 * time.Millisecond
	}
	if o.RedialBackoff.Max <= 0 {
		o.RedialBackoff.Max = 2 * time.Second
	}
	if o.LivenessTimeout <= 0 {
		o.LivenessTimeout = DefaultLivenessTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{addr: addr, conf: o.Config, log: o.Logger, redial: o.RedialBackoff, liveness: o.LivenessTimeout, closeCtx: ctx, cancel: cancel}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	d := c.dials.Load()
	return ClientStats{
		Requests:       c.requests.Load(),
		Chunks:         c.chunks.Load(),
		DataBytes:      c.dataBytes.Load(),
		CorruptChunks:  c.corrupt.Load(),
		Dials:          d,
		Redials:        max(d-1, 0),
		SilentSessions: c.silent.Load(),
	}
}

// SessionStats returns the statistics of the current session, one entry per
// path, and false when the client holds no live session (not dialled yet,
// or the server is unreachable).
func (c *Client) SessionStats() (kwik.SessionStats, bool) {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil || s.Context().Err() != nil {
		return kwik.SessionStats{}, false
	}
	return s.Stats(), true
}

// Close closes the session, aborting operations in progress; later
// operations fail with ErrClientClosed. It waits for the session's
// goroutines and for a liveness check in progress.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	s := c.sess
	c.sess = nil
	if c.armed && c.timer.Stop() {
		c.armed, c.watched = false, nil
		c.checks.Done()
	}
	c.mu.Unlock()
	c.cancel()
	var err error
	if s != nil {
		err = s.Close()
	}
	c.checks.Wait()
	return err
}

// session returns the live session, dialing one if there is none. Only one
// dial runs at a time; other callers wait for it (or their ctx).
func (c *Client) session(ctx context.Context) (*kwik.Session, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		if c.sess != nil && c.sess.Context().Err() == nil {
			s := c.sess
			c.mu.Unlock()
			return s, nil
		}
		if ch := c.dialing; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		c.dialing = ch
		old := c.sess
		c.sess = nil
		var hedge time.Duration // no hedging until a first session tells the RTT
		if c.rtt > 0 {
			hedge = c.silenceLimit(c.rtt)
		}
		c.mu.Unlock()

		if old != nil {
			old.Close() // already dead; releases its resources
		}
		s, err := c.dial(ctx, hedge)

		c.mu.Lock()
		c.dialing = nil
		close(ch)
		if err == nil && c.closed {
			err = ErrClientClosed
		}
		if err == nil {
			c.sess = s
			if st := s.Stats(); len(st.Paths) > 0 && st.Paths[0].SmoothedRTT > 0 {
				c.rtt = st.Paths[0].SmoothedRTT
			}
		}
		c.mu.Unlock()
		if err != nil {
			if s != nil {
				s.Close()
			}
			return nil, err
		}
		if n := c.dials.Add(1); n > 1 {
			c.log.Info("reconnected", "server", c.addr, "dials", n)
		}
		return s, nil
	}
}

// maxHedges is how many extra dial attempts (see dial) run at once.
const maxHedges = 2

// dial dials the server, giving up when ctx ends or the client closes.
// When hedge is not 0, it starts another attempt every hedge while none
// has succeeded, keeping the first attempt and the maxHedges newest ones
// (an older extra attempt is cancelled): the first session established
// wins and the others are closed. This matters after an outage: the
// handshake's retransmissions back off while the server is away, so an
// attempt started during the outage may reach a server that is back only
// seconds later, while a new attempt reaches it at once; and a handshake
// that is merely slow (a loaded server) still completes in the first
// attempt. The error is that of the last attempt to fail, or ctx's.
func (c *Client) dial(ctx context.Context, hedge time.Duration) (*kwik.Session, error) {
	if c.conf == nil {
		return nil, errors.New("no kwik configuration")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.closeCtx, cancel)
	defer stop()
	if hedge <= 0 {
		return kwik.Dial(ctx, c.addr, c.conf)
	}

	type result struct {
		i   int
		s   *kwik.Session
		err error
	}
	results := make(chan result)
	cancels := make(map[int]context.CancelFunc) // of the attempts running
	var hedges []int                            // extra attempts running, oldest first
	next := 0
	launch := func() {
		actx, acancel := context.WithCancel(ctx)
		i := next
		next++
		cancels[i] = acancel
		go func() {
			s, err := kwik.Dial(actx, c.addr, c.conf)
			results <- result{i, s, err}
		}()
	}
	launch()
	tick := time.NewTicker(hedge)
	defer tick.Stop()
	var won *kwik.Session
	var lastErr error
	for len(cancels) > 0 { // every attempt is waited for
		select {
		case r := <-results:
			cancels[r.i]()
			delete(cancels, r.i)
			hedges = slices.DeleteFunc(hedges, func(i int) bool { return i == r.i })
			switch {
			case r.err == nil && won == nil:
				won = r.s
				cancel() // ends the other attempts
			case r.err == nil:
				r.s.Close()
			default:
				lastErr = r.err
			}
		case <-tick.C:
			if won != nil || ctx.Err() != nil {
				continue
			}
			if len(hedges) == maxHedges {
				cancels[hedges[0]]()
				hedges = hedges[1:]
			}
			hedges = append(hedges, next)
			launch()
		}
	}
	if won != nil {
		return won, nil
	}
	return nil, lastErr
}

// silenceLimit is how long a session whose path to the server has the
// smoothed round-trip time rtt may stay silent: the liveness timeout, or
// livenessRTTs round trips when that is longer.
func (c *Client) silenceLimit(rtt time.Duration) time.Duration {
	return max(c.liveness, livenessRTTs*rtt)
}

// primaryRTT returns the smoothed round-trip time of s's path to the
// server.
func primaryRTT(s *kwik.Session) time.Duration {
	if st := s.Stats(); len(st.Paths) > 0 {
		return st.Paths[0].SmoothedRTT
	}
	return 0
}

// watch is called when a request has been sent on s. A server that is
// alive sends a packet (its QUIC acknowledgement, if nothing else) within
// a round trip of every request; a session that has received none in the
// silence limit since a request was sent is dead. watch arms a check for
// the limit from now, or, if one is pending, notes the request for the
// check after it (see checkLiveness).
func (c *Client) watch(s *kwik.Session) {
	n := s.PacketsReceived()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.sess != s {
		return
	}
	if c.armed && c.watched == s {
		c.latest, c.latestAt, c.hasLatest = n, time.Now(), true
		return
	}
	if c.armed && c.timer.Stop() { // a check of a session replaced since
		c.checks.Done()
	}
	c.gen++
	c.armed, c.hasLatest, c.watched, c.base = true, false, s, n
	c.limit = c.silenceLimit(primaryRTT(s))
	c.armLocked(c.limit)
}

// armLocked runs the current liveness check in d. c.mu must be held.
func (c *Client) armLocked(d time.Duration) {
	gen := c.gen
	c.checks.Add(1)
	c.timer = time.AfterFunc(d, func() { c.checkLiveness(gen) })
}

// checkLiveness runs the liveness check gen, due the silence limit after
// the oldest request it stands for was sent. If the session has received
// no packet since that request, it is dead: it is closed (the requests
// waiting on it fail as lost and are retried on a new session) and the
// next request dials anew. If it has received one since the newest
// request as well, every request is vouched for and no check remains.
// Otherwise the newest request is the oldest one not vouched for, and the
// check runs again the limit after it was sent (the requests between them
// are answered for no later than that: a packet after them vouches for
// the newest one too).
func (c *Client) checkLiveness(gen uint64) {
	defer c.checks.Done()
	c.mu.Lock()
	if gen != c.gen || !c.armed {
		c.mu.Unlock()
		return
	}
	s := c.watched
	if c.closed || c.sess != s || s.Context().Err() != nil {
		c.armed, c.watched = false, nil
		c.mu.Unlock()
		return
	}
	if got := s.PacketsReceived(); got > c.base {
		if c.hasLatest && got == c.latest {
			c.base, c.hasLatest = c.latest, false
			c.armLocked(max(0, time.Until(c.latestAt.Add(c.limit))))
		} else {
			c.armed, c.watched, c.hasLatest = false, nil, false
		}
		c.mu.Unlock()
		return
	}
	c.sess = nil
	c.armed, c.watched, c.hasLatest = false, nil, false
	limit := c.limit
	c.mu.Unlock()
	c.silent.Add(1)
	c.log.Warn("server silent after a request; closing the session to dial anew", "server", c.addr, "silent_for", limit)
	s.CloseWithError(kwik.NoError, "no packet from the server after a request")
}

// IsUntrusted reports whether err is a failed verification of a TLS
// certificate: the server's (unknown CA, wrong host name), or the client's
// by the server (none presented, or one the server does not accept: see
// kwik.ErrClientCertificate). Such an error is final: the client does not
// retry it.
func IsUntrusted(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	return errors.As(err, &verr) || errors.As(err, &unknownCA) || errors.As(err, &badHost) ||
		errors.Is(err, kwik.ErrClientCertificate)
}

// sessionLost marks an error after which the operation may be retried on a
// new session: the session died before the operation completed.
type sessionLost struct{ err error }

func (e *sessionLost) Error() string { return e.err.Error() }
func (e *sessionLost) Unwrap() error { return e.err }

// unavailable is the error of an operation whose ctx ended before the server
// answered.
func unavailable(ctx context.Context, op string, cause error) error {
	if cause == nil || errors.Is(cause, ctx.Err()) {
		return fmt.Errorf("%s: %w (%w)", op, ErrUnavailable, ctx.Err())
	}
	return fmt.Errorf("%s: %w (%w): %w", op, ErrUnavailable, ctx.Err(), cause)
}

// do runs fn on a live session, retrying on a new session with backoff
// while the session is lost and ctx lasts.
func (c *Client) do(ctx context.Context, op string, fn func(s *kwik.Session) error) error {
	bo := backoff.Backoff{Initial: c.redial.Initial, Max: c.redial.Max, Jitter: backoff.DefaultJitter}
	var last error
	for {
		if ctx.Err() != nil {
			return unavailable(ctx, op, last)
		}
		s, err := c.session(ctx)
		if err == nil {
			err = fn(s)
			var lost *sessionLost
			if err == nil || !errors.As(err, &lost) {
				return err
			}
		}
		if errors.Is(err, ErrClientClosed) {
			return fmt.Errorf("%s: %w", op, ErrClientClosed)
		}
		if IsUntrusted(err) {
			// Retrying cannot help: the server is not who the CA vouches for.
			return fmt.Errorf("%s: %w", op, err)
		}
		if ctx.Err() != nil {
			return unavailable(ctx, op, err)
		}
		last = err
		wait := bo.Next()
		c.log.Debug("server unreachable; retrying", "server", c.addr, "op", op, "err", err, "wait", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return unavailable(ctx, op, last)
		}
	}
}

// streamErr classifies an error of stream I/O: ctx's end, a reset carrying
// a status (RemoteError), a lost session (retryable) or anything else.
func (c *Client) streamErr(ctx context.Context, s *kwik.Session, op string, err error) error {
	if ctx.Err() != nil {
		return unavailable(ctx, op, err)
	}
	if mapped := streamCodeError(err); mapped != err {
		if errors.Is(mapped, ErrUnavailable) {
			// The server is shutting down: try again, on a new session
			// once this one is closed.
			return &sessionLost{fmt.Errorf("%s: %w", op, mapped)}
		}
		return fmt.Errorf("%s: %w", op, mapped)
	}
	if errors.Is(err, kwik.ErrClosed) || s.Context().Err() != nil {
		return &sessionLost{fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// request opens a stream on s, sends req and ends the write side. The
// returned release must be called when the stream is done with; it stops
// the cancellation of the stream on ctx's end.
func (c *Client) request(ctx context.Context, s *kwik.Session, req *Request) (*kwik.Stream, func(), error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	name := fmt.Sprintf("%v %q", req.Op, req.Path)
	st, err := s.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, c.streamErr(ctx, s, name, err)
	}
	c.requests.Add(1)
	release := ctxwatch.OnDone(ctx, func() {
		st.CancelRead(CodeCanceled)
		st.CancelWrite(CodeCanceled)
	})
	if _, err := st.Write(b); err != nil {
		release()
		st.CancelRead(CodeCanceled)
		return nil, nil, c.streamErr(ctx, s, name, err)
	}
	if err := st.Close(); err != nil {
		release()
		st.CancelRead(CodeCanceled)
		return nil, nil, c.streamErr(ctx, s, name, err)
	}
	c.watch(s)
	return st, release, nil
}

// roundTrip sends a request other than READ and decodes its reply.
func (c *Client) roundTrip(ctx context.Context, req Request) (*Reply, error) {
	name := fmt.Sprintf("%v %q", req.Op, req.Path)
	if _, err := req.MarshalBinary(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var reply *Reply
	err := c.do(ctx, name, func(s *kwik.Session) error {
		st, release, err := c.request(ctx, s, &req)
		if err != nil {
			return err
		}
		defer release()
		b, err := io.ReadAll(io.LimitReader(st, int64(MaxReplyLen(req.Op))+1))
		if err != nil {
			return c.streamErr(ctx, s, name, err)
		}
		if len(b) > MaxReplyLen(req.Op) {
			st.CancelRead(CodeCanceled)
		}
		reply, err = DecodeReply(req.Op, b)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	return reply, err
}

// Stat returns the attributes of path (lstat semantics: a symlink is
// reported as a symlink with its Target). The Attr's Name is empty.
func (c *Client) Stat(ctx context.Context, path string) (Attr, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpStat, Path: path})
	if err != nil {
		return Attr{}, err
	}
	return r.Attr, nil
}

// List returns the entries of directory path, each with its full Attr.
func (c *Client) List(ctx context.Context, path string) ([]Attr, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpList, Path: path})
	if err != nil {
		return nil, err
	}
	return r.Entries, nil
}

// Readlink returns the target of symlink path.
func (c *Client) Readlink(ctx context.Context, path string) (string, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpReadlink, Path: path})
	if err != nil {
		return "", err
	}
	return r.Target, nil
}

// Manifest returns the manifest of regular file path. It has passed
// Manifest.Check, so its Version matches its hashes.
func (c *Client) Manifest(ctx context.Context, path string) (*Manifest, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpManifest, Path: path})
	if err != nil {
		return nil, err
	}
	return r.Manifest, nil
}

// backgroundKey is the context key of WithBackgroundPriority.
type backgroundKey struct{}

// WithBackgroundPriority returns a copy of ctx under which the READs of
// ReadChunks and DownloadFile are background work (prefetch): the server
// sends nothing of them while it serves a foreground READ of the same
// client. Reads under any other context are foreground.
func WithBackgroundPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// BackgroundPriority reports whether ctx came from WithBackgroundPriority.
func BackgroundPriority(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// ReadChunks fetches chunks first to first+count-1 of path at the version
// of m in one streamed request and calls deliver for each, in order, once
// it has verified the chunk against m. A chunk that fails verification is
// not delivered and ends the call with an error wrapping ErrCorrupt. Each
// chunk is read into a buffer of its own, which deliver may keep: the
// client does not touch it again. An error from deliver ends the call with
// that error. If the session is lost midway, the remaining
// chunks are requested again on a new session. A file that changed on the
// server fails with ErrStale.
//
// The Sources returned say which servers delivered the chunks handed to
// deliver (see Sources for how they are counted), with an error too: they
// then count what was delivered before it. They are nil when nothing was.
func (c *Client) ReadChunks(ctx context.Context, path string, m *Manifest, first, count int, deliver func(i int, data []byte) error) (Sources, error) {
	return c.readChunks(ctx, path, m, first, count, nil, deliver)
}

// readChunks is ReadChunks reading every chunk into buf when it is not nil
// (deliver must then not retain data), else into a new buffer each.
func (c *Client) readChunks(ctx context.Context, path string, m *Manifest, first, count int, buf []byte, deliver func(i int, data []byte) error) (Sources, error) {
	if count == 0 {
		return nil, nil
	}
	if first < 0 || count < 0 || first >= len(m.Hashes) || count > len(m.Hashes)-first {
		return nil, fmt.Errorf("read %q: chunks [%d, +%d) of %d: %w", path, first, count, len(m.Hashes), ErrBadRequest)
	}
	next := first
	end := first + count
	var src Sources
	err := c.do(ctx, fmt.Sprintf("READ %q", path), func(s *kwik.Session) error {
		run, err := c.readRun(ctx, s, path, m, &next, end, buf, deliver)
		src.Add(run)
		return err
	})
	return src, err
}

// readRun fetches chunks *next to end-1, advancing *next past each chunk
// delivered, and returns the sources of the chunks it delivered (with an
// error too). Each chunk is read into buf (and a second buffer like it) if
// buf is not nil, else into a new buffer.
//
// Reading and verifying overlap: a goroutine reads the next chunk off the
// stream while this one verifies and delivers the last, so the stream is
// read as its data arrives (kwik's reassembly buffers do not hold frames
// while a chunk is hashed), and hashing runs beside receiving.
func (c *Client) readRun(ctx context.Context, s *kwik.Session, path string, m *Manifest, next *int, end int, buf []byte, deliver func(i int, data []byte) error) (src Sources, err error) {
	name := fmt.Sprintf("READ %q [%d, %d)", path, *next, end)
	req := Request{Op: OpRead, Path: path, Version: m.Version, First: *next, Count: end - *next, Background: BackgroundPriority(ctx)}
	st, release, err := c.request(ctx, s, &req)
	if err != nil {
		return nil, err
	}
	defer release()
	var dataBytes uint64 // file data handed to deliver
	defer func() { src = readSources(s, st, dataBytes) }()
	var status [1]byte
	if _, err := io.ReadFull(st, status[:]); err != nil {
		return nil, c.streamErr(ctx, s, name, err)
	}
	if Status(status[0]) != StatusOK {
		rest, err := io.ReadAll(io.LimitReader(st, MaxErrorReplyLen))
		if err != nil {
			return nil, c.streamErr(ctx, s, name, err)
		}
		return nil, fmt.Errorf("%s: %w", name, DecodeError(append(status[:], rest...)))
	}

	// The reader hands each chunk over unbuffered: it reads chunk k+1
	// while chunk k is verified and delivered, and fills a buffer again
	// only once the chunk read into it has been delivered (two buffers
	// suffice when buf is given).
	type received struct {
		data []byte
		err  error
	}
	chunks := make(chan received)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	bufs := [2][]byte{buf}
	if buf != nil {
		bufs[1] = make([]byte, len(buf))
	}
	first := *next
	wg.Go(func() {
		for i := first; i < end; i++ {
			var data []byte
			if buf != nil {
				data = bufs[(i-first)%2][:m.ChunkLen(i)]
			} else {
				// A buffer of its own, handed over to deliver: no copy.
				data = make([]byte, m.ChunkLen(i))
			}
			_, err := io.ReadFull(st, data)
			select {
			case chunks <- received{data, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	})
	for ; *next < end; *next++ {
		i := *next
		r := <-chunks
		data := r.data
		if err := r.err; err != nil {
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return nil, fmt.Errorf("%s: reply ended at chunk %d: %w", name, i, ErrBadRequest)
			}
			return nil, c.streamErr(ctx, s, name, err)
		}
		if err := m.Verify(i, data); err != nil {
			c.corrupt.Add(1)
			st.CancelRead(CodeCanceled) // also ends the reader's Read
			c.reportCorrupt(ctx, s, path, m.Version, i)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c.chunks.Add(1)
		c.dataBytes.Add(int64(len(data)))
		dataBytes += uint64(len(data))
		if err := deliver(i, data); err != nil {
			st.CancelRead(CodeCanceled)
			return nil, err
		}
	}
	// Every chunk is read: the reader has returned. The reply must end
	// here.
	var extra [1]byte
	n, err := io.ReadFull(st, extra[:])
	switch {
	case n > 0:
		st.CancelRead(CodeCanceled)
		return nil, fmt.Errorf("%s: data after the last chunk: %w", name, ErrBadRequest)
	case err == io.EOF:
		return nil, nil
	default:
		// Every chunk arrived and verified; a failure to see the end of
		// the stream does not matter.
		st.CancelRead(CodeCanceled)
		return nil, nil
	}
}

// reportTimeout bounds how long a client waits for the answer to a
// REPORT_CORRUPT.
const reportTimeout = 2 * time.Second

// reportCorrupt tells the server, best effort, that chunk i of path at
// version failed verification (REPORT_CORRUPT), so that it can strike the
// path that delivered it. It waits at most reportTimeout (and never past
// ctx) for the server's answer; errors are only logged: a server that does
// not know the request, or is gone, changes nothing for the caller.
func (c *Client) reportCorrupt(ctx context.Context, s *kwik.Session, path string, version Hash, i int) {
	b, err := (&CorruptReport{Path: path, Version: version, Chunk: i}).MarshalBinary()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	st, err := s.OpenStreamSync(ctx)
	if err != nil {
		return
	}
	release := ctxwatch.OnDone(ctx, func() {
		st.CancelRead(CodeCanceled)
		st.CancelWrite(CodeCanceled)
	})
	defer release()
	if _, err := st.Write(b); err != nil {
		st.CancelRead(CodeCanceled)
		return
	}
	if err := st.Close(); err != nil {
		st.CancelRead(CodeCanceled)
		return
	}
	reply, err := io.ReadAll(io.LimitReader(st, MaxErrorReplyLen))
	if err != nil || len(reply) != 1 || Status(reply[0]) != StatusOK {
		c.log.Debug("corrupt chunk report not acknowledged", "path", path, "chunk", i, "err", err)
		st.CancelRead(CodeCanceled)
	}
}

// VerifiesChunks reports that ReadChunks delivers only chunks verified
// against the manifest (always true), so that a caller need not hash them
// again.
func (c *Client) VerifiesChunks() bool { return true }

// buffer returns a pooled buffer of at least n bytes.
func (c *Client) buffer(n int) *[]byte {
	if bp, ok := c.bufs.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n)
	return &b
}
