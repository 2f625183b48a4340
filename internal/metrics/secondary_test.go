package metrics_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/metrics"
	"github.com/kwikfs/kwikfs/internal/metrics/metricstest"
	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/server"
	"github.com/kwikfs/kwikfs/server/servertest"
)

// TestMultipathCollectors reads a file from a primary that leaves the data
// to its one secondary (PrimaryFallback) and collects both servers'
// figures: the secondary delivered every byte, as the client counts it;
// the commands the client relayed were all completed, their bytes sent;
// one path up, added once.
func TestMultipathCollectors(t *testing.T) {
	const chunk = 64 << 10
	const size = 64*chunk + 123
	prRoot, secRoot := t.TempDir(), t.TempDir()
	data := writeRandom(t, prRoot, "f.bin", size, 7)
	if got := writeRandom(t, secRoot, "f.bin", size, 7); string(got) != string(data) {
		t.Fatal("mirror differs")
	}
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	sec := servertest.StartSecondary(t, b, secRoot, nil)
	secAddr := sec.Addr
	prim := servertest.StartWith(t, prRoot, &server.PrimaryOptions{
		Catalog:     server.CatalogOptions{ChunkSize: chunk},
		Secondaries: []string{secAddr},
		Coordinator: server.CoordinatorOptions{PrimaryFallback: true},
	}, servertest.Options{Bundle: b})
	c := newClient(t, b, prim.Addr)
	ctx := testCtx(t)
	if _, err := c.Stat(ctx, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the secondary path up", func() bool {
		s, ok := c.SessionStats()
		return ok && len(s.Paths) == 2 && s.Paths[1].State == kwik.PathUp
	})
	m, err := c.Manifest(ctx, "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	src, err := c.ReadChunks(ctx, "f.bin", m, 0, m.NumChunks(), func(_ int, d []byte) error { got = append(got, d...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(data) {
		t.Fatal("read data differs from the file")
	}
	// The primary credits the bytes once the client has reported them all.
	waitFor(t, "the READ credited", func() bool {
		return prim.Primary.CoordinatorStats().MultipathReads == 1 && credited(prim.Primary) == size
	})
	if s := src; len(s) != 1 || s[secAddr] != size {
		t.Fatalf("client's sources %v, want all %d bytes from %s", s, size, secAddr)
	}
	cs, ok := c.SessionStats()
	if !ok {
		t.Fatal("no session")
	}
	relayed := int(cs.Paths[1].CommandsSent)
	if relayed == 0 || cs.Paths[1].CommandsDropped != 0 {
		t.Fatalf("client relayed %d commands, dropped %d; want some, none dropped", relayed, cs.Paths[1].CommandsDropped)
	}
	waitFor(t, "the secondary's commands done", func() bool { return sec.Secondary.Stats().Active == 0 })

	err = metricstest.Compare(metrics.NewPrimaryCollector(prim.Primary, prim.Listener()), metrics.PrimaryFamilies, expand(`
		kwik_primary_requests_total{op="invalid"} 0
		kwik_primary_requests_total{op="stat"} 1
		kwik_primary_requests_total{op="list"} 0
		kwik_primary_requests_total{op="readlink"} 0
		kwik_primary_requests_total{op="manifest"} 1
		kwik_primary_requests_total{op="read"} 1
		kwik_primary_requests_total{op="report_corrupt"} 0
		kwik_primary_requests_total{op="path_report"} 0
		kwik_primary_requests_total{op="files"} 0
		kwik_primary_read_data_bytes_total 0
		kwik_primary_delivered_bytes_total{server="primary"} 0
		kwik_primary_delivered_bytes_total{server="SEC"} SIZE
		kwik_primary_delegated_bytes_total{secondary="SEC"} SIZE
		kwik_primary_reassigned_bytes_total{secondary="SEC"} 0
		kwik_primary_hedged_bytes_total{server="primary"} 0
		kwik_primary_hedged_bytes_total{server="SEC"} 0
		kwik_primary_strikes_total{secondary="SEC"} 0
		kwik_primary_secondary_paths{secondary="SEC"} 1
		kwik_primary_secondary_paths_added_total{secondary="SEC"} 1
		kwik_primary_secondary_paths_lost_total{secondary="SEC"} 0
		kwik_primary_multipath_reads_total 1
	`, "SEC", secAddr, "SIZE", size))
	if err != nil {
		t.Error(err)
	}
	err = metricstest.Compare(metrics.NewSecondaryCollector(sec.Secondary, sec.Kwik), metrics.SecondaryFamilies, expand(`
		kwik_secondary_paths 1
		kwik_secondary_paths_total 1
		kwik_secondary_commands_total{outcome="completed"} CMDS
		kwik_secondary_commands_total{outcome="bad_command"} 0
		kwik_secondary_commands_total{outcome="outside_root"} 0
		kwik_secondary_commands_total{outcome="not_found"} 0
		kwik_secondary_commands_total{outcome="short_file"} 0
		kwik_secondary_commands_total{outcome="failed"} 0
		kwik_secondary_commands_active 0
		kwik_secondary_refused_commands_total{reason="invalid"} 0
		kwik_secondary_refused_commands_total{reason="replayed"} 0
		kwik_secondary_refused_commands_total{reason="expired"} 0
		kwik_secondary_sent_bytes_total SIZE
		kwik_secondary_write_stalled_paths_total 0
		kwik_secondary_refusals_total{reason="token_missing"} 0
		kwik_secondary_refusals_total{reason="token_invalid"} 0
		kwik_secondary_refusals_total{reason="token_expired"} 0
		kwik_secondary_refusals_total{reason="token_wrong_secondary"} 0
		kwik_secondary_refusals_total{reason="token_reused"} 0
		kwik_secondary_refusals_total{reason="session_limit"} 0
		kwik_secondary_refusals_total{reason="source_session_limit"} 0
		kwik_secondary_refusals_total{reason="source_setup_limit"} 0
		kwik_secondary_refusals_total{reason="setup_timeout"} 0
		kwik_secondary_refusals_total{reason="setup_failed"} 0
		kwik_secondary_refusals_total{reason="client_certificate"} 0
	`, "CMDS", relayed, "SIZE", size))
	if err != nil {
		t.Error(err)
	}

	// Once the client goes, its path to the secondary is down.
	c.Close()
	waitFor(t, "the path down", func() bool { return prim.Primary.Stats().ActiveSessions == 0 && sec.Kwik.Stats().PathsOpen == 0 })
	if err := metricstest.Compare(metrics.NewPrimaryCollector(prim.Primary, prim.Listener()), metrics.PrimaryFamilies, expand(`
		kwik_primary_secondary_paths{secondary="SEC"} 0
	`, "SEC", secAddr)); err != nil {
		t.Error(err)
	}
}

