package kwik

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// ErrPathStalled is matched (errors.Is) by the *PathError of a secondary
// path that the client closed because it stalled (code PathStalled), on the
// client and, from its PATH_STATUS, on the primary.
var ErrPathStalled = errors.New("kwik: path stalled")

// Stall detection, on a client, for each secondary path that is up.
//
// A path can stall without failing: its QUIC connection stays open (the
// secondary's QUIC stack may even answer keep-alives) while no data comes,
// because the secondary process is stopped, its disk read hangs or it is
// swamped. QUIC notices late or never (IdleTimeout); the client notices,
// since it relays every command to the path and reads every byte the path
// sends.
//
// The rule: every command relayed to a path must be followed, within
// Config.PathStallTimeout, by data on that path. Data is any granted byte
// read from any of the path's data streams: a byte inside the path's
// grants, whatever becomes of it (delivered, duplicate, rejected), or for
// a stream that finished while the path held grants on it, whichever
// command it answers: the rule judges whether the secondary is alive and
// working, not which command it works on. Bytes outside the grants, for
// streams that do not exist, and frame headers are not data: a secondary
// cannot look alive by sending what nobody asked for (readSecondaryData
// also closes a path that sends too much of it). So the path is stalled
// once the oldest command relayed after its last data is PathStallTimeout
// old; the client then ends it with a *PathError (code PathStalled,
// matching ErrPathStalled), which reaches the primary as PATH_STATUS
// failed: a scheduler moves the path's work and adds the path again.
//
//   - A path that keeps receiving data, however slowly, is never closed:
//     each read of granted bytes returns as soon as QUIC holds new bytes,
//     also inside a frame, and each answers every command relayed before
//     it.
//   - A path given nothing since its last data is never closed, however
//     long it stays quiet.
//   - Hedging and reassignment neither cause nor hide a stall. A secondary
//     whose range another path delivered first still sends it, and those
//     bytes (duplicates) count. Conversely the rule does not ask whether
//     the range arrived by another path: a primary that reassigns late
//     units within PathStallTimeout would otherwise make a dead secondary
//     look answered forever.
//   - Commands the client does not forward (path not up, stream finished)
//     are not work.
//   - A secondary that cannot serve a command (file missing, malformed
//     payload) answers it with an empty data stream when it closes the
//     command (Command.Close): the header of a stream the path holds
//     grants on, then the end, which counts as data. Commands the
//     secondary's kwik layer refuses (signature, replay, expiry) get no answer:
//     a path whose commands are all refused is closed as stalled.
type stallWatch struct {
	// lastData is monoNow() when data last arrived on the path; 0 before.
	lastData atomic.Int64

	mu sync.Mutex // guards unanswered
	// unanswered holds monoNow() of the commands relayed after lastData
	// (some older ones until the watcher drops them), ascending; at most
	// maxUnanswered.
	unanswered []int64
	wake       chan struct{} // cap 1: unanswered was empty and got an entry
}

// maxUnanswered bounds the relay times a path keeps. Beyond it the newest
// entry is overwritten by the later time, which can only delay a verdict.
const maxUnanswered = 4096

// monoBase anchors monoNow's monotonic clock.
var monoBase = time.Now()

// monoNow returns monotonic nanoseconds since the package started; never 0.
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

// noteData records that data arrived on the path now: every command relayed
// before is answered. It is called for every read, so it only stores.
func (w *stallWatch) noteData() { w.lastData.Store(monoNow()) }

// noteWork records that a command was relayed to the path now.
func (w *stallWatch) noteWork() {
	now := monoNow()
	w.mu.Lock()
	w.dropAnsweredLocked()
	first := len(w.unanswered) == 0
	if len(w.unanswered) < maxUnanswered {
		w.unanswered = append(w.unanswered, now)
	} else {
		w.unanswered[len(w.unanswered)-1] = now
	}
	w.mu.Unlock()
	if first {
		notify(w.wake)
	}
}

// dropAnsweredLocked drops the commands relayed at or before lastData.
// Called with w.mu held.
func (w *stallWatch) dropAnsweredLocked() {
	last := w.lastData.Load()
	i := sort.Search(len(w.unanswered), func(k int) bool { return w.unanswered[k] > last })
	if i > 0 {
		w.unanswered = w.unanswered[:copy(w.unanswered, w.unanswered[i:])]
	}
}

// waiting returns how long before now the oldest unanswered command was
// relayed, and false if every command has been answered.
func (w *stallWatch) waiting(now int64) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropAnsweredLocked()
	if len(w.unanswered) == 0 {
		return 0, false
	}
	return time.Duration(now - w.unanswered[0]), true
}

// watchStall ends secondary path p (client side) once it stalls (see
// stallWatch). It runs on a session goroutine from the moment the path is up
// and returns when the path ends.
func (p *path) watchStall() {
	limit := p.s.conf.PathStallTimeout
	t := time.NewTimer(limit)
	t.Stop()
	defer t.Stop()
	for {
		if waited, ok := p.stall.waiting(monoNow()); ok {
			if waited >= limit {
				p.end(&PathError{Path: p.id, Addr: p.addr, Code: PathStalled, Err: ErrPathStalled, Message: fmt.Sprintf(
					"stalled: no data for %v after a command was relayed (PathStallTimeout %v)", waited.Round(time.Millisecond), limit)})
				return
			}
			t.Reset(limit - waited)
		}
		select {
		case <-t.C:
		case <-p.stall.wake:
		case <-p.ctx.Done():
			return
		}
	}
}

// awaiting returns how long the path has owed data (PathStats.AwaitingData).
func (p *path) awaiting() time.Duration {
	d, _ := p.stall.waiting(monoNow())
	return d
}

// dataReader is a secondary's data stream (client side). While granted is
// set, that is while its reader wants bytes that count as data (see
// readSecondaryData), every read that returns bytes tells the path's stall
// watch at once, so that a frame arriving slowly keeps the path alive;
// other reads (headers, bytes outside the grants) do not. Behind a
// bufio.Reader a read happens only once the buffer is empty, so a read
// made while granted returns the wanted bytes first.
type dataReader struct {
	rs      *quic.ReceiveStream
	w       *stallWatch
	granted bool // set and read by the data stream's reader goroutine only
}

func (r *dataReader) Read(b []byte) (int, error) {
	n, err := r.rs.Read(b)
	if n > 0 && r.granted {
		r.w.noteData()
	}
	return n, err
}
