package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/kwikfs/kwikfs/internal/ctxwatch"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// stream is what request handling needs of a *kwik.Stream.
type stream interface {
	io.Reader
	io.Writer
	Close() error
	CancelRead(kwik.ErrorCode)
	CancelWrite(kwik.ErrorCode)
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

var _ stream = (*kwik.Stream)(nil)

// counters are the exact statistics of a Primary.
type counters struct {
	sessions       atomic.Int64
	activeSessions atomic.Int64
	requests       [transfer.NumOps]atomic.Int64
	errors         atomic.Int64
	errorsBy       [transfer.NumOps][transfer.NumStatus]atomic.Int64 // by Op and status
	filesBytes     atomic.Int64
	soleReadBytes  atomic.Int64
	outsideRoot    atomic.Int64
	aborted        atomic.Int64
	dataBytes      atomic.Int64
	corruptReports atomic.Int64
	backgroundHeld atomic.Int64
	budgetWaits    atomic.Int64
	replyTimeouts  atomic.Int64
}

// handler serves request streams from a Catalog.
type handler struct {
	cat          *Catalog
	log          *slog.Logger
	stats        *counters
	readTimeout  time.Duration
	writeTimeout time.Duration
	replyTimeout time.Duration // of a reply written whole (write)
	budget       *budget       // of LIST, MANIFEST and FILES replies
}

// serve handles one request stream: it reads the request (the client ends
// its write side), writes the reply and closes the stream. It never
// returns an error: failures become error replies or stream resets, and
// are counted. When ctx ends, the stream is reset.
//
// sc, when not nil, is the session's coordinator: READ replies are then
// divided between the paths, and REPORT_CORRUPT strikes secondaries. rep
// answers PATH_REPORT and counts the READ replies the primary sends alone.
// prio orders the session's foreground and background READs.
func (h *handler) serve(ctx context.Context, st stream, peer net.Addr, sc *sessionCoord, rep *sessionReport, prio *priority) {
	release := ctxwatch.OnDone(ctx, func() {
		st.CancelRead(transfer.StreamCode(transfer.ErrUnavailable))
		st.CancelWrite(transfer.StreamCode(transfer.ErrUnavailable))
	})
	defer release()

	st.SetReadDeadline(time.Now().Add(h.readTimeout))
	msg, err := readRequest(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		// The client reset the stream, the session closed or the request
		// did not arrive in time: nobody to answer.
		h.stats.requests[0].Add(1)
		h.stats.aborted.Add(1)
		h.log.Debug("request not received", "peer", peer, "err", err)
		st.CancelRead(transfer.StreamCode(transfer.ErrBadRequest))
		st.CancelWrite(transfer.StreamCode(transfer.ErrBadRequest))
		return
	}
	if transfer.IsCorruptReport(msg) {
		h.stats.requests[transfer.OpReportCorrupt].Add(1)
		h.serveCorruptReport(st, peer, msg, sc)
		return
	}
	if transfer.IsPathReportRequest(msg) {
		h.stats.requests[transfer.OpPathReport].Add(1)
		h.servePathReport(st, peer, msg, rep)
		return
	}
	req, err := transfer.DecodeRequest(msg)
	h.stats.requests[req.Op%transfer.NumOps].Add(1) // Op is 0 or valid
	if len(msg) > 0 && len(msg) > transfer.RequestLimit(msg[0]) {
		st.CancelRead(transfer.StreamCode(transfer.ErrTooLarge))
	}
	if err != nil {
		h.replyError(st, peer, req.Op, err)
		return
	}
	switch req.Op {
	case transfer.OpRead:
		h.serveRead(ctx, st, peer, &req, sc, rep, prio)
		return
	case transfer.OpList, transfer.OpManifest, transfer.OpFiles:
		h.serveBudgeted(ctx, st, peer, &req)
		return
	}
	reply, err := h.answer(ctx, &req)
	if err != nil {
		h.replyError(st, peer, req.Op, err)
		return
	}
	b, err := transfer.EncodeReply(req.Op, reply)
	if err != nil {
		h.replyError(st, peer, req.Op, fmt.Errorf("%v %q: %w", req.Op, req.Path, err))
		return
	}
	h.write(st, peer, b)
}

// readRequest reads a request message: its first byte, then the rest up
// to one byte past transfer.RequestLimit of that byte (so that a longer
// one is seen to be too long). An empty request reads as nil.
func readRequest(r io.Reader) ([]byte, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		if err == io.EOF {
			return nil, nil
		}
		return nil, err
	}
	rest, err := io.ReadAll(io.LimitReader(r, int64(transfer.RequestLimit(first[0]))))
	return append(first[:], rest...), err
}

