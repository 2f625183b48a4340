package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

// SecondaryOptions configures a Secondary. The zero value (or nil) selects
// the defaults.
type SecondaryOptions struct {
	// Logger receives the secondary's logs. Default slog.Default().
	Logger *slog.Logger
	// MaxConcurrentCommands bounds the commands one Serve handles at once;
	// further commands wait in kwik (a client's path relays no further
	// command until one is accepted). Default 64.
	MaxConcurrentCommands int
	// PieceSize is how many bytes are read (pread) and written into the
	// grant at a time, each Serve goroutine holding one pooled buffer of
	// this size. Within [4 KiB, 16 MiB]; default 256 KiB.
	PieceSize int
}

// SecondaryStats are exact counters of a Secondary since it was created.
// Every command is counted in Commands when accepted and, once handled, in
// exactly one of Completed, BadCommands, OutsideRoot, NotFound, ShortFile
// and Failed; Active counts those not yet handled. A snapshot taken while
// commands are handled may be off by the ones in between.
type SecondaryStats struct {
	// Commands counts the verified commands accepted from kwik.
	Commands int64
	// Active counts the commands being handled now.
	Active int64
	// Completed counts commands whose whole granted range was sent.
	Completed int64
	// BadCommands counts payloads that are not a valid transfer.SendChunk
	// (or whose file range overflows); nothing was sent.
	BadCommands int64
	// OutsideRoot counts commands refused because the path leaves the root
	// (an absolute path, "..", or a symlink leading out); nothing was sent.
	OutsideRoot int64
	// NotFound counts commands for a path that is not a regular file in
	// the root (missing, a directory, another type); nothing was sent.
	NotFound int64
	// ShortFile counts commands whose file ends before the range does;
	// the bytes that exist were sent, the rest was not.
	ShortFile int64
	// Failed counts commands ended by anything else: a read error, a write
	// error (the path ended), or Serve's context ending.
	Failed int64
	// BytesSent counts file bytes written into grants.
	BytesSent int64
}

// secondaryCounters are the atomics behind SecondaryStats.
type secondaryCounters struct {
	commands, active, bytesSent atomic.Int64
	outcomes                    [numOutcomes]atomic.Int64
}

// outcome is how the handling of one command ended.
type outcome int

const (
	outCompleted outcome = iota
	outBadCommand
	outOutsideRoot
	outNotFound
	outShortFile
	outFailed
	numOutcomes
)

func (o outcome) String() string {
	return [...]string{"completed", "bad command", "outside root", "not found", "short file", "failed"}[o]
}

// Secondary is a secondary server: it exports a mirror of the primary's
// tree and writes file ranges into clients' streams only when the primary
// delegates them, each in a command (a transfer.SendChunk payload with a
// kwik write grant) relayed through the client. It never opens a stream.
//
// For a command with grant (stream, offset, length) and payload
// SendChunk{Path, Version, FileOffset}, it opens Path within its root
// (os.Root, as a Catalog does: nothing outside the root is ever read) and
// writes file bytes [FileOffset, FileOffset+length) at stream offsets
// [offset, offset+length), reading them with pread in pieces of PieceSize
// into pooled buffers, then closes the command's data stream. It does not
// verify the bytes: the client checks every chunk against the manifest,
// so a stale mirror is caught there. A file that is missing, outside the
// root or shorter than the range gets no bytes sent for the missing part;
// the secondary logs it once, counts it and ends the command, and the
// primary, seeing the range late, sends it from elsewhere.
//
// A Secondary is safe for concurrent use.
type Secondary struct {
	cat   *Catalog
	log   *slog.Logger
	limit int
	piece int
	bufs  sync.Pool // of *[]byte with len == piece
	stats secondaryCounters

	// Test hooks, set before Serve: commandDone is called with each
	// command's outcome after it is counted, beforePiece before each piece
	// is read.
	commandDone func(outcome)
	beforePiece func(ctx context.Context)
}

// NewSecondary returns a Secondary exporting the directory root. Close
// releases it.
func NewSecondary(root string, opts *SecondaryOptions) (*Secondary, error) {
	var o SecondaryOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxConcurrentCommands <= 0 {
		o.MaxConcurrentCommands = DefaultMaxConcurrentCommands
	}
	if o.PieceSize == 0 {
		o.PieceSize = DefaultPieceSize
	}
	if o.PieceSize < 4<<10 || o.PieceSize > 16<<20 {
		return nil, fmt.Errorf("piece size %d outside [4 KiB, 16 MiB]", o.PieceSize)
	}
	cat, err := NewCatalog(root, nil)
	if err != nil {
		return nil, err
	}
	s := &Secondary{cat: cat, log: o.Logger, limit: o.MaxConcurrentCommands, piece: o.PieceSize}
	s.bufs.New = func() any {
		b := make([]byte, s.piece)
		return &b
	}
	return s, nil
}

// Close releases the root directory. Call it after every Serve has
// returned.
func (s *Secondary) Close() error { return s.cat.Close() }

