package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/control"
)

// runPrefetch hands a prefetch job to the daemon of the mount that holds
// the paths and follows it with a progress bar until it ends.
func runPrefetch(ctx context.Context, args []string) error {
	fl := cli.NewFlagSet("kwikfs prefetch", prefetchHelp)
	detach := fl.Bool("detach", false, "return as soon as the daemon has the job (follow it with kwikfs status)")
	cancelID := fl.Uint64("cancel", 0, "cancel job `ID` of the mount holding PATH instead of starting a job")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return cli.Usagef("prefetch needs at least one PATH inside a kwikfs mount")
	}
	mnt, err := control.FindMount(fl.Arg(0))
	if err != nil {
		return err
	}
	var rels []string
	for _, p := range fl.Args() {
		m, err := control.FindMount(p)
		if err != nil {
			return err
		}
		if m.Root != mnt.Root {
			return cli.Usagef("%s and %s are on different kwikfs mounts", fl.Arg(0), p)
		}
		rel, err := m.Rel(p)
		if err != nil {
			return err
		}
		rels = append(rels, rel)
	}
	c := control.NewClient(mnt.Socket)
	defer c.Close()

	if *cancelID != 0 {
		p, err := c.CancelPrefetch(ctx, *cancelID)
		if err != nil {
			return fmt.Errorf("cancel job %d: %w", *cancelID, err)
		}
		fmt.Printf("job %d %s: %s\n", p.ID, p.State, summary(p))
		return nil
	}
	p, err := c.StartPrefetch(ctx, rels)
	if err != nil {
		return fmt.Errorf("start prefetch: %w", err)
	}
	if *detach {
		fmt.Printf("prefetch job %d started in the daemon of %s; `kwikfs status %s` shows it\n", p.ID, mnt.Root, mnt.Root)
		return nil
	}
	p, err = follow(ctx, c, p, os.Stderr, cli.IsTerminal(os.Stderr))
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "job %d goes on in the daemon; `kwikfs prefetch --cancel %d %s` cancels it\n", p.ID, p.ID, mnt.Root)
		return err
	}
	if err != nil {
		return err
	}
	switch p.State {
	case control.JobDone:
		return nil
	case control.JobCanceled:
		return fmt.Errorf("job %d was canceled", p.ID)
	default:
		return fmt.Errorf("job %d failed: %d files or directories not fetched, first: %s", p.ID, p.FilesFailed, p.Error)
	}
}

// follow polls job p until it ends, drawing its progress on out: redrawn
// in place on a terminal, one line per second otherwise. It returns the
// final progress, or the last one seen and ctx's error.
func follow(ctx context.Context, c *control.Client, p control.PrefetchJob, out io.Writer, term bool) (control.PrefetchJob, error) {
	line := &liveLine{out: out, term: term}
	t := time.NewTicker(line.every())
	defer t.Stop()
	for {
		line.draw(progressLine(p))
		if p.Ended() {
			line.end()
			return p, nil
		}
		select {
		case <-ctx.Done():
			line.end()
			return p, ctx.Err()
		case <-t.C:
		}
		next, err := c.Prefetch(ctx, p.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			line.end()
			return p, fmt.Errorf("follow job %d: %w", p.ID, err)
		}
		p = next
	}
}

// progressLine is one line describing p: a bar, the percentage of bytes,
// files and bytes done of the totals, the rate and the time left.
func progressLine(p control.PrefetchJob) string {
	if p.Scanning {
		return fmt.Sprintf("job %d scanning: %d files, %s so far", p.ID, p.FilesTotal, humanBytes(p.BytesTotal))
	}
	frac := 1.0
	if p.BytesTotal > 0 {
		frac = float64(p.BytesDone) / float64(p.BytesTotal)
	} else if p.FilesTotal > 0 {
		frac = float64(p.FilesDone+p.FilesFailed) / float64(p.FilesTotal)
	}
	frac = min(max(frac, 0), 1)
	line := fmt.Sprintf("job %d %s %3.0f%%  %d/%d files  %s/%s  %s/s", p.ID, progressBar(frac), 100*frac,
		p.FilesDone, p.FilesTotal, humanBytes(p.BytesDone), humanBytes(p.BytesTotal), humanBytes(int64(p.Rate)))
	if p.FilesFailed > 0 {
		line += fmt.Sprintf("  %d failed", p.FilesFailed)
	}
	switch {
	case p.Ended():
		line += "  " + string(p.State)
		if p.BytesFetched < p.BytesDone {
			line += fmt.Sprintf(" (%s fetched, the rest was in the cache)", humanBytes(p.BytesFetched))
		}
	case p.ETASeconds > 0:
		line += "  ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	return line
}

// summary describes p in a few words.
func summary(p control.PrefetchJob) string {
	return fmt.Sprintf("%d/%d files, %s/%s", p.FilesDone, p.FilesTotal, humanBytes(p.BytesDone), humanBytes(p.BytesTotal))
}

// printPrefetchJobs prints one row per job for `kwikfs status`.
func printPrefetchJobs(out io.Writer, jobs []control.PrefetchJob) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "prefetch\tpaths\tstate\tfiles\tbytes\tfetched\trate\t\n")
	for _, p := range jobs {
		paths := make([]string, len(p.Paths))
		for i, s := range p.Paths {
			paths[i] = "/" + s
		}
		state := string(p.State)
		if p.Scanning {
			state += " (scanning)"
		}
		if p.Resumed > 0 {
			state += fmt.Sprintf(" (resumed %dx)", p.Resumed)
		}
		files := fmt.Sprintf("%d/%d", p.FilesDone, p.FilesTotal)
		if p.FilesFailed > 0 {
			files += fmt.Sprintf(" (%d failed)", p.FilesFailed)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s/%s\t%s\t%s/s\t\n", p.ID, strings.Join(paths, ", "), state, files,
			humanBytes(p.BytesDone), humanBytes(p.BytesTotal), humanBytes(p.BytesFetched), humanBytes(int64(p.Rate)))
	}
	w.Flush()
	for _, p := range jobs {
		if p.Error != "" {
			fmt.Fprintf(out, "job %d: %s\n", p.ID, p.Error)
		}
	}
}
