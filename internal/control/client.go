package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// Client talks to a mount daemon over its control socket. It is safe for
// concurrent use; a daemon that restarts on the same socket is reached
// again by the next call.
type Client struct {
	sock string
	hc   *http.Client
}

// NewClient returns a client of the daemon listening on the Unix socket
// sock (Mount.Socket). Close it when done.
func NewClient(sock string) *Client {
	return &Client{sock: sock, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}}
}

// Dial finds the mount that holds path (see FindMount) and returns a client
// of its daemon.
func Dial(path string) (*Client, Mount, error) {
	m, err := FindMount(path)
	if err != nil {
		return nil, Mount{}, err
	}
	return NewClient(m.Socket), m, nil
}

// QueryStatus asks the daemon serving the mount that holds path for its
// status: Dial, Status and Close in one.
func QueryStatus(ctx context.Context, path string) (*Status, error) {
	c, _, err := Dial(path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Status(ctx)
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Status returns the daemon's status (GET /status). Fields a newer daemon
// adds are ignored.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, "/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// StartPrefetch starts a prefetch job of paths (relative to the exported
// root) and returns its first progress.
func (c *Client) StartPrefetch(ctx context.Context, paths []string) (PrefetchJob, error) {
	var j PrefetchJob
	err := c.do(ctx, http.MethodPost, "/prefetch", PrefetchRequest{Paths: paths}, &j)
	return j, err
}

// Prefetch returns the progress of job id.
func (c *Client) Prefetch(ctx context.Context, id uint64) (PrefetchJob, error) {
	var j PrefetchJob
	err := c.do(ctx, http.MethodGet, "/prefetch/"+strconv.FormatUint(id, 10), nil, &j)
	return j, err
}

// Prefetches returns every job the daemon knows.
func (c *Client) Prefetches(ctx context.Context) ([]PrefetchJob, error) {
	var js []PrefetchJob
	err := c.do(ctx, http.MethodGet, "/prefetch", nil, &js)
	return js, err
}

// CancelPrefetch cancels job id and returns its progress once it stopped.
func (c *Client) CancelPrefetch(ctx context.Context, id uint64) (PrefetchJob, error) {
	var j PrefetchJob
	err := c.do(ctx, http.MethodDelete, "/prefetch/"+strconv.FormatUint(id, 10), nil, &j)
	return j, err
}

// Get copies the body of GET path (with its query, e.g.
// "/debug/pprof/profile?seconds=5" or "/status") to w. A profile's GET
// takes the profile's duration.
func (c *Client) Get(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("daemon at %s: GET %s: %w", c.sock, path, err)
	}
	return nil
}

// Error is an error reply of the daemon.
type Error struct {
	Status  int    // HTTP status
	Message string // the daemon's error text
}

func (e *Error) Error() string { return e.Message }

// do sends a request with body (JSON, if not nil) and decodes the JSON
// reply into out.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, rd)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("daemon at %s: decode reply: %w", c.sock, err)
	}
	return nil
}

// send sends a request with a JSON body (if rd is not nil) and returns a
// successful (2xx) response; an error reply is returned as an *Error.
func (c *Client) send(ctx context.Context, method, path string, rd io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://kwikfs"+path, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon at %s: %w", c.sock, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e errorReply
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		return nil, &Error{Status: resp.StatusCode, Message: e.Error}
	}
	return resp, nil
}
