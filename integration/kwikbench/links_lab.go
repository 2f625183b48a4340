package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The links table's lab: the network namespaces, veth pairs and tbf
// shaping it runs on, and their teardown on every exit path.

// The links table (--links) runs every server in a network namespace of
// its own behind a veth pair shaped by the kernel's tbf on both ends (no
// user-space relay): the kwikfs daemon and the reader stay in the root
// namespace (a FUSE mount must be in the root mount namespace), each server
// runs under `ip netns exec`, and the reference rows use nginx, curl and
// aria2c over the same links.
//
// Everything the bench creates is named with linksPrefix: namespaces
// kwbl-a and kwbl-b, veth pairs kwbl-a0 (root side) / kwbl-a1 (namespace
// side) and kwbl-b0 / kwbl-b1. Leftovers of an earlier run that died are
// removed at start; the bench removes its own on every exit path (return,
// panic in the bench's goroutine, SIGINT, SIGTERM). Addresses come from
// 198.18.0.0/15 (RFC 2544 benchmarking) only.
const linksPrefix = "kwbl-"

// linksEnd is one shaped link: a veth pair from the root namespace to ns.
type linksEnd struct {
	ns             string // network namespace of the link's servers
	hostDev, nsDev string // root-side and namespace-side veth
	hostIP, nsIP   string // in a /30 of 198.19.0.0/16
}

var (
	linkA = linksEnd{ns: linksPrefix + "a", hostDev: linksPrefix + "a0", nsDev: linksPrefix + "a1", hostIP: "198.19.71.1", nsIP: "198.19.71.2"}
	linkB = linksEnd{ns: linksPrefix + "b", hostDev: linksPrefix + "b0", nsDev: linksPrefix + "b1", hostIP: "198.19.72.1", nsIP: "198.19.72.2"}
)

// Shaping. tbf runs on the egress of both ends of each veth at the same
// rate: the namespace side shapes the data (server to client), the root
// side the requests and acknowledgements.
//
//   - burst: 2 ms of the rate, at least 64 KiB (1 Gbit/s: 250 KB, 500
//     Mbit/s: 125 KB, 250 Mbit/s: 64 KiB). It must hold a whole GSO/TSO
//     super-packet (64 KiB), or tbf cuts every one into MTU segments, and
//     it must not be so small that a late softirq run (the veth has no
//     wire clock) leaves tokens unused. Measured on this machine with
//     curl from nginx over one shaped veth, 2 runs each: at 1 Gbit/s a
//     15 KB burst gave 906-916 Mbit/s, 64 KB 920-928, 256 KB 942-956 and
//     1 MB 956-959; at 500 Mbit/s 125 KB gave 478, at 250 Mbit/s 64 KiB
//     238-239. TCP's goodput ceiling on the wire is 1448/1514 = 0.956 of
//     the rate, so these reach it.
//   - latency 10 ms: the queue tbf keeps in front of the shaper (its
//     bfifo limit is rate * latency + burst, 1.5 MB at 1 Gbit/s). Enough
//     for one TCP flow to keep the link busy (5 ms at 1 Gbit/s gave the
//     same 941-947 Mbit/s); deeper only adds delay. The veth itself adds
//     none, so the RTT a sender sees is this queue's delay.
//   - txqueuelen is left at the veth's 1000: with tbf at the root the
//     queue is tbf's own bfifo, sized by latency above, and txqueuelen
//     plays no part.
const (
	linksTBFLatency = "10ms"
	linksMinBurst   = 64 << 10
)

// linksBurst returns the tbf burst in bytes for a rate in Mbit/s.
func linksBurst(mbit int64) int64 {
	return max(linksMinBurst, mbit*1_000_000/8*2/1000)
}

