package transfer

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"

	"github.com/kwikfs/kwikfs/internal/ctxwatch"
	"github.com/kwikfs/kwikfs/kwik"
)

// OpPathReport is the first and only byte of a PATH_REPORT request: a
// client asking the primary how the paths of its session are doing. Like
// OpReportCorrupt it lies outside the request types that Op.Valid accepts:
// a server recognises it by its first byte (see IsPathReportRequest) before
// decoding an ordinary Request. A server that does not know it answers
// ErrBadRequest.
const OpPathReport Op = 8

// Bounds of a PATH_REPORT reply.
const (
	// MaxPathReports is the most path records one reply carries.
	MaxPathReports = 64
	// MaxAddrLen is the longest address in a path record, in bytes.
	MaxAddrLen = 512
)

// maxPathRecordLen is the largest encoded PathReport.
const maxPathRecordLen = 8*binary.MaxVarintLen64 + MaxAddrLen + 1

// MaxPathReportReplyLen is the largest reply (OK or error) to PATH_REPORT.
const MaxPathReportReplyLen = 1 + binary.MaxVarintLen64 + MaxPathReports*maxPathRecordLen

// PathReport is the primary's account of one path of a client's session,
// an element of the reply to PATH_REPORT. The figures the primary's
// coordinator keeps (Rate, DeliveredBytes, DeliveredChunks, Strikes,
// InFlightBytes) exist only on the primary.
type PathReport struct {
	// ID is the kwik PathID: 0 for the primary's own path.
	ID kwik.PathID
	// Addr is the secondary's address as the primary named it; "" for
	// path 0. At most MaxAddrLen bytes of valid UTF-8.
	Addr string
	// State is the path's state as the primary knows it (PathPending to
	// PathClosed).
	State kwik.PathState
	// RTT is the smoothed round-trip time the primary uses for the path;
	// 0 when unknown.
	RTT time.Duration
	// Rate is the coordinator's estimate of the path's goodput, in bytes
	// per second; 0 when the primary has no estimate (see server.Primary).
	Rate uint64
	// DeliveredBytes and DeliveredChunks count the file bytes and chunks
	// of READ replies in this session that the primary credits to the
	// path (see the server package for how chunks are attributed).
	DeliveredBytes, DeliveredChunks uint64
	// Strikes counts the corrupt chunks the client reported that this path
	// was given, in this session.
	Strikes uint64
	// InFlightBytes counts READ reply bytes assigned to the path and not
	// yet reported delivered by the client.
	InFlightBytes uint64
}

// IsPathReportRequest reports whether the request message b starts with
// OpPathReport.
func IsPathReportRequest(b []byte) bool { return len(b) > 0 && Op(b[0]) == OpPathReport }

// EncodePathReportRequest returns the PATH_REPORT request: the single
// byte OpPathReport (8).
func EncodePathReportRequest() []byte { return []byte{byte(OpPathReport)} }

// DecodePathReportRequest checks a PATH_REPORT request. It fails with an
// error wrapping ErrBadRequest unless b is exactly the byte OpPathReport.
func DecodePathReportRequest(b []byte) error {
	if len(b) != 1 || Op(b[0]) != OpPathReport {
		return fmt.Errorf("PATH_REPORT request of %d bytes: %w", len(b), ErrBadRequest)
	}
	return nil
}

func (r *PathReport) check() error {
	if len(r.Addr) > MaxAddrLen {
		return fmt.Errorf("PATH_REPORT address of %d bytes: %w", len(r.Addr), ErrTooLarge)
	}
	if !utf8.ValidString(r.Addr) {
		return fmt.Errorf("PATH_REPORT address %q: not UTF-8: %w", r.Addr, ErrBadRequest)
	}
	if r.State < kwik.PathPending || r.State > kwik.PathClosed {
		return fmt.Errorf("PATH_REPORT path state %d: %w", int(r.State), ErrBadRequest)
	}
	if r.RTT < 0 {
		return fmt.Errorf("PATH_REPORT RTT %v: %w", r.RTT, ErrBadRequest)
	}
	return nil
}

// EncodePathReports returns the OK reply to PATH_REPORT:
//
//	0x00, uvarint n, n times:
//	  uvarint ID, uvarint len(Addr), Addr, byte State,
//	  uvarint RTT (ns), uvarint Rate, uvarint DeliveredBytes,
//	  uvarint DeliveredChunks, uvarint Strikes, uvarint InFlightBytes
//
// The records must be in increasing ID order without repeats, at most
// MaxPathReports of them. It refuses what DecodePathReports would refuse,
// with the same errors.
func EncodePathReports(rs []PathReport) ([]byte, error) {
	if len(rs) > MaxPathReports {
		return nil, fmt.Errorf("PATH_REPORT of %d paths: %w", len(rs), ErrTooLarge)
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(rs)*32)
	b = append(b, byte(StatusOK))
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for i := range rs {
		r := &rs[i]
		if err := r.check(); err != nil {
			return nil, err
		}
		if i > 0 && r.ID <= rs[i-1].ID {
			return nil, fmt.Errorf("PATH_REPORT path %d after path %d: %w", r.ID, rs[i-1].ID, ErrBadRequest)
		}
		b = binary.AppendUvarint(b, uint64(r.ID))
		b = appendString(b, r.Addr)
		b = append(b, byte(r.State))
		b = binary.AppendUvarint(b, uint64(r.RTT))
		b = binary.AppendUvarint(b, r.Rate)
		b = binary.AppendUvarint(b, r.DeliveredBytes)
		b = binary.AppendUvarint(b, r.DeliveredChunks)
		b = binary.AppendUvarint(b, r.Strikes)
		b = binary.AppendUvarint(b, r.InFlightBytes)
	}
	return b, nil
}

