package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/kwikfs/kwikfs/internal/control"
)

// Fetching profiles and status documents over HTTP: from a kwikfs daemon
// over its control socket, from a kwik server over its --pprof address.

// cpuProfilePath is the request of a 5-second CPU profile (net/http/pprof),
// on the daemon's control socket as on a server's --pprof address.
const cpuProfilePath = "/debug/pprof/profile?seconds=5"

// saveDaemon GETs path (with its query) from the daemon c talks to and
// writes the body to file; it fails (and leaves no file) unless the answer
// is 2xx. A CPU profile's GET takes the profile's duration.
func saveDaemon(c *control.Client, path, file string) error {
	var b bytes.Buffer
	if err := c.Get(context.Background(), path, &b); err != nil {
		return err
	}
	return os.WriteFile(file, b.Bytes(), 0o644)
}

// saveURL GETs url with hc and writes the body to path; it fails (and
// writes nothing) unless the answer is 200 OK. A CPU profile's GET takes
// the profile's duration.
func saveURL(hc *http.Client, url, path string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