// ensureLinksTools installs iproute2, nginx, curl and aria2 with apt-get
// when a command of theirs is missing (apt-get update once first).
func ensureLinksTools() error {
	var missing []string
	for _, t := range []struct{ cmd, pkg string }{{"ip", "iproute2"}, {"tc", "iproute2"}, {"nginx", "nginx"}, {"curl", "curl"}, {"aria2c", "aria2"}} {
		if _, err := exec.LookPath(t.cmd); err != nil && !slices.Contains(missing, t.pkg) {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "installing %s ...\n", strings.Join(missing, " "))
	for _, args := range [][]string{
		{"-qq", "update"},
		append([]string{"-qq", "-y", "-o", "DPkg::Lock::Timeout=300", "install"}, missing...),
	} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

// linksLab owns the namespaces, the veths and the processes and mounts
// that must not outlive the bench.
type linksLab struct {
	mu     sync.Mutex // guards procs, mounts and down
	procs  map[*exec.Cmd]struct{}
	mounts map[string]struct{}
	down   bool // teardown ran
}

// linksCmd runs a command (ip, tc) and returns its error with its output.
func linksCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setup makes the namespaces and the veth pairs, with their addresses.
func (l *linksLab) setup() error {
	for _, e := range []linksEnd{linkA, linkB} {
		for _, args := range [][]string{
			{"netns", "add", e.ns},
			{"link", "add", e.hostDev, "type", "veth", "peer", "name", e.nsDev, "netns", e.ns},
			{"addr", "add", e.hostIP + "/30", "dev", e.hostDev},
			{"link", "set", e.hostDev, "up"},
			{"-n", e.ns, "addr", "add", e.nsIP + "/30", "dev", e.nsDev},
			{"-n", e.ns, "link", "set", e.nsDev, "up"},
			{"-n", e.ns, "link", "set", "lo", "up"}, // for the servers' pprof
		} {
			if err := linksCmd("ip", args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// shape sets tbf at mbitA on both ends of link A and at mbitB on link B
// (see linksTBFLatency for the parameters).
func (l *linksLab) shape(mbitA, mbitB int64) error {
	for _, x := range []struct {
		e    linksEnd
		mbit int64
	}{{linkA, mbitA}, {linkB, mbitB}} {
		tbf := []string{"root", "tbf", "rate", fmt.Sprintf("%dmbit", x.mbit), "burst", strconv.FormatInt(linksBurst(x.mbit), 10), "latency", linksTBFLatency}
		if err := linksCmd("tc", append([]string{"qdisc", "replace", "dev", x.e.hostDev}, tbf...)...); err != nil {
			return err
		}
		if err := linksCmd("tc", append([]string{"-n", x.e.ns, "qdisc", "replace", "dev", x.e.nsDev}, tbf...)...); err != nil {
			return err
		}
	}
	return nil
}

// track adds cmd, started, to the processes teardown stops. If teardown
// already ran it kills cmd, waits for it and returns an error.
func (l *linksLab) track(cmd *exec.Cmd) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		cmd.Process.Kill()
		cmd.Wait()
		return errors.New("bench is stopping")
	}
	l.procs[cmd] = struct{}{}
	return nil
}

func (l *linksLab) trackMount(m *benchMount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs[m.cmd] = struct{}{}
	l.mounts[m.dir] = struct{}{}
}

func (l *linksLab) untrackMount(m *benchMount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.procs, m.cmd)
	delete(l.mounts, m.dir)
}

// teardown stops the tracked processes (SIGTERM, then SIGKILL after 3 s),
// detaches the tracked mounts and deletes the namespaces and veths. It
// runs once; later calls return at once.
func (l *linksLab) teardown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return
	}
	l.down = true
	for cmd := range l.procs {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		alive := false
		for cmd := range l.procs {
			if cmd.Process.Signal(syscall.Signal(0)) == nil {
				alive = true
			}
		}
		if !alive {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for cmd := range l.procs {
		cmd.Process.Kill()
	}
	for mnt := range l.mounts {
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err := removeLinksLeftovers(""); err != nil {
		fmt.Fprintln(os.Stderr, "kwikbench: remove the links:", err)
	}
}

// teardownOnSignal tears the lab down, removes work and exits 130 on
// SIGINT or SIGTERM; the returned func stops watching.
func (l *linksLab) teardownOnSignal(work string) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "kwikbench: %v: removing the links\n", s)
			l.teardown()
			os.RemoveAll(work)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}

// removeLinksLeftovers removes what an earlier run left: FUSE mounts under
// a kwikbench-links- work dir, processes in the bench's namespaces (by
// PID, as `ip netns pids` lists them), the namespaces and the veths. With
// keep set, it removes the other kwikbench-links- work dirs in the temp
// dir too (an earlier run killed before its deferred removal).
func removeLinksLeftovers(keep string) error {
	if info, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4], "/kwikbench-links-") &&
				(keep == "" || !strings.HasPrefix(f[4], keep+"/")) {
				unix.Unmount(strings.ReplaceAll(f[4], `\040`, " "), unix.MNT_DETACH)
			}
		}
	}
	if keep != "" {
		stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "kwikbench-links-*"))
		for _, dir := range stale {
			if dir != keep {
				os.RemoveAll(dir)
			}
		}
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], linksPrefix) {
			continue
		}
		ns := f[0]
		if pids, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := linksCmd("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	out, err = exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("ip link show: %w", err))...)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// "7: kwbl-a0@if6: <...> ..."
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, linksPrefix) {
			// Deleting one end of a veth deletes the pair; the pair may
			// already be gone with its namespace.
			if err := linksCmd("ip", "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
