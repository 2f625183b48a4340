package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CPU and memory accounting of processes and of the machine, from /proc.
// Every table that reports CPU seconds per GiB reads them here.

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture (sysconf(_SC_CLK_TCK) would need cgo).
const clkTck = 100

// procStat is what the bench uses of one /proc/PID/stat.
type procStat struct {
	ppid, pgrp int
	ticks      int64 // utime+stime of all the process's threads, in 1/clkTck s
}

// readProcStat reads /proc/PID/stat of pid. It fails when the process is
// gone or the file does not parse.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime ... (fields 14 and 15 of proc(5) are
	// utime and stime); comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no (comm)", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after (comm)", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return procStat{ppid: ppid, pgrp: pgrp, ticks: utime + stime}, nil
}

func ticksToDuration(ticks int64) time.Duration { return time.Duration(ticks) * time.Second / clkTck }

// processCPU returns the CPU time (utime+stime, all threads) each of pids
// used so far, the process alone: not its children. A pid of 0, or one
// whose /proc/PID/stat cannot be read, counts 0.
func processCPU(pids ...int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		if pid == 0 {
			continue
		}
		if s, err := readProcStat(pid); err == nil {
			out[i] = ticksToDuration(s.ticks)
		}
	}
	return out
}

// proc names a process whose CPU time is measured, with its process
// group and descendants (see groupCPU).
type proc struct {
	name string
	pid  int
}

// groupCPU returns, for each of procs, the CPU time (utime+stime, all
// threads) used so far by the process, the members of its process group
// and their descendants, as /proc shows them now: sshfs's ssh and sshd's
// per-connection processes count for them. Processes that exited are not
// counted; it fails if one of procs itself is gone.
func groupCPU(procs []proc) ([]time.Duration, error) {
	all := map[int]procStat{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		s, err := readProcStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		all[pid] = s
	}
	out := make([]time.Duration, len(procs))
	for i, p := range procs {
		in := map[int]bool{p.pid: true}
		for pid, s := range all {
			if s.pgrp == p.pid {
				in[pid] = true
			}
		}
		for grown := true; grown; {
			grown = false
			for pid, s := range all {
				if !in[pid] && in[s.ppid] {
					in[pid], grown = true, true
				}
			}
		}
		if _, ok := all[p.pid]; !ok {
			return nil, fmt.Errorf("process %d (%s) is gone", p.pid, p.name)
		}
		var ticks int64
		for pid := range in {
			ticks += all[pid].ticks
		}
		out[i] = ticksToDuration(ticks)
	}
	return out, nil
}

// rusageCPU returns the user+system CPU time of an exited child (its
// rusage: it and the children it waited for).
func rusageCPU(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }

// gib returns n bytes in GiB, the unit of the CPU-per-GiB figures.
func gib(n int64) float64 { return float64(n) / (1 << 30) }

// vmHWM returns the peak resident set size of process pid in KiB.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// machineCPU is the first line of /proc/stat (all CPUs), in ticks.
type machineCPU struct{ total, idle, softirq uint64 }

// readMachineCPU reads the first line of /proc/stat; zeros if unreadable.
func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var s machineCPU
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		s.total += n
		switch i {
		case 3, 4:
			s.idle += n
		case 6:
			s.softirq = n
		}
	}
	return s
}

// since returns the fractions of the machine's CPU time between before
// and s spent outside idle and iowait (busy) and in softirq; zeros when
// no tick passed.
func (s machineCPU) since(before machineCPU) (busy, softirq float64) {
	total := float64(s.total - before.total)
	if total == 0 {
		return 0, 0
	}
	return 1 - float64(s.idle-before.idle)/total, float64(s.softirq-before.softirq) / total
}

// loadAvgFields returns the fields of /proc/loadavg (1, 5 and 15 minute
// load averages first); nil if unreadable.
func loadAvgFields() []string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// loadAvg returns the 1, 5 and 15 minute load averages, as uptime prints
// them; "?" if unreadable.
func loadAvg() string {
	f := loadAvgFields()
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// load1 returns the 1-minute load average; 0 if unreadable.
func load1() float64 {
	f := loadAvgFields()
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// uptime returns what uptime(1) prints (time, users, load averages); "?"
// if it fails.
func uptime() string {
	out, err := exec.Command("uptime").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
