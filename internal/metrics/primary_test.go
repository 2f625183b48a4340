package metrics_test

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/internal/metrics/metricstest"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
	"github.com/kwikfs/kwikfs/transfer"
)

// expand replaces each KEY of kv (pairs) in s by its value.
func expand(s string, kv ...any) string {
	for i := 0; i+1 < len(kv); i += 2 {
		var v string
		switch x := kv[i+1].(type) {
		case string:
			v = x
		case int:
			v = strconv.Itoa(x)
		default:
			panic("expand: value of " + kv[i].(string))
		}
		s = strings.ReplaceAll(s, kv[i].(string), v)
	}
	return s
}

// TestPrimaryCollectorRequests serves a known series of requests from a
// primary without secondaries and collects its figures: requests and
// errors by type, the data bytes of READ and FILES replies, the manifest
// cache, sessions once the client has gone.
func TestPrimaryCollectorRequests(t *testing.T) {
	const cs = transfer.MinChunkSize
	const size = 3*cs + 5
	root := t.TempDir()
	writeRandom(t, root, "f", size, 1)
	writeRandom(t, root, "d/a", 10, 2)
	writeRandom(t, root, "d/b", 20, 3)
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	prim := servertest.StartWith(t, root, &server.PrimaryOptions{Catalog: server.CatalogOptions{ChunkSize: cs}}, servertest.Options{Bundle: b})
	c := newClient(t, b, prim.Addr)
	ctx := testCtx(t)
	for range 2 {
		if _, err := c.Stat(ctx, "f"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Stat(ctx, "nope"); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("Stat(nope): %v, want ErrNotFound", err)
	}
	if _, err := c.List(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	m, err := c.Manifest(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", m, 0, m.NumChunks(), func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadChunks(ctx, "f", m, 1, 2, func(int, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Files(ctx, "d", []string{"a", "b"}, nil, 1<<20); err != nil {
		t.Fatal(err)
	}
	col := metrics.NewPrimaryCollector(prim.Primary, prim.Listener())
	// The READs: the whole file, then chunks 1 and 2. The MANIFEST misses
	// the cache (f is hashed), each READ finds f's manifest there; FILES
	// hashes the small files a and b itself.
	read := size + 2*cs
	err = metricstest.Compare(col, metrics.PrimaryFamilies, expand(`
		kwik_primary_sessions 1
		kwik_primary_sessions_total 1
		kwik_primary_requests_total{op="invalid"} 0
		kwik_primary_requests_total{op="stat"} 3
		kwik_primary_requests_total{op="list"} 1
		kwik_primary_requests_total{op="readlink"} 0
		kwik_primary_requests_total{op="manifest"} 1
		kwik_primary_requests_total{op="read"} 2
		kwik_primary_requests_total{op="report_corrupt"} 0
		kwik_primary_requests_total{op="path_report"} 0
		kwik_primary_requests_total{op="files"} 1
		kwik_primary_request_errors_total{op="stat",status="not_found"} 1
		kwik_primary_aborted_replies_total 0
		kwik_primary_read_data_bytes_total READ
		kwik_primary_files_data_bytes_total 30
		kwik_primary_delivered_bytes_total{server="primary"} READ
		kwik_primary_multipath_reads_total 0
		kwik_primary_reply_budget_bytes 0
		kwik_primary_reply_budget_limit_bytes 67108864
		kwik_primary_reply_budget_waits_total 0
		kwik_primary_manifest_cache_entries 3
		kwik_primary_manifest_cache_hits_total 2
		kwik_primary_manifest_cache_misses_total 1
		kwik_primary_manifests_computed_total 3
		kwik_primary_manifest_hash_waits_total 0
	`, "READ", read))
	if err != nil {
		t.Error(err)
	}

	c.Close()
	waitFor(t, "the session closed", func() bool { return prim.Primary.Stats().ActiveSessions == 0 })
	if err := metricstest.Compare(col, metrics.PrimaryFamilies, `
		kwik_primary_sessions 0
		kwik_primary_sessions_total 1
	`); err != nil {
		t.Error(err)
	}
}

// TestPrimaryCollectorRefusals refuses a client without a certificate and
// one beyond the session limit: each is counted under its reason, every
// other reason stays 0.
func TestPrimaryCollectorRefusals(t *testing.T) {
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	prim := servertest.StartWith(t, t.TempDir(), nil, servertest.Options{Bundle: b, Kwik: func(conf *kwik.Config) {
		conf.MaxSessions = 1
		if err := kwik.RequireClientCertificates(conf.TLSConfig, filepath.Join(dir, certgen.CAFile)); err != nil {
			t.Fatal(err)
		}
	}})
	ctx := testCtx(t)
	if _, err := newClient(t, b, prim.Addr).Stat(ctx, ""); err != nil {
		t.Fatalf("first client: %v", err)
	}
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	var se *kwik.SessionError
	if _, err := kwik.Dial(ctx, prim.Addr, &kwik.Config{TLSConfig: cliTLS, Logger: quiet()}); !errors.As(err, &se) || se.Code != kwik.SessionLimitError {
		t.Fatalf("Dial beyond MaxSessions 1: %v, want SESSION_LIMIT_ERROR", err)
	}
	cliTLS.Certificates = nil
	if _, err := kwik.Dial(ctx, prim.Addr, &kwik.Config{TLSConfig: cliTLS, Logger: quiet()}); !errors.Is(err, kwik.ErrClientCertificate) {
		t.Fatalf("Dial without a client certificate: %v, want ErrClientCertificate", err)
	}
	// The listener counts a refused certificate once the connection is gone.
	waitFor(t, "the refusals counted", func() bool {
		r := prim.Listener().Stats().Refused
		return r.ClientCertificates > 0 && r.SessionLimit > 0
	})
	err = metricstest.Compare(metrics.NewPrimaryCollector(prim.Primary, prim.Listener()), metrics.PrimaryFamilies, `
		kwik_primary_sessions 1
		kwik_primary_sessions_total 1
		kwik_primary_refusals_total{reason="session_limit"} 1
		kwik_primary_refusals_total{reason="source_session_limit"} 0
		kwik_primary_refusals_total{reason="source_setup_limit"} 0
		kwik_primary_refusals_total{reason="setup_timeout"} 0
		kwik_primary_refusals_total{reason="setup_failed"} 0
		kwik_primary_refusals_total{reason="client_certificate"} 1
		kwik_primary_refusals_total{reason="control_queue_overflow"} 0
		kwik_primary_refusals_total{reason="reply_timeout"} 0
	`)
	if err != nil {
		t.Error(err)
	}
}