// DecodePathReports decodes a whole reply to PATH_REPORT. An error reply
// yields a *RemoteError (matching its sentinel error with errors.Is); a
// malformed reply an error wrapping ErrTooLarge (beyond
// MaxPathReportReplyLen, MaxPathReports or MaxAddrLen) or ErrBadRequest
// (truncation, trailing bytes, an unknown state, an RTT beyond
// math.MaxInt64, IDs not increasing, an address that is not UTF-8). It
// does not retain b.
func DecodePathReports(b []byte) ([]PathReport, error) {
	if len(b) > MaxPathReportReplyLen {
		return nil, fmt.Errorf("PATH_REPORT reply of %d bytes: %w", len(b), ErrTooLarge)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("PATH_REPORT reply: empty: %w", ErrBadRequest)
	}
	if Status(b[0]) != StatusOK {
		return nil, DecodeError(b)
	}
	d := decoder{b: b[1:]}
	n := d.uvarint("PATH_REPORT count")
	if d.err != nil {
		return nil, d.err
	}
	if n > MaxPathReports {
		return nil, fmt.Errorf("PATH_REPORT of %d paths: %w", n, ErrTooLarge)
	}
	rs := make([]PathReport, 0, n)
	for i := 0; i < int(n) && d.err == nil; i++ {
		var r PathReport
		r.ID = kwik.PathID(d.uvarint("PATH_REPORT path id"))
		r.Addr = d.str("PATH_REPORT address", MaxAddrLen)
		r.State = kwik.PathState(d.byte1("PATH_REPORT state"))
		rtt := d.uvarint("PATH_REPORT RTT")
		r.Rate = d.uvarint("PATH_REPORT rate")
		r.DeliveredBytes = d.uvarint("PATH_REPORT delivered bytes")
		r.DeliveredChunks = d.uvarint("PATH_REPORT delivered chunks")
		r.Strikes = d.uvarint("PATH_REPORT strikes")
		r.InFlightBytes = d.uvarint("PATH_REPORT in-flight bytes")
		if d.err != nil {
			break
		}
		if rtt > math.MaxInt64 {
			return nil, fmt.Errorf("PATH_REPORT RTT %d ns: %w", rtt, ErrBadRequest)
		}
		r.RTT = time.Duration(rtt)
		if err := r.check(); err != nil {
			return nil, err
		}
		if i > 0 && r.ID <= rs[i-1].ID {
			return nil, fmt.Errorf("PATH_REPORT path %d after path %d: %w", r.ID, rs[i-1].ID, ErrBadRequest)
		}
		rs = append(rs, r)
	}
	d.end("PATH_REPORT reply")
	if d.err != nil {
		return nil, d.err
	}
	return rs, nil
}

// PathReport asks the primary for its account of every path of the
// client's session (PATH_REPORT), in increasing ID order. Like every
// operation it dials when the client holds no session and honours ctx; a
// primary that does not know the request fails it with an error wrapping
// ErrBadRequest.
func (c *Client) PathReport(ctx context.Context) ([]PathReport, error) {
	const name = "PATH_REPORT"
	var rs []PathReport
	err := c.do(ctx, name, func(s *kwik.Session) error {
		st, err := s.OpenStreamSync(ctx)
		if err != nil {
			return c.streamErr(ctx, s, name, err)
		}
		c.requests.Add(1)
		release := ctxwatch.OnDone(ctx, func() {
			st.CancelRead(CodeCanceled)
			st.CancelWrite(CodeCanceled)
		})
		defer release()
		if _, err := st.Write(EncodePathReportRequest()); err != nil {
			st.CancelRead(CodeCanceled)
			return c.streamErr(ctx, s, name, err)
		}
		if err := st.Close(); err != nil {
			st.CancelRead(CodeCanceled)
			return c.streamErr(ctx, s, name, err)
		}
		b, err := io.ReadAll(io.LimitReader(st, MaxPathReportReplyLen+1))
		if err != nil {
			return c.streamErr(ctx, s, name, err)
		}
		if len(b) > MaxPathReportReplyLen {
			st.CancelRead(CodeCanceled)
		}
		rs, err = DecodePathReports(b)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	return rs, err
}
