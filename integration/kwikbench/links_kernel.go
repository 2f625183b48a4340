package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// What the links table reads from the kernel around and during a read:
// UDP and tbf counters, per-link delivery in 10 ms slots, socket queues.

// linksCounters are the kernel counters sampled around a read.
type linksCounters struct {
	rcvbufRoot, sndbufNS           uint64
	dataDrops, ackDrops, dataBytes uint64
}

// counters reads the UDP counters of the root namespace and of A and B
// (through /proc/PID/net of a process in each: pidA, pidB) and the tbf
// counters of both ends of both links.
func (l *linksLab) counters(pidA, pidB int) linksCounters {
	var c linksCounters
	c.rcvbufRoot = linksUDPCounter("/proc/self/net/snmp", "RcvbufErrors")
	for _, pid := range []int{pidA, pidB} {
		c.sndbufNS += linksUDPCounter(fmt.Sprintf("/proc/%d/net/snmp", pid), "SndbufErrors")
	}
	for _, e := range []linksEnd{linkA, linkB} {
		d, _ := linksTBF("", e.hostDev)
		c.ackDrops += d
		d, sent := linksTBF(e.ns, e.nsDev)
		c.dataDrops += d
		c.dataBytes += sent
	}
	return c
}

// linksUDPCounter returns the Udp: field name of an snmp file, 0 if unreadable.
func linksUDPCounter(path, name string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == name && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// linksTBF returns the drops and bytes sent of the tbf qdisc
// on dev (in namespace ns, "" for the root one); zeros if unreadable.
func linksTBF(ns, dev string) (drops, bytes uint64) {
	args := []string{"-s", "-j", "qdisc", "show", "dev", dev}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("tc", args...).Output()
	if err != nil {
		return 0, 0
	}
	var qs []struct {
		Kind  string `json:"kind"`
		Bytes uint64 `json:"bytes"`
		Drops uint64 `json:"drops"`
	}
	if json.Unmarshal(out, &qs) != nil {
		return 0, 0
	}
	for _, q := range qs {
		if q.Kind == "tbf" {
			return q.Drops, q.Bytes
		}
	}
	return 0, 0
}

// linksSampler samples, every 10 ms, the bytes each link delivered to the
// root namespace (the root-side veth's rx_bytes: what passed the data
// direction's tbf) and, every 50 ms, the receive queues of the daemon's
// UDP sockets and the send queues of the servers' ones.
type linksSampler struct {
	done, finished chan struct{}
	// Written by the sampling goroutine, read after finished is closed.
	maxRx, maxTx      uint64
	dropsAt, dropsEnd uint64
	slots, starved    [2]int // 10 ms slots of each link, and those below half its rate
}

// linksStartSampler starts sampling; rates are the links' rates in bit/s
// (0: a link the read does not use).
func linksStartSampler(rates [2]float64, daemonPID int, serverPIDs ...int) *linksSampler {
	s := &linksSampler{done: make(chan struct{}), finished: make(chan struct{})}
	s.dropsAt = linksSockets(daemonPID).drops
	devs := [2]string{linkA.hostDev, linkB.hostDev}
	var last [2]uint64
	for i, d := range devs {
		last[i] = linksRxBytes(d)
	}
	go func() {
		defer close(s.finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		lastAt := time.Now()
		for tick := 0; ; tick++ {
			if tick%5 == 0 {
				d := linksSockets(daemonPID)
				s.maxRx = max(s.maxRx, d.maxRx)
				for _, pid := range serverPIDs {
					if pid != 0 {
						s.maxTx = max(s.maxTx, linksSockets(pid).maxTx)
					}
				}
				s.dropsEnd = d.drops
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			now := time.Now()
			secs := now.Sub(lastAt).Seconds()
			lastAt = now
			for i, d := range devs {
				b := linksRxBytes(d)
				if rates[i] > 0 {
					s.slots[i]++
					if float64(b-last[i])*8/secs < rates[i]/2 {
						s.starved[i]++
					}
				}
				last[i] = b
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the daemon's largest receive queue,
// the servers' largest send queue, the daemon's socket drops meanwhile and,
// per link, the fraction of 10 ms slots in which it carried less than half
// its rate (-1 for a link not used).
func (s *linksSampler) stop() (maxRx, maxTx, drops uint64, starved [2]float64) {
	close(s.done)
	<-s.finished
	for i := range starved {
		starved[i] = -1
		if s.slots[i] > 0 {
			starved[i] = float64(s.starved[i]) / float64(s.slots[i])
		}
	}
	return s.maxRx, s.maxTx, s.dropsEnd - s.dropsAt, starved
}

// linksRxBytes returns the bytes dev received, 0 if unreadable.
func linksRxBytes(dev string) uint64 {
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/rx_bytes")
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

type linksSockSum struct{ maxRx, maxTx, drops uint64 }

// linksSockets reads the UDP sockets of pid (the socket inodes of its open
// files, found in /proc/PID/net/udp and udp6, which show the process's
// namespace): the largest receive and send queue and the sum of the drops.
func linksSockets(pid int) linksSockSum {
	var s linksSockSum
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(t, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		// sl local rem st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ref pointer drops
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 13 || !inodes[f[9]] {
				continue
			}
			txS, rxS, _ := strings.Cut(f[4], ":")
			tx, _ := strconv.ParseUint(txS, 16, 64)
			rx, _ := strconv.ParseUint(rxS, 16, 64)
			drops, _ := strconv.ParseUint(f[12], 10, 64)
			s.maxRx, s.maxTx = max(s.maxRx, rx), max(s.maxTx, tx)
			s.drops += drops
		}
	}
	return s
}
