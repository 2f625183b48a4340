package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/kwikfs/kwikfs/internal/daemon"
)

// Fetching profiles and status documents over HTTP: from a kwikfs daemon
// over its control socket, from a kwik server over its --pprof address.

// cpuProfilePath is the request of a 5-second CPU profile (net/http/pprof),
// on the daemon's control socket as on a server's --pprof address.
const cpuProfilePath = "/debug/pprof/profile?seconds=5"

// daemonURL is the base URL of requests to a daemon's control socket
// (the host is not looked at: daemonClient dials the socket).
const daemonURL = "http://kwikfs"

// daemonClient returns an HTTP client whose every connection goes to the
// control socket of the kwikfs mount at mnt; requests go to daemonURL +
// path. The caller may CloseIdleConnections when done.
func daemonClient(mnt string) (*http.Client, error) {
	found, err := daemon.FindMount(mnt)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", found.Socket)
		},
	}}, nil
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
