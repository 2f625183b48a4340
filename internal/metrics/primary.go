package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/transfer"
)

// PrimaryServer is the label value of the primary itself in the families
// labelled server (the others name a secondary by its address).
const PrimaryServer = "primary"

// PrimaryFamilies are the families of a PrimaryCollector. The label
// secondary (and server, for a secondary) is a secondary's address as the
// primary's --secondary names it; every secondary has its label sets from
// the start.
var PrimaryFamilies = []Family{
	Gauge("kwik_primary_sessions", "Client sessions being served now."),
	Counter("kwik_primary_sessions_total", "Client sessions accepted."),
	Counter("kwik_primary_requests_total", "Requests received, by type: stat, list, readlink, manifest, read, files, report_corrupt, path_report, or invalid (not decoded, or not received whole).", "op"),
	Counter("kwik_primary_request_errors_total", "Error replies, by request type (op) and status (not_found, outside_root, stale, bad_request, too_large, unavailable, ...); only the pairs that occurred.", "op", "status"),
	Counter("kwik_primary_aborted_replies_total", "Request streams reset because the request or its reply could not be completed."),
	Counter("kwik_primary_read_data_bytes_total", "File data bytes the primary wrote itself into READ replies, hedged copies included (not those delegated to secondaries)."),
	Counter("kwik_primary_files_data_bytes_total", "File data bytes (first chunks) of the FILES replies sent whole."),
	Counter("kwik_primary_delivered_bytes_total", "READ reply bytes clients received first from each server (primary, or a secondary's address), counted once a reply was received whole: what PATH_REPORT credits to the paths, over all sessions.", "server"),
	Counter("kwik_primary_delegated_bytes_total", "READ reply bytes assigned to the secondary, sent as SEND_CHUNK commands, reassignments and hedges included.", "secondary"),
	Counter("kwik_primary_reassigned_bytes_total", "Bytes taken back from the secondary (its path lost, or a unit late) and assigned again.", "secondary"),
	Counter("kwik_primary_hedged_bytes_total", "Bytes given to the server as tail hedges, copies of another path's unit.", "server"),
	Counter("kwik_primary_late_units_total", "Units of the secondary not delivered by their deadline.", "secondary"),
	Counter("kwik_primary_strikes_total", "Corrupt chunks clients reported from the secondary.", "secondary"),
	Counter("kwik_primary_misses_total", "Late units of the secondary of which nothing arrived.", "secondary"),
	Gauge("kwik_primary_secondary_paths", "Paths to the secondary up now, over all sessions.", "secondary"),
	Counter("kwik_primary_secondary_paths_added_total", "Paths the clients opened to the secondary.", "secondary"),
	Counter("kwik_primary_secondary_paths_lost_total", "Paths to the secondary that could not be added or failed later.", "secondary"),
	Counter("kwik_primary_multipath_reads_total", "READ replies divided between the primary and secondaries."),
	Counter("kwik_primary_corrupt_reports_total", "Well-formed REPORT_CORRUPT requests: chunks clients found corrupt."),
	Counter("kwik_primary_background_reads_held_total", "Background READs held back, at least once, while a foreground READ of their session was served."),
	Gauge("kwik_primary_reply_budget_bytes", "Bytes of the LIST, MANIFEST and FILES reply budget held now."),
	Gauge("kwik_primary_reply_budget_limit_bytes", "Size of the LIST, MANIFEST and FILES reply budget."),
	Counter("kwik_primary_reply_budget_waits_total", "LIST, MANIFEST and FILES requests that waited for their share of the reply budget, once per wait."),
	Counter("kwik_primary_refusals_total", "Connections, sessions and replies refused or cut off, by reason: session_limit, source_session_limit, source_setup_limit (connections closed at a limit), setup_timeout, setup_failed (kwik handshakes), client_certificate (TLS handshakes refused over the client's certificate), control_queue_overflow (sessions whose client stopped reading control frames), reply_timeout (replies not sent whole in time).", "reason"),
	Gauge("kwik_primary_manifest_cache_entries", "Manifests in the cache."),
	Gauge("kwik_primary_manifest_cache_bytes", "Memory the cached manifests and their encoded MANIFEST replies take, as the cache's bound counts it."),
	Counter("kwik_primary_manifest_cache_hits_total", "Manifest lookups answered from the cache."),
	Counter("kwik_primary_manifest_cache_misses_total", "Manifest lookups not answered from the cache, which hashed the file."),
	Counter("kwik_primary_manifests_computed_total", "Manifests computed by hashing a file (FILES of files of one chunk included)."),
	Counter("kwik_primary_manifest_hash_waits_total", "Manifest computations that waited for a hashing slot."),
}

// PrimaryCollector collects the figures of a kwik-primary: its Primary's
// counters, coordinator and catalog, and its kwik Listener's. It is safe
// for concurrent use.
type PrimaryCollector struct {
	p   *server.Primary
	ln  *kwik.Listener
	set *Set
}

var _ prometheus.Collector = (*PrimaryCollector)(nil)

