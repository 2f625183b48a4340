// Package metricstest helps test collectors made with package metrics
// against exact expected output, with client_golang's testutil.
package metricstest

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kwikfs/kwikfs/internal/metrics"
)

// Exposition returns samples, lines of the text exposition format
// ("name{label=\"v\"} value", blank lines and indentation ignored), as a
// whole exposition: each family's lines preceded by its HELP and TYPE
// lines, taken from fams. Samples of a family must be contiguous; a
// sample of a family not in fams gets no HELP or TYPE line (and so fails
// a comparison).
func Exposition(fams []metrics.Family, samples string) string {
	byName := make(map[string]metrics.Family, len(fams))
	for _, f := range fams {
		byName[f.Name] = f
	}
	var b strings.Builder
	last := ""
	sc := bufio.NewScanner(strings.NewReader(samples))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if f, ok := byName[name]; ok && name != last {
			typ := "gauge"
			if f.Type == prometheus.CounterValue {
				typ = "counter"
			}
			help := strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(f.Help)
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		}
		last = name
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// Compare checks that c collects exactly the samples given (see
// Exposition) of the families they name: each of those families must have
// exactly these label sets and values, and no other. Families c collects
// that samples do not name are not compared.
func Compare(c prometheus.Collector, fams []metrics.Family, samples string) error {
	var names []string
	seen := make(map[string]bool)
	sc := bufio.NewScanner(strings.NewReader(samples))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return testutil.CollectAndCompare(c, strings.NewReader(Exposition(fams, samples)), names...)
}
