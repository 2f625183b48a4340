package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kwikfs/kwikfs/internal/control"
)

// The links table's profiled read (--links-profile): CPU profiles,
// mid-read snapshots and a trace of each link and path.

// linksProfiler collects the profiles and snapshots of one read.
type linksProfiler struct {
	wg        sync.WaitGroup
	stopTrace chan struct{} // closed by wait: ends the status trace
	mu        sync.Mutex    // guards errs
	errs      []error
}

func (p *linksProfiler) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// linksStartProfiles starts, in dir: 5 s CPU profiles of the daemon (from its
// control socket) and of each server (from its --pprof address, fetched
// with curl inside the server's namespace) and, 0.5 s later, goroutine
// dumps of the three, `ss -uamn` of the three namespaces and the daemon's
// status. The read starts right after.
func linksStartProfiles(dir string, m *benchMount, servers []*linksServer) *linksProfiler {
	p := &linksProfiler{stopTrace: make(chan struct{})}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.fail(err)
		return p
	}
	daemonGet := func(path, file string) {
		defer p.wg.Done()
		if err := saveDaemon(m.ctl, path, filepath.Join(dir, file)); err != nil {
			p.fail(fmt.Errorf("daemon %s: %w", path, err))
		}
	}
	// run runs a command (in a namespace when ns is set) into file.
	run := func(ns, file string, args ...string) {
		defer p.wg.Done()
		if ns != "" {
			args = append([]string{"ip", "netns", "exec", ns}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			p.fail(fmt.Errorf("%s: %w", strings.Join(args, " "), err))
		}
		if err := os.WriteFile(filepath.Join(dir, file), out, 0o644); err != nil {
			p.fail(err)
		}
	}
	name := func(s *linksServer) string { return strings.Fields(s.label)[0] } // primary, secondary
	p.wg.Add(1 + len(servers))
	go daemonGet(cpuProfilePath, "daemon.pprof")
	for _, s := range servers {
		go run(s.ns, name(s)+".pprof", "curl", "-sSf", "--max-time", "30", "http://"+s.pprof+cpuProfilePath)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		time.Sleep(500 * time.Millisecond)
		p.wg.Add(4 + 2*len(servers))
		go daemonGet("/debug/pprof/goroutine?debug=1", "daemon-goroutines.txt")
		go daemonGet("/status", "status-midread.json")
		go run("", "ss-root.txt", "ss", "-uamni")
		for _, s := range servers {
			go run(s.ns, name(s)+"-goroutines.txt", "curl", "-sSf", "--max-time", "30", "http://"+s.pprof+"/debug/pprof/goroutine?debug=1")
			go run(s.ns, "ss-"+s.ns+".txt", "ss", "-uamni")
		}
		go run("", "tc-midread.txt", "sh", "-c", fmt.Sprintf("tc -s qdisc show dev %s; tc -s qdisc show dev %s; tc -n %s -s qdisc show dev %s; tc -n %s -s qdisc show dev %s",
			linkA.hostDev, linkB.hostDev, linkA.ns, linkA.nsDev, linkB.ns, linkB.nsDev))
	}()
	p.wg.Add(1)
	go p.trace(filepath.Join(dir, "trace.tsv"), m.ctl)
	// Give the profile requests a moment to reach the processes.
	time.Sleep(100 * time.Millisecond)
	return p
}

// trace writes to file, every 100 ms until wait, what each link carried
// in the data direction (Mbit/s over the interval) and, per path, the bytes
// delivered, the bytes in flight (assigned by the primary, not yet
// reported delivered) and the RTT, from the daemon's status (c).
func (p *linksProfiler) trace(file string, c *control.Client) {
	defer p.wg.Done()
	f, err := os.Create(file)
	if err != nil {
		p.fail(err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "ms\tA Mbit/s\tB Mbit/s\tper path: delivered MiB, in flight MiB, RTT ms\n")
	start, last := time.Now(), time.Now()
	lastA, lastB := linksRxBytes(linkA.hostDev), linksRxBytes(linkB.hostDev)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stopTrace:
			return
		case <-t.C:
		}
		now := time.Now()
		a, b := linksRxBytes(linkA.hostDev), linksRxBytes(linkB.hostDev)
		secs := now.Sub(last).Seconds()
		line := fmt.Sprintf("%d\t%.0f\t%.0f", now.Sub(start).Milliseconds(), float64(a-lastA)*8/secs/1e6, float64(b-lastB)*8/secs/1e6)
		last, lastA, lastB = now, a, b
		st, err := c.Status(context.Background())
		if err != nil {
			p.fail(fmt.Errorf("status: %w", err))
			st = &control.Status{}
		}
		for _, ps := range st.Paths {
			inFlight := uint64(0)
			if ps.InFlightBytes != nil {
				inFlight = *ps.InFlightBytes
			}
			line += fmt.Sprintf("\t%.1f, %.1f, %.1f", float64(ps.BytesDelivered)/(1<<20), float64(inFlight)/(1<<20), ps.RTTMillis)
		}
		fmt.Fprintln(f, line)
	}
}

// wait waits for the profiles (5 s from their start) and returns their
// errors.
func (p *linksProfiler) wait() error {
	close(p.stopTrace)
	p.wg.Wait()
	return errors.Join(p.errs...)
}