// credited returns the READ bytes the primary credits to all servers.
func credited(p *server.Primary) int {
	n := p.Stats().SoleReadBytes
	for _, pc := range p.CoordinatorStats().Paths {
		n += int64(pc.DeliveredBytes)
	}
	return int(n)
}

// TestSecondaryCollectorRefusals refuses a client without a certificate
// at a secondary that requires one: counted as client_certificate, no path
// admitted.
func TestSecondaryCollectorRefusals(t *testing.T) {
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	sec := servertest.StartSecondary(t, b, t.TempDir(), func(conf *kwik.Config) {
		if err := kwik.RequireClientCertificates(conf.TLSConfig, filepath.Join(dir, certgen.CAFile)); err != nil {
			t.Fatal(err)
		}
	})
	cliTLS, err := b.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	cliTLS.Certificates = nil
	if _, err := kwik.Dial(testCtx(t), sec.Kwik.Addr().String(), &kwik.Config{TLSConfig: cliTLS, Logger: quiet()}); !errors.Is(err, kwik.ErrClientCertificate) {
		t.Fatalf("Dial without a client certificate: %v, want ErrClientCertificate", err)
	}
	waitFor(t, "the refusal counted", func() bool { return sec.Kwik.Stats().Refused.ClientCertificates > 0 })
	err = metricstest.Compare(metrics.NewSecondaryCollector(sec.Secondary, sec.Kwik), metrics.SecondaryFamilies, `
		kwik_secondary_paths 0
		kwik_secondary_paths_total 0
		kwik_secondary_refusals_total{reason="token_missing"} 0
		kwik_secondary_refusals_total{reason="token_invalid"} 0
		kwik_secondary_refusals_total{reason="token_expired"} 0
		kwik_secondary_refusals_total{reason="token_wrong_secondary"} 0
		kwik_secondary_refusals_total{reason="token_reused"} 0
		kwik_secondary_refusals_total{reason="session_limit"} 0
		kwik_secondary_refusals_total{reason="source_session_limit"} 0
		kwik_secondary_refusals_total{reason="source_setup_limit"} 0
		kwik_secondary_refusals_total{reason="setup_timeout"} 0
		kwik_secondary_refusals_total{reason="setup_failed"} 0
		kwik_secondary_refusals_total{reason="client_certificate"} 1
	`)
	if err != nil {
		t.Error(err)
	}
}
