// Package metrics serves Prometheus metrics for the kwikfs programs, with
// github.com/prometheus/client_golang: the serving of a registry on a TCP
// address (Server, NewRegistry), a table-driven way to write collectors of
// const metrics over a stats snapshot (Family, Set), and the collectors of
// the two servers (PrimaryCollector for kwik-primary, SecondaryCollector
// for kwik-secondary). The mount daemon's collector lives with the
// daemon, over its status.
//
// # Names
//
// Every family starts with its program's name: kwikfs_ for the mount
// daemon, kwik_primary_ and kwik_secondary_ for the servers; counters end
// in _total and every name says its unit (_bytes, _seconds). The Go
// runtime's figures (go_...) and the process's CPU time, memory and file
// descriptors (process_...) come from client_golang's own collectors in
// every registry NewRegistry makes.
//
// # Collection
//
// A collector takes one snapshot of the figures it exports per scrape and
// sends const metrics built from it, so that the figures of one scrape are
// consistent with each other as far as the snapshot is. A counter never
// goes down while its program runs; a labelled family may lack the label
// sets that have nothing yet to report (an error reply of a kind that
// never happened), as documented per family.
//
// # Serving
//
// Listen binds the address first, so that a program fails at start-up on
// an address it cannot use; Serve then answers GET /metrics through
// promhttp.HandlerFor until Close, which waits for the scrapes under way.
package metrics
