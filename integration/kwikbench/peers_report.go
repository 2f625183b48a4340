package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

// The loopback comparison's report: the throughput and CPU tables and
// the notes under them.

// results keeps the figures of each row, in the order rows first appear.
type results struct {
	order []string
	vals  map[string][]float64
}

func (r *results) add(name string, v float64) {
	if r.vals == nil {
		r.vals = map[string][]float64{}
	}
	if _, ok := r.vals[name]; !ok {
		r.order = append(r.order, name)
	}
	r.vals[name] = append(r.vals[name], v)
}

func (r *results) median(name string) float64 { return median(r.vals[name]) }

// print writes r to stdout as a table headed title: a row by name in
// first-added order, with its median and every figure in format.
func (r *results) print(title, format string) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%s\tmedian\truns\t\n", title)
	for _, row := range r.order {
		fmt.Fprintf(w, "%s\t"+format+"\t%s\t\n", row, r.median(row), r.runs(row, format))
	}
	return w.Flush()
}

func (r *results) runs(name, format string) string {
	var s []string
	for _, v := range r.vals[name] {
		s = append(s, fmt.Sprintf(format, v))
	}
	return strings.Join(s, " ")
}

// print writes the throughput and CPU tables.
func (e *peersEnv) print(loadStart, loadEnd string) error {
	fmt.Printf("loopback, cold cat of a %d MiB file (%d KiB reads, page cache dropped first, fresh mounts), median of %d rounds; load average (1/5/15 min) at start %s, at end %s\n",
		e.c.size>>20, peersReadBuf>>10, max(e.c.runs, 1), loadStart, loadEnd)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "read\tmedian MiB/s\truns\tthis / kwikfs\tkwikfs / this\ttarget\tmet\t\n")
	kwik := e.tput.median(rowOnePath)
	for _, row := range []string{rowDisk, rowOnePath, rowThreePath, rowFallback, rowSSHFS, rowRclone, rowPageCache, rowStore} {
		v := e.tput.median(row)
		ratio, inverse, target, met := "", "", "", ""
		if row != rowOnePath {
			ratio, inverse = fmt.Sprintf("%.2f", v/kwik), fmt.Sprintf("%.2f", kwik/v)
		}
		if t, ok := peerTargets[row]; ok {
			target, met = fmt.Sprintf("kwikfs / this >= %.2f", t), yesNo(kwik/v >= t)
		}
		if row == rowStore {
			target, met = fmt.Sprintf(">= %d MiB/s", storeTargetMiB), yesNo(v >= storeTargetMiB)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", row, v, e.tput.runs(row, "%.0f"), ratio, inverse, target, met)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println()
	if err := e.cpu.print("CPU s per GiB read (utime+stime)", "%.2f"); err != nil {
		return err
	}
	fmt.Println("(on loopback the kernel delivers a datagram or segment to the receiving socket in the sender's system call, so a sender's CPU includes part of its receiver's network stack; reader: the child process's rusage; others: utime+stime deltas of the process, its process group and their descendants)")
	fmt.Printf("(manifest: CPU of the primary during the first open of the file on a fresh primary, page cache dropped, per GiB of file; the open took %s s)\n",
		joinFloats(e.openSecs, "%.2f"))
	fmt.Printf("(store re-read, by round: %s)\n", strings.Join(e.storeNotes, "; "))
	for _, ls := range e.shares {
		var s []string
		for _, p := range ls.shares {
			role := "secondary"
			if p.id == 0 {
				role = "primary"
			}
			s = append(s, fmt.Sprintf("path %d (%s, %s) %.1f%%", p.id, role, p.remote, 100*p.frac))
		}
		fmt.Printf("(%s: share of the bytes each path delivered first: %s)\n", ls.label, strings.Join(s, ", "))
	}
	if e.c.profileDir != "" {
		fmt.Printf("(profiles in %s: daemon.pprof and primary.pprof of a further 1-path cold read at %.0f MiB/s, daemon-store.pprof of its re-read from the store at %.0f MiB/s; go tool pprof -top -cum FILE)\n",
			e.c.profileDir, e.profiled[0], e.profiled[1])
	}
	return nil
}

func joinFloats(v []float64, format string) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf(format, x))
	}
	return strings.Join(s, " ")
}
