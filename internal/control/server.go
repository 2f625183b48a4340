package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Source gives the server the daemon's status.
type Source interface {
	// Status returns the daemon's status now. It may wait for the
	// primary's account of the paths, but not past ctx.
	Status(ctx context.Context) Status
}

// Prefetcher runs the prefetch jobs of the prefetch endpoints. Its errors
// choose the reply's status: wrapping ErrBadRequest 400, ErrNotFound 404,
// ErrUnavailable 503; any other error is 500.
type Prefetcher interface {
	// Start starts a job of paths (relative to the exported root) and
	// returns its first progress.
	Start(ctx context.Context, paths []string) (PrefetchJob, error)
	// Jobs returns every job, by ID.
	Jobs() []PrefetchJob
	// Job returns the progress of job id.
	Job(id uint64) (PrefetchJob, error)
	// Cancel cancels job id and returns its progress once it stopped (an
	// ended job's unchanged).
	Cancel(id uint64) (PrefetchJob, error)
}

// Errors a Prefetcher wraps to choose the status of its error reply.
var (
	ErrBadRequest  = errors.New("bad request")
	ErrNotFound    = errors.New("not found")
	ErrUnavailable = errors.New("unavailable")
)

// MaxPrefetchBody bounds the body of POST /prefetch: 8 MiB, room for the
// most paths a job takes (1,024 of up to 4,096 bytes) JSON-escaped.
const MaxPrefetchBody = 8 << 20

// PrefetchRequest is the body of POST /prefetch.
type PrefetchRequest struct {
	// Paths are relative to the exported root ("" is the whole tree).
	Paths []string `json:"paths"`
}

// Server serves the control API over HTTP on a Unix socket. Create it with
// Listen; Close stops it.
type Server struct {
	srv  *http.Server
	path string
	wg   sync.WaitGroup // the serving goroutine
}

// Listen listens on the Unix socket at path (mode 0600; a stale socket a
// killed daemon left is replaced, a live one is an error: another daemon
// uses it) and serves, until Close:
//
//	GET    /status         src's Status, as indented JSON
//	POST   /prefetch       start a job (PrefetchRequest); 201 and its PrefetchJob
//	GET    /prefetch       every job, as a JSON array of PrefetchJob
//	GET    /prefetch/{id}  one job's PrefetchJob (poll it to follow the job)
//	DELETE /prefetch/{id}  cancel the job; its PrefetchJob once stopped
//	GET    /debug/pprof/   the runtime profiles of net/http/pprof
//
// The prefetch endpoints are served only with a Prefetcher (jobs not
// nil). Errors are JSON objects {"error": "..."} with status 400, 404,
// 500 or 503 (see Prefetcher). The socket's directory should be private
// to the daemon's user: nothing else keeps other users out before the
// chmod.
func Listen(path string, src Source, jobs Prefetcher, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	h := handlers{log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(src.Status(r.Context())); err != nil {
			log.Debug("control: write status", "err", err)
		}
	})
	if jobs != nil {
		h.prefetch(mux, jobs)
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path}
	s.wg.Go(func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket", "err", err)
		}
	})
	return s, nil
}

// Close stops serving (waiting up to 2 s for requests under way) and
// removes the socket file.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	os.Remove(s.path)
	return err
}

// removeStaleSocket removes a socket file nobody listens on. A live socket
// means another daemon uses this cache: that is an error.
func removeStaleSocket(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("control socket %s: another kwikfs daemon is using this cache", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

// handlers holds what the handlers share.
type handlers struct {
	log *slog.Logger
}

// reply writes v as JSON with status.
func (h handlers) reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		h.log.Debug("control: write reply", "err", err)
	}
}

// fail writes err as an error reply, with the status its kind chooses.
func (h handlers) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	h.reply(w, status, errorReply{Error: err.Error()})
}

// errorReply is the body of an error reply.
type errorReply struct {
	Error string `json:"error"`
}

// prefetch adds the prefetch endpoints (see Listen) to mux.
func (h handlers) prefetch(mux *http.ServeMux, jobs Prefetcher) {
	// withJob calls f with the job ID of the request's path.
	withJob := func(f func(id uint64) (PrefetchJob, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
			if err != nil {
				h.fail(w, fmt.Errorf("%w: job id %q", ErrBadRequest, r.PathValue("id")))
				return
			}
			j, err := f(id)
			if err != nil {
				h.fail(w, err)
				return
			}
			h.reply(w, http.StatusOK, j)
		}
	}
	mux.HandleFunc("POST /prefetch", func(w http.ResponseWriter, r *http.Request) {
		var req PrefetchRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxPrefetchBody))
		if err := dec.Decode(&req); err != nil {
			h.fail(w, fmt.Errorf("%w: %w", ErrBadRequest, err))
			return
		}
		j, err := jobs.Start(r.Context(), req.Paths)
		if err != nil {
			h.fail(w, err)
			return
		}
		h.reply(w, http.StatusCreated, j)
	})
	mux.HandleFunc("GET /prefetch", func(w http.ResponseWriter, r *http.Request) {
		h.reply(w, http.StatusOK, jobs.Jobs())
	})
	mux.HandleFunc("GET /prefetch/{id}", withJob(jobs.Job))
	mux.HandleFunc("DELETE /prefetch/{id}", withJob(jobs.Cancel))
}