// serveBudgeted answers LIST, MANIFEST and FILES, whose replies may take
// tens of MiB, within the reply budget (PrimaryOptions.ReplyBudget): a
// listing is charged its listSize.cost before it is built, a MANIFEST
// reply its encodeCost while it is encoded (unless the catalog has it
// cached), a FILES reply the MaxBytes it asks for (what its manifests and
// content may take beyond the first file's manifest) before it is built,
// and then every reply its length until it is sent, the request waiting
// for its share as long as ctx allows (then the reply is ErrUnavailable).
// A MANIFEST reply from the cache is charged too, although its bytes are
// shared, so that the budget bounds what replies hold whether or not the
// cache keeps them.
func (h *handler) serveBudgeted(ctx context.Context, st stream, peer net.Addr, req *transfer.Request) {
	hd := h.budget.newHold()
	defer hd.release()
	var b []byte
	var err error
	var filesBytes int64 // file content in a FILES reply
	switch req.Op {
	case transfer.OpList:
		var entries []transfer.Attr
		if entries, err = h.cat.list(ctx, req.Path, hd); err == nil {
			if b, err = transfer.EncodeReply(req.Op, &transfer.Reply{Entries: entries}); err != nil {
				err = fmt.Errorf("%v %q: %w", req.Op, req.Path, err)
			}
		}
	case transfer.OpManifest:
		b, err = h.cat.manifestReply(ctx, req.Path, hd)
	case transfer.OpFiles:
		if err = hd.resize(ctx, int64(req.MaxBytes)); err != nil {
			break
		}
		var files []transfer.FileData
		if files, err = h.cat.Files(ctx, req.Path, req.Names, req.Known, req.MaxBytes); err != nil {
			break
		}
		if b, err = transfer.EncodeReply(req.Op, &transfer.Reply{Files: files}); err != nil {
			err = fmt.Errorf("%v %q: %w", req.Op, req.Path, err)
			break
		}
		for _, f := range files {
			filesBytes += int64(len(f.First))
		}
	}
	if err == nil {
		err = hd.resize(ctx, int64(len(b)))
	}
	if err != nil {
		hd.release()
		h.replyError(st, peer, req.Op, err)
		return
	}
	if h.write(st, peer, b) {
		h.stats.filesBytes.Add(filesBytes)
	}
}

// answer runs a request other than READ, LIST, MANIFEST and FILES against
// the catalog.
func (h *handler) answer(ctx context.Context, req *transfer.Request) (*transfer.Reply, error) {
	var r transfer.Reply
	var err error
	switch req.Op {
	case transfer.OpStat:
		r.Attr, err = h.cat.Stat(req.Path)
	case transfer.OpReadlink:
		r.Target, err = h.cat.Readlink(req.Path)
	default:
		err = fmt.Errorf("request type %v: %w", req.Op, transfer.ErrBadRequest)
	}
	return &r, err
}

// serveRead answers READ: status OK, then the chunks, as the offset
// contract of package transfer requires. A failure after the status byte
// resets the stream with the failure's code.
//
// With a coordinator and a secondary path up that has not struck out for
// the file, the chunks are divided between the paths
// (sessionCoord.serveRead); otherwise the primary writes them all, in
// order.
//
// A foreground READ holds the session's background READs back while it is
// served (see priority); a background one sends while none is.
func (h *handler) serveRead(ctx context.Context, st stream, peer net.Addr, req *transfer.Request, sc *sessionCoord, rep *sessionReport, prio *priority) {
	if !req.Background {
		end := prio.beginForeground()
		defer end()
	}
	f, err := h.cat.Open(ctx, req.Path, req.Version)
	if err != nil {
		h.replyError(st, peer, req.Op, err)
		return
	}
	defer f.Close()
	if err := f.CheckRange(req.First, req.Count); err != nil {
		h.replyError(st, peer, req.Op, err)
		return
	}
	var w io.Writer = &deadlineWriter{st: st, timeout: h.writeTimeout}
	if _, err := w.Write([]byte{byte(transfer.StatusOK)}); err != nil {
		h.abort(st, peer, err)
		return
	}
	if kst, ok := st.(*kwik.Stream); ok && sc != nil && sc.anySecondaryFor(req.Path) {
		n, err := sc.serveRead(ctx, kst, f, req, h.writeTimeout)
		h.stats.dataBytes.Add(n)
		if err != nil {
			h.abort(st, peer, err)
		}
		return
	}
	if req.Background {
		w = &gatedWriter{ctx: ctx, prio: prio, w: w}
	}
	n, err := f.WriteChunks(ctx, w, req.First, req.Count)
	h.stats.dataBytes.Add(n)
	if err != nil {
		h.abort(st, peer, err)
		return
	}
	if err := st.Close(); err != nil {
		h.abort(st, peer, err)
		return
	}
	h.stats.soleReadBytes.Add(n)
	if rep != nil {
		// Sent whole on path 0: every chunk is the primary's.
		rep.tally.add(0, uint64(n), uint64(req.Count))
	}
}

