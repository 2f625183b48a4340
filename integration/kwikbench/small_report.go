package main

import (
	"fmt"
	"os"
	"text/tabwriter"
)

// The small-files bench's report: the rate table, the requests per file
// and the CPU time per 1000 files of cp -r.

// print writes the small-files tables for ops (smallOps' order).
func (e *smallEnv) print(ops []smallOp, loadStart, loadEnd string) error {
	t := e.tree
	fmt.Printf("small files on loopback: %d files of %d KiB in %d directories (%d entries), page cache, dentries and inodes dropped before each operation, fresh mounts (kwikfs: and caches), one kwik-primary for the whole run; medians of %d rounds; load average (1/5/15 min) at start %s, at end %s\n",
		len(t.files), smallFileSize>>10, t.dirs, t.entries(), max(e.c.runs, 1), loadStart, loadEnd)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "operation\tkwikfs files/s\truns\tsshfs files/s\truns\tkwikfs / sshfs\ttarget\tmet\t\n")
	for _, op := range ops {
		kwikRow, sshRow := "kwikfs "+op.name, "sshfs "+op.name
		kwik := e.rate.median(kwikRow)
		ssh, sshRuns, ratio := "-", "", "-"
		if !op.linked {
			v := e.rate.median(sshRow)
			ssh, sshRuns, ratio = fmt.Sprintf("%.0f", v), e.rate.runs(sshRow, "%.0f"), fmt.Sprintf("%.2f", kwik/v)
		}
		target, met := smallTarget(op, kwik, kwik/e.rate.median(sshRow))
		name := op.name
		if op.entries {
			name += " (entries/s)"
		}
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, kwik, e.rate.runs(kwikRow, "%.0f"), ssh, sshRuns, ratio, target, met)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("(sshfs: aes128-gcm, max_conns=4, as in the peers table; %v RTT: a linkemu relay, %v each way, no rate limit, in front of the same primary; entries: files and directories; checked every round: sha256 of every file cp -r and rsync -a copied, and the mode and mtime of every file rsync -a copied)\n\n",
		e.c.rtt, e.c.rtt/2)

	if err := e.calls.print("kwikfs cp -r on loopback, per file copied", "%.2f"); err != nil {
		return err
	}
	fmt.Println("(from the daemon's status before and after the copy: fs and client counters)")
	fmt.Println()
	if err := e.cpu.print("cp -r on loopback, CPU s per 1000 files (utime+stime)", "%.3f"); err != nil {
		return err
	}
	fmt.Println("(cp: its rusage; others: utime+stime deltas of the process, its process group and their descendants, from /proc)")
	return nil
}

// smallTarget returns op's target as the table prints it and whether
// kwikfs's rate and the ratio kwikfs / sshfs meet it; "-" and "" when op
// has none.
func smallTarget(op smallOp, rate, ratio float64) (target, met string) {
	switch {
	case op.ratio > 0 && op.minRate > 0:
		return fmt.Sprintf("kwikfs / sshfs >= %.1f, kwikfs >= %.0f/s", op.ratio, op.minRate), yesNo(ratio >= op.ratio && rate >= op.minRate)
	case op.ratio > 0:
		return fmt.Sprintf("kwikfs / sshfs >= %.1f", op.ratio), yesNo(ratio >= op.ratio)
	case op.minRate > 0:
		return fmt.Sprintf("kwikfs >= %.0f/s", op.minRate), yesNo(rate >= op.minRate)
	}
	return "-", ""
}
