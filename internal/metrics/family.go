package metrics

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Family describes one metric family of a collector.
type Family struct {
	Name string
	// Type is prometheus.CounterValue or prometheus.GaugeValue.
	Type prometheus.ValueType
	Help string
	// Labels are the names of the family's labels, in the order Emit
	// takes their values.
	Labels []string
}

// Counter returns the Family of a counter.
func Counter(name, help string, labels ...string) Family {
	return Family{Name: name, Type: prometheus.CounterValue, Help: help, Labels: labels}
}

// Gauge returns the Family of a gauge.
func Gauge(name, help string, labels ...string) Family {
	return Family{Name: name, Type: prometheus.GaugeValue, Help: help, Labels: labels}
}

// Set holds the families of one collector, made into descriptions. It is
// immutable once made, and safe for concurrent use.
type Set struct {
	order  []*prometheus.Desc
	byName map[string]setEntry
}

type setEntry struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

// NewSet returns the set of fams. Names must be distinct (a registry
// refuses a collector whose families are not).
func NewSet(fams ...Family) *Set {
	s := &Set{byName: make(map[string]setEntry, len(fams))}
	for _, f := range fams {
		d := prometheus.NewDesc(f.Name, f.Help, f.Labels, nil)
		s.order = append(s.order, d)
		s.byName[f.Name] = setEntry{desc: d, typ: f.Type}
	}
	return s
}

// Describe sends the description of every family of the set; it is a
// prometheus.Collector's Describe for a collector whose families are the
// set's.
func (s *Set) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.order {
		ch <- d
	}
}

// Emitter returns an Emitter sending the set's metrics to ch, the channel
// of a Collect call.
func (s *Set) Emitter(ch chan<- prometheus.Metric) Emitter { return Emitter{s: s, ch: ch} }

// Emitter sends const metrics of a Set's families to a Collect channel.
type Emitter struct {
	s  *Set
	ch chan<- prometheus.Metric
}

// Emit sends the sample v of the family name, with labelValues, one per
// label of the family (invalid UTF-8 in them is replaced by U+FFFD). An
// unknown name or a wrong number of values sends an invalid metric, which
// fails the scrape with the error.
func (e Emitter) Emit(name string, v float64, labelValues ...string) {
	ent, ok := e.s.byName[name]
	if !ok {
		err := fmt.Errorf("metric %s is not in the collector's set", name)
		e.ch <- prometheus.NewInvalidMetric(prometheus.NewInvalidDesc(err), err)
		return
	}
	for i, lv := range labelValues {
		labelValues[i] = strings.ToValidUTF8(lv, "\uFFFD")
	}
	m, err := prometheus.NewConstMetric(ent.desc, ent.typ, v, labelValues...)
	if err != nil {
		m = prometheus.NewInvalidMetric(ent.desc, err)
	}
	e.ch <- m
}
