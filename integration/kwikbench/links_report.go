package main

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// The links table's report: the kwikfs, reference and kernel-view tables.

// printLinksTables prints the two tables and the kernel's view of the
// median kwikfs runs.
func printLinksTables(c linksConfig, cases []linksCase, rounds [][]linksRound, uptimeStart, uptimeEnd string) {
	med := func(rs []linksRound, f func(linksRound) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	// medianRun returns the run of mode m with the median Mbit/s: its
	// shares, CPU and kernel counters are reported together.
	medianRun := func(rs []linksRound, m linksMode) linksRead {
		var v []linksRead
		for _, r := range rs {
			v = append(v, r.kw[m])
		}
		slices.SortFunc(v, func(a, b linksRead) int { return cmp.Compare(a.mbit, b.mbit) })
		return v[len(v)/2]
	}
	runs := len(rounds[0])
	fmt.Printf("uptime before: %s\n", uptimeStart)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "kwikfs, cold cat %d MiB, median of %d\tA alone Mbit/s\tB alone Mbit/s\tboth Mbit/s\tboth runs\tefficiency both/(A+B)\ttarget\tmet\tshare A / B %%\tCPU s/GiB A alone (daemon/primary)\tB alone (daemon/primary)\tboth (daemon/primary/secondary)\tload\t\n",
		c.size>>20, runs)
	for i, lc := range cases {
		rs := rounds[i]
		a := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyA].mbit })
		bb := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyB].mbit })
		both := med(rs, func(r linksRound) float64 { return r.kw[linksBoth].mbit })
		var bothRuns []string
		for _, r := range rs {
			bothRuns = append(bothRuns, fmt.Sprintf("%.0f", r.kw[linksBoth].mbit))
		}
		eff := both / (a + bb)
		mb := medianRun(rs, linksBoth)
		share := "-"
		if len(mb.delivered) == 2 {
			sum := float64(mb.delivered[0] + mb.delivered[1])
			share = fmt.Sprintf("%.0f / %.0f", 100*float64(mb.delivered[0])/sum, 100*float64(mb.delivered[1])/sum)
		}
		ma, mbB := medianRun(rs, linksOnlyA), medianRun(rs, linksOnlyB)
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.0f\t%s\t%.2f\t>= %.2f\t%s\t%s\t%.2f / %.2f\t%.2f / %.2f\t%.2f / %.2f / %.2f\t%s\t\n",
			lc.name, a, bb, both, strings.Join(bothRuns, " "), eff, lc.target, yesNo(eff >= lc.target), share,
			ma.cpuDaemon, ma.cpuPrimary, mbB.cpuDaemon, mbB.cpuPrimary, mb.cpuDaemon, mb.cpuPrimary, mb.cpuSecondary,
			linksLoadRange(rs))
	}
	w.Flush()
	fmt.Println()

	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "references, same links, median of %d\tcurl A Mbit/s\tcurl A / rate\taria2 both Mbit/s\taria2 / (A+B rate)\tkwikfs A alone / curl A\ttarget\tmet\tkwikfs both / aria2\tCPU s/GiB curl / nginx\taria2c / nginx\tload\t\n", runs)
	for i, lc := range cases {
		rs := rounds[i]
		cu := med(rs, func(r linksRound) float64 { return r.curl.mbit })
		ar := med(rs, func(r linksRound) float64 { return r.aria2.mbit })
		a := med(rs, func(r linksRound) float64 { return r.kw[linksOnlyA].mbit })
		both := med(rs, func(r linksRound) float64 { return r.kw[linksBoth].mbit })
		fmt.Fprintf(w, "%s\t%.0f\t%.3f\t%.0f\t%.3f\t%.2f\t>= 0.90\t%s\t%.2f\t%.2f / %.2f\t%.2f / %.2f\t%s\t\n", lc.name, cu, cu/float64(lc.mbitA),
			ar, ar/float64(lc.mbitA+lc.mbitB), a/cu, yesNo(a/cu >= 0.9), both/ar,
			med(rs, func(r linksRound) float64 { return r.curl.cpuClient }), med(rs, func(r linksRound) float64 { return r.curl.cpuNginx }),
			med(rs, func(r linksRound) float64 { return r.aria2.cpuClient }), med(rs, func(r linksRound) float64 { return r.aria2.cpuNginx }),
			linksLoadRange(rs))
	}
	w.Flush()
	fmt.Println()

	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "kernel view of the median kwikfs run\tMbit/s\tmachine busy %% (softirq)\tcores ours / others\treader CPU s/GiB\tlink bytes / capacity\t10 ms slots < half rate %% A / B\tRTT ms per path\tUDP RcvbufErrors client\tUDP SndbufErrors servers\ttbf drops data / acks\tdaemon rx queue max KiB (drops)\tserver tx queue max KiB\tfetch errors\t\n")
	for i, lc := range cases {
		for _, m := range []linksMode{linksOnlyA, linksOnlyB, linksBoth} {
			r := medianRun(rounds[i], m)
			var rtts []string
			for _, v := range r.rtt {
				rtts = append(rtts, fmt.Sprintf("%.1f", v))
			}
			var starved []string
			for _, v := range r.starved {
				if v < 0 {
					starved = append(starved, "-")
				} else {
					starved = append(starved, fmt.Sprintf("%.0f", 100*v))
				}
			}
			// Capacity of the links the mode uses, over the read's time.
			rate := map[linksMode]int64{linksOnlyA: lc.mbitA, linksOnlyB: lc.mbitB, linksBoth: lc.mbitA + lc.mbitB}[m]
			secs := float64(c.size) * 8 / (r.mbit * 1e6)
			util := float64(r.dataSent) * 8 / (float64(rate) * 1e6 * secs)
			fmt.Fprintf(w, "%s, %s\t%.0f\t%.0f (%.0f)\t%.2f / %.2f\t%.2f\t%.2f\t%s\t%s\t%d\t%d\t%d / %d\t%d (%d)\t%d\t%d\t\n", lc.name, m, r.mbit,
				100*r.busy, 100*r.softirq, r.oursCores, r.othersCores, r.cpuReader, util, strings.Join(starved, " / "), strings.Join(rtts, " / "),
				r.rcvbufErrs, r.sndbufErrs, r.dataDrops, r.ackDrops, r.maxRxQueue>>10, r.sockDrops, r.maxTxQueue>>10, r.fetchErrors)
		}
	}
	w.Flush()
	fmt.Printf("(CPU s/GiB: user+system CPU seconds of the process during the read, per GiB read; a sender's system time includes\n" +
		" veth and tbf softirq work the kernel runs in its context. Machine busy: both cores, /proc/stat; cores ours: daemon, servers\n" +
		" of the read and reader; others: the rest (other processes, kernel threads such as writeback). Link bytes: what the data\n" +
		" direction's tbf sent, over the shaped capacity for the read's time. Load: 1-minute load average before each kwikfs read,\n" +
		" min-max over the case's rounds.)\n")
	fmt.Printf("uptime after: %s\n", uptimeEnd)
}

// linksLoadRange returns the range of the load averages of rs's kwikfs reads.
func linksLoadRange(rs []linksRound) string {
	lo, hi := -1.0, 0.0
	for _, r := range rs {
		for _, k := range r.kw {
			if lo < 0 || k.load < lo {
				lo = k.load
			}
			hi = max(hi, k.load)
		}
	}
	return fmt.Sprintf("%.1f-%.1f", lo, hi)
}