// Stats returns the secondary's counters.
func (s *Secondary) Stats() SecondaryStats {
	c := &s.stats
	return SecondaryStats{
		Commands:    c.commands.Load(),
		Active:      c.active.Load(),
		Completed:   c.outcomes[outCompleted].Load(),
		BadCommands: c.outcomes[outBadCommand].Load(),
		OutsideRoot: c.outcomes[outOutsideRoot].Load(),
		NotFound:    c.outcomes[outNotFound].Load(),
		ShortFile:   c.outcomes[outShortFile].Load(),
		Failed:      c.outcomes[outFailed].Load(),
		BytesSent:   c.bytesSent.Load(),
	}
}

// Serve accepts the commands relayed to sec and handles each in a
// goroutine of its own, at most MaxConcurrentCommands at once, until ctx
// is done or sec is closed. It returns once every goroutine it started has
// stopped: nil when ctx ended, otherwise the error that stopped
// AcceptCommand (matching kwik.ErrClosed when sec was closed). It does not
// close sec.
//
// A command in progress stops between pieces when ctx ends or its path
// does. A piece being written to a client that stopped reading blocks
// until kwik closes its path (kwik.Config.WriteTimeout) or sec is closed:
// to stop at once, close sec when ctx ends (kwik-secondary does). One
// path holds at most kwik.Config.MaxCommandsPerPath of the
// MaxConcurrentCommands slots.
func (s *Secondary) Serve(ctx context.Context, sec *kwik.Secondary) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	slots := make(chan struct{}, s.limit)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		cmd, err := sec.AcceptCommand(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept command: %w", err)
		}
		s.stats.commands.Add(1)
		s.stats.active.Add(1)
		wg.Go(func() {
			defer func() { <-slots }()
			s.handle(ctx, cmd)
		})
	}
}

// handle serves one command, closes it, counts its outcome and logs a
// command that could not be served.
func (s *Secondary) handle(ctx context.Context, cmd *kwik.Command) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(cmd.Context(), cancel)
	out, sent, err := s.send(ctx, cmd)
	stop()
	cancel()
	cmd.Close()

	s.stats.bytesSent.Add(sent)
	s.stats.outcomes[out].Add(1)
	s.stats.active.Add(-1)
	if out != outCompleted {
		g := cmd.Grant()
		attrs := []any{"outcome", out.String(), "peer", cmd.RemoteAddr().String(),
			"session", cmd.SessionID(), "path_id", cmd.PathID(), "seq", cmd.Seq(),
			"stream", g.StreamID, "offset", g.Offset, "length", g.Length, "sent", sent, "err", err}
		switch {
		case out == outOutsideRoot:
			s.log.Warn("SEND_CHUNK refused", attrs...)
		case out == outFailed && (ctx.Err() != nil || errors.Is(err, kwik.ErrClosed)):
			s.log.Debug("SEND_CHUNK stopped", attrs...)
		default:
			s.log.Info("SEND_CHUNK not served in full", attrs...)
		}
	}
	if s.commandDone != nil {
		s.commandDone(out)
	}
}

// send writes the file range a command names into its grant. It returns
// the outcome, the number of bytes written and the error that ended it
// early.
func (s *Secondary) send(ctx context.Context, cmd *kwik.Command) (outcome, int64, error) {
	g := cmd.Grant()
	sc, err := transfer.DecodeSendChunk(cmd.Payload())
	if errors.Is(err, transfer.ErrOutsideRoot) {
		return outOutsideRoot, 0, err
	}
	if err != nil {
		return outBadCommand, 0, err
	}
	if g.Length > math.MaxInt64-sc.FileOffset {
		return outBadCommand, 0, fmt.Errorf("send %q: range [%d, +%d) beyond the largest file: %w", sc.Path, sc.FileOffset, g.Length, transfer.ErrBadRequest)
	}
	f, _, err := s.cat.openRegular("send", sc.Path)
	switch {
	case errors.Is(err, transfer.ErrOutsideRoot):
		return outOutsideRoot, 0, err
	case errors.Is(err, transfer.ErrNotFound) || errors.Is(err, transfer.ErrIsDir) || errors.Is(err, transfer.ErrNotDir):
		return outNotFound, 0, err
	case err != nil:
		return outFailed, 0, err
	}
	defer f.Close()

	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	var sent int64
	for done := uint64(0); done < g.Length; {
		if s.beforePiece != nil {
			s.beforePiece(ctx)
		}
		if err := ctx.Err(); err != nil {
			return outFailed, sent, fmt.Errorf("send %q: %w", sc.Path, err)
		}
		want := int(min(uint64(len(buf)), g.Length-done))
		n, rerr := f.ReadAt(buf[:want], int64(sc.FileOffset+done))
		if n > 0 {
			w, werr := cmd.WriteAt(buf[:n], int64(g.Offset+done))
			sent += int64(w)
			if werr != nil {
				return outFailed, sent, fmt.Errorf("send %q: %w", sc.Path, werr)
			}
		}
		done += uint64(n)
		if n < want {
			if rerr == io.EOF {
				return outShortFile, sent, fmt.Errorf("send %q: file ends at %d, range [%d, +%d): %w",
					sc.Path, sc.FileOffset+done, sc.FileOffset, g.Length, io.ErrUnexpectedEOF)
			}
			return outFailed, sent, s.cat.mapErr("send", sc.Path, rerr)
		}
	}
	return outCompleted, sent, nil
}