// serveCorruptReport handles REPORT_CORRUPT: the secondaries that were
// given the chunk get a strike. It answers with the status byte alone, or
// with an error reply to a malformed report.
func (h *handler) serveCorruptReport(st stream, peer net.Addr, msg []byte, sc *sessionCoord) {
	r, err := transfer.DecodeCorruptReport(msg)
	if err != nil {
		h.replyError(st, peer, transfer.OpReportCorrupt, err)
		return
	}
	h.stats.corruptReports.Add(1)
	struck := 0
	if sc != nil {
		sc.stats.mu.Lock()
		sc.stats.corrupt++
		sc.stats.mu.Unlock()
		struck = sc.reportCorrupt(r)
	}
	h.log.Debug("client reports a corrupt chunk", "peer", peer, "path", r.Path, "chunk", r.Chunk, "struck", struck)
	h.write(st, peer, []byte{byte(transfer.StatusOK)})
}

// replyError answers with an error reply; an attempt to leave the root is
// logged with the peer's address.
func (h *handler) replyError(st stream, peer net.Addr, op transfer.Op, err error) {
	h.stats.errors.Add(1)
	h.stats.errorsBy[op%transfer.NumOps][transfer.StatusOf(err)%transfer.NumStatus].Add(1)
	if errors.Is(err, transfer.ErrOutsideRoot) {
		h.stats.outsideRoot.Add(1)
		h.log.Warn("request outside the root refused", "peer", peer, "op", op, "err", err)
	} else if errors.Is(err, transfer.ErrInternal) {
		h.log.Error("request failed", "peer", peer, "op", op, "err", err)
	} else {
		h.log.Debug("request refused", "peer", peer, "op", op, "err", err)
	}
	h.write(st, peer, transfer.EncodeError(err))
}

// write sends a whole reply and closes the stream; it reports whether
// it did. Besides the progress timeout (writeTimeout), the whole reply
// must be sent within replyTimeout of its first byte: a client reading a
// little now and then would otherwise hold the reply, and its share of
// the reply budget, for as long as it likes. A reply past that is reset
// with ErrUnavailable and counted (PrimaryStats.ReplyTimeouts).
func (h *handler) write(st stream, peer net.Addr, b []byte) bool {
	w := &deadlineWriter{st: st, timeout: h.writeTimeout}
	if h.replyTimeout > 0 {
		w.end = time.Now().Add(h.replyTimeout)
	}
	if _, err := w.Write(b); err != nil {
		if w.pastEnd(err) {
			h.stats.replyTimeouts.Add(1)
			err = fmt.Errorf("reply of %d bytes not sent within %v: %w", len(b), h.replyTimeout, transfer.ErrUnavailable)
		}
		h.abort(st, peer, err)
		return false
	}
	if err := st.Close(); err != nil {
		h.abort(st, peer, err)
		return false
	}
	return true
}

// abort resets a stream whose reply could not be completed.
func (h *handler) abort(st stream, peer net.Addr, err error) {
	h.stats.aborted.Add(1)
	h.log.Debug("reply aborted", "peer", peer, "err", err)
	st.CancelWrite(transfer.StreamCode(err))
	st.CancelRead(transfer.StreamCode(err))
}

// writeSlice is the most a deadlineWriter hands to the stream under one
// deadline.
const writeSlice = 256 << 10

// deadlineWriter writes to a stream, failing when a slice of writeSlice
// bytes makes no progress (the client stopped reading) within timeout, or
// when end (if not zero) passes.
type deadlineWriter struct {
	st      stream
	timeout time.Duration
	end     time.Time
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), writeSlice)
		dl := time.Now().Add(w.timeout)
		if !w.end.IsZero() && w.end.Before(dl) {
			dl = w.end
		}
		w.st.SetWriteDeadline(dl)
		m, err := w.st.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// pastEnd reports whether err, from Write, is the deadline end passing.
func (w *deadlineWriter) pastEnd(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && !w.end.IsZero() && !time.Now().Before(w.end)
}