// NewPrimaryCollector returns the collector of p serving on ln (nil: no
// listener figures, the refusals at the listener stay 0).
func NewPrimaryCollector(p *server.Primary, ln *kwik.Listener) *PrimaryCollector {
	return &PrimaryCollector{p: p, ln: ln, set: NewSet(PrimaryFamilies...)}
}

// Describe sends the descriptions of PrimaryFamilies.
func (c *PrimaryCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect sends the figures of one snapshot of each source.
func (c *PrimaryCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.set.Emitter(ch)
	st := c.p.Stats()
	co := c.p.CoordinatorStats()
	cat := c.p.Catalog().Stats()
	var ls kwik.ListenerStats
	if c.ln != nil {
		ls = c.ln.Stats()
	}

	e.Emit("kwik_primary_sessions", float64(st.ActiveSessions))
	e.Emit("kwik_primary_sessions_total", float64(st.Sessions))
	for op := range transfer.Op(transfer.NumOps) {
		if op == 0 || op.Valid() || op == transfer.OpReportCorrupt || op == transfer.OpPathReport {
			e.Emit("kwik_primary_requests_total", float64(st.Requests[op]), opLabel(op))
		}
		for status, n := range st.ErrorsBy[op] {
			if n > 0 {
				e.Emit("kwik_primary_request_errors_total", float64(n), opLabel(op), statusLabels[status])
			}
		}
	}
	e.Emit("kwik_primary_aborted_replies_total", float64(st.Aborted))
	e.Emit("kwik_primary_read_data_bytes_total", float64(st.DataBytes))
	e.Emit("kwik_primary_files_data_bytes_total", float64(st.FilesBytes))

	// Per server: the primary ("" in the coordinator's counters), then
	// each secondary configured, whether or not it had a path yet.
	byAddr := make(map[string]server.PathCounters, len(co.Paths))
	for _, pc := range co.Paths {
		byAddr[pc.Addr] = pc
	}
	prim := byAddr[""]
	e.Emit("kwik_primary_delivered_bytes_total", float64(uint64(st.SoleReadBytes)+prim.DeliveredBytes), PrimaryServer)
	e.Emit("kwik_primary_hedged_bytes_total", float64(prim.HedgedBytes), PrimaryServer)
	for _, addr := range c.p.Secondaries() {
		pc := byAddr[addr]
		e.Emit("kwik_primary_delivered_bytes_total", float64(pc.DeliveredBytes), addr)
		e.Emit("kwik_primary_hedged_bytes_total", float64(pc.HedgedBytes), addr)
		e.Emit("kwik_primary_delegated_bytes_total", float64(pc.AssignedBytes), addr)
		e.Emit("kwik_primary_reassigned_bytes_total", float64(pc.ReassignedBytes), addr)
		e.Emit("kwik_primary_late_units_total", float64(pc.LateUnits), addr)
		e.Emit("kwik_primary_strikes_total", float64(pc.Strikes), addr)
		e.Emit("kwik_primary_misses_total", float64(pc.Misses), addr)
		e.Emit("kwik_primary_secondary_paths", float64(pc.PathsUp), addr)
		e.Emit("kwik_primary_secondary_paths_added_total", float64(pc.PathsAdded), addr)
		e.Emit("kwik_primary_secondary_paths_lost_total", float64(pc.PathsLost), addr)
	}
	e.Emit("kwik_primary_multipath_reads_total", float64(co.MultipathReads))
	e.Emit("kwik_primary_corrupt_reports_total", float64(st.CorruptReports))
	e.Emit("kwik_primary_background_reads_held_total", float64(st.BackgroundHeld))

	e.Emit("kwik_primary_reply_budget_bytes", float64(st.ReplyBudgetInUse))
	e.Emit("kwik_primary_reply_budget_limit_bytes", float64(st.ReplyBudget))
	e.Emit("kwik_primary_reply_budget_waits_total", float64(st.BudgetWaits))

	r := ls.Refused
	for _, x := range []struct {
		reason string
		n      uint64
	}{
		{"session_limit", r.SessionLimit},
		{"source_session_limit", r.SourceSessionLimit},
		{"source_setup_limit", r.SourceSetupLimit},
		{"setup_timeout", r.SetupTimeouts},
		{"setup_failed", r.SetupFailures},
		{"client_certificate", r.ClientCertificates},
		{"control_queue_overflow", ls.ControlQueueOverflows},
		{"reply_timeout", uint64(st.ReplyTimeouts)},
	} {
		e.Emit("kwik_primary_refusals_total", float64(x.n), x.reason)
	}

	e.Emit("kwik_primary_manifest_cache_entries", float64(cat.CachedManifests))
	e.Emit("kwik_primary_manifest_cache_bytes", float64(cat.CachedBytes))
	e.Emit("kwik_primary_manifest_cache_hits_total", float64(cat.ManifestCacheHits))
	e.Emit("kwik_primary_manifest_cache_misses_total", float64(cat.ManifestCacheMisses))
	e.Emit("kwik_primary_manifests_computed_total", float64(cat.ManifestsComputed))
	e.Emit("kwik_primary_manifest_hash_waits_total", float64(cat.HashWaits))
}
