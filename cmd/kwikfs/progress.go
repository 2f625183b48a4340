package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Poll intervals of the progress displays of prefetch and get: a terminal
// line is redrawn every termEvery; other outputs get one line every
// logEvery.
const (
	termEvery = 250 * time.Millisecond
	logEvery  = time.Second
)

// liveLine draws progress lines on out: on a terminal each line replaces
// the last in place (padded over what was longer), elsewhere each is a
// line of its own.
type liveLine struct {
	out   io.Writer
	term  bool
	width int // of the line drawn last on a terminal; 0: none pending
}

// every is how often the line should be redrawn.
func (l *liveLine) every() time.Duration {
	if l.term {
		return termEvery
	}
	return logEvery
}

// draw shows line.
func (l *liveLine) draw(line string) {
	if !l.term {
		fmt.Fprintln(l.out, line)
		return
	}
	pad := max(l.width-len(line), 0)
	fmt.Fprintf(l.out, "\r%s%s", line, strings.Repeat(" ", pad))
	l.width = max(len(line), 1)
}

// end finishes the line drawn in place, if any, so that what is printed
// next starts on a line of its own.
func (l *liveLine) end() {
	if l.term && l.width > 0 {
		fmt.Fprintln(l.out)
	}
	l.width = 0
}

// barWidth is the number of cells of the progress bar.
const barWidth = 24

// progressBar draws the fraction frac (clamped to [0, 1]) done as a bar of
// barWidth cells, e.g. "[======>                 ]".
func progressBar(frac float64) string {
	frac = min(max(frac, 0), 1)
	cells := int(frac * barWidth)
	bar := strings.Repeat("=", cells)
	if cells < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-cells-1)
	}
	return "[" + bar + "]"
}
