package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
)

// SecondaryFamilies are the families of a SecondaryCollector.
var SecondaryFamilies = []Family{
	Gauge("kwik_secondary_paths", "Client paths open now."),
	Counter("kwik_secondary_paths_total", "Client paths admitted."),
	Counter("kwik_secondary_refusals_total", "Paths refused, by reason: token_missing, token_invalid, token_expired, token_wrong_secondary, token_reused (the path token), session_limit, source_session_limit, source_setup_limit (connections closed at a limit), setup_timeout, setup_failed (kwik handshakes), client_certificate (TLS handshakes refused over the client's certificate).", "reason"),
	Counter("kwik_secondary_write_stalled_paths_total", "Paths closed because their client took no data for the write timeout."),
	Counter("kwik_secondary_commands_total", "Commands handled, by outcome: completed, bad_command, outside_root, not_found, short_file, failed.", "outcome"),
	Gauge("kwik_secondary_commands_active", "Commands being handled now."),
	Counter("kwik_secondary_refused_commands_total", "Relayed commands refused before they were handled, by reason: invalid (malformed, forged or misdirected), replayed, expired.", "reason"),
	Counter("kwik_secondary_sent_bytes_total", "File bytes written into clients' streams."),
	Counter("kwik_secondary_empty_answers_total", "Commands answered with an empty data stream, nothing written for them."),
}

// SecondaryCollector collects the figures of a kwik-secondary: its
// Secondary's counters and its kwik Secondary's. It is safe for concurrent
// use.
type SecondaryCollector struct {
	s   *server.Secondary
	ks  *kwik.Secondary
	set *Set
}

var _ prometheus.Collector = (*SecondaryCollector)(nil)

// NewSecondaryCollector returns the collector of s serving the commands of
// ks.
func NewSecondaryCollector(s *server.Secondary, ks *kwik.Secondary) *SecondaryCollector {
	return &SecondaryCollector{s: s, ks: ks, set: NewSet(SecondaryFamilies...)}
}

// Describe sends the descriptions of SecondaryFamilies.
func (c *SecondaryCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect sends the figures of one snapshot of each source.
func (c *SecondaryCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.set.Emitter(ch)
	ks := c.ks.Stats()
	st := c.s.Stats()

	e.Emit("kwik_secondary_paths", float64(ks.PathsOpen))
	e.Emit("kwik_secondary_paths_total", float64(ks.PathsAdmitted))
	r := ks.Refused
	for _, x := range []struct {
		reason string
		n      uint64
	}{
		{"token_missing", ks.TokensMissing},
		{"token_invalid", ks.TokensInvalid},
		{"token_expired", ks.TokensExpired},
		{"token_wrong_secondary", ks.TokensWrongSecondary},
		{"token_reused", ks.TokensReused},
		{"session_limit", r.SessionLimit},
		{"source_session_limit", r.SourceSessionLimit},
		{"source_setup_limit", r.SourceSetupLimit},
		{"setup_timeout", r.SetupTimeouts},
		{"setup_failed", r.SetupFailures},
		{"client_certificate", r.ClientCertificates},
	} {
		e.Emit("kwik_secondary_refusals_total", float64(x.n), x.reason)
	}
	e.Emit("kwik_secondary_write_stalled_paths_total", float64(ks.PathsWriteStalled))

	for _, x := range []struct {
		outcome string
		n       int64
	}{
		{"completed", st.Completed},
		{"bad_command", st.BadCommands},
		{"outside_root", st.OutsideRoot},
		{"not_found", st.NotFound},
		{"short_file", st.ShortFile},
		{"failed", st.Failed},
	} {
		e.Emit("kwik_secondary_commands_total", float64(x.n), x.outcome)
	}
	e.Emit("kwik_secondary_commands_active", float64(st.Active))
	for _, x := range []struct {
		reason string
		n      uint64
	}{
		{"invalid", ks.CommandsRefused},
		{"replayed", ks.CommandsReplayed},
		{"expired", ks.CommandsExpired},
	} {
		e.Emit("kwik_secondary_refused_commands_total", float64(x.n), x.reason)
	}
	e.Emit("kwik_secondary_sent_bytes_total", float64(st.BytesSent))
	e.Emit("kwik_secondary_empty_answers_total", float64(ks.EmptyAnswers))
}
