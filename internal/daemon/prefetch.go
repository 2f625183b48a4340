package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kwikfs/kwikfs/prefetch"
	"github.com/kwikfs/kwikfs/transfer"
)

// PrefetchRequest is the body of POST /prefetch.
type PrefetchRequest struct {
	// Paths are relative to the exported root ("" is the whole tree).
	Paths []string `json:"paths"`
}

// maxPrefetchRequest bounds the body of POST /prefetch.
const maxPrefetchRequest = prefetch.MaxPaths * (prefetch.MaxPathLen + 8)

// registerPrefetch adds the prefetch API to mux:
//
//	POST   /prefetch       start a job (PrefetchRequest); 201 and its Progress
//	GET    /prefetch       every job, as a JSON array of Progress
//	GET    /prefetch/{id}  one job's Progress (poll it to follow the job)
//	DELETE /prefetch/{id}  cancel the job; its Progress once stopped
//
// Errors are JSON objects {"error": "..."} with status 400 (bad request or
// path), 404 (no such path or job) or 503 (the daemon is stopping).
func registerPrefetch(mux *http.ServeMux, mgr *prefetch.Manager, log *slog.Logger) {
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if err := json.NewEncoder(w).Encode(v); err != nil {
			log.Debug("control: write prefetch reply", "err", err)
		}
	}
	fail := func(w http.ResponseWriter, err error) {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, prefetch.ErrInvalidPath), errors.Is(err, transfer.ErrNotDir):
			status = http.StatusBadRequest
		case errors.Is(err, prefetch.ErrNotFound), errors.Is(err, transfer.ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, prefetch.ErrClosed):
			status = http.StatusServiceUnavailable
		}
		reply(w, status, map[string]string{"error": err.Error()})
	}
	jobID := func(w http.ResponseWriter, r *http.Request) (uint64, bool) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("bad job id %q", r.PathValue("id"))})
			return 0, false
		}
		return id, true
	}
	mux.HandleFunc("POST /prefetch", func(w http.ResponseWriter, r *http.Request) {
		var req PrefetchRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPrefetchRequest))
		if err := dec.Decode(&req); err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
			return
		}
		p, err := mgr.Start(r.Context(), req.Paths)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, http.StatusCreated, p)
	})
	mux.HandleFunc("GET /prefetch", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, mgr.Jobs())
	})
	mux.HandleFunc("GET /prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := jobID(w, r); ok {
			p, err := mgr.Job(id)
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, http.StatusOK, p)
		}
	})
	mux.HandleFunc("DELETE /prefetch/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := jobID(w, r); ok {
			p, err := mgr.Cancel(id)
			if err != nil {
				fail(w, err)
				return
			}
			reply(w, http.StatusOK, p)
		}
	})
}

// Rel returns path (inside the mount) relative to the mount's root, in the
// '/'-separated form of the exported tree ("" for the root).
func (m Mount) Rel(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(m.Root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not inside the kwikfs mount %s", path, m.Root)
	}
	if rel == "." {
		return "", nil
	}
	return filepath.ToSlash(rel), nil
}

// ControlClient talks to a mount daemon over its control socket.
type ControlClient struct {
	sock string
	hc   *http.Client
}

// NewControlClient returns a client of the daemon listening on sock. Close
// it when done.
func NewControlClient(sock string) *ControlClient {
	return &ControlClient{sock: sock, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// Close releases the client's idle connections.
func (c *ControlClient) Close() { c.hc.CloseIdleConnections() }

// Status returns the daemon's status (GET /status).
func (c *ControlClient) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, "/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// StartPrefetch starts a prefetch job of paths (relative to the exported
// root) and returns its first Progress.
func (c *ControlClient) StartPrefetch(ctx context.Context, paths []string) (prefetch.Progress, error) {
	var p prefetch.Progress
	err := c.do(ctx, http.MethodPost, "/prefetch", PrefetchRequest{Paths: paths}, &p)
	return p, err
}

// Prefetch returns the progress of job id.
func (c *ControlClient) Prefetch(ctx context.Context, id uint64) (prefetch.Progress, error) {
	var p prefetch.Progress
	err := c.do(ctx, http.MethodGet, "/prefetch/"+strconv.FormatUint(id, 10), nil, &p)
	return p, err
}

// Prefetches returns every job the daemon knows.
func (c *ControlClient) Prefetches(ctx context.Context) ([]prefetch.Progress, error) {
	var ps []prefetch.Progress
	err := c.do(ctx, http.MethodGet, "/prefetch", nil, &ps)
	return ps, err
}

// CancelPrefetch cancels job id and returns its progress once it stopped.
func (c *ControlClient) CancelPrefetch(ctx context.Context, id uint64) (prefetch.Progress, error) {
	var p prefetch.Progress
	err := c.do(ctx, http.MethodDelete, "/prefetch/"+strconv.FormatUint(id, 10), nil, &p)
	return p, err
}

// ControlError is an error reply of the daemon.
type ControlError struct {
	Status  int    // HTTP status
	Message string // the daemon's error text
}

func (e *ControlError) Error() string { return e.Message }

// do sends a request with body (JSON, if not nil) and decodes the JSON
// reply into out. An error reply is returned as a *ControlError.
func (c *ControlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://kwikfs"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon at %s: %w", c.sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return &ControlError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon at %s: decode reply: %w", c.sock, err)
	}
	return nil
}
