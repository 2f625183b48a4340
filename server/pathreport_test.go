package server

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
	"github.com/kwikfs/kwikfs/transfer"
)

func TestApportion(t *testing.T) {
	const cs = 100
	tests := []struct {
		name   string
		byPath map[kwik.PathID]uint64
		count  uint64
		want   map[kwik.PathID]uint64
	}{
		{"one path", map[kwik.PathID]uint64{0: 500}, 5, map[kwik.PathID]uint64{0: 5}},
		{"whole chunks", map[kwik.PathID]uint64{0: 300, 1: 200, 2: 500}, 10, map[kwik.PathID]uint64{0: 3, 1: 2, 2: 5}},
		{"short last chunk alone", map[kwik.PathID]uint64{0: 200, 1: 1}, 3, map[kwik.PathID]uint64{0: 2, 1: 1}},
		{"short last chunk with others", map[kwik.PathID]uint64{0: 200, 1: 107}, 4, map[kwik.PathID]uint64{0: 2, 1: 2}},
		{"chunk split between paths", map[kwik.PathID]uint64{0: 130, 1: 70}, 2, map[kwik.PathID]uint64{0: 1, 1: 1}},
		{"chunk split evenly: lower id", map[kwik.PathID]uint64{0: 150, 3: 50}, 2, map[kwik.PathID]uint64{0: 2}},
		{"two chunks split three ways", map[kwik.PathID]uint64{0: 60, 1: 70, 2: 70}, 2, map[kwik.PathID]uint64{1: 1, 2: 1}},
		{"zero bytes", map[kwik.PathID]uint64{0: 0, 1: 400}, 4, map[kwik.PathID]uint64{1: 4}},
		{"nothing", nil, 0, map[kwik.PathID]uint64{}},
		{"more bytes than chunks", map[kwik.PathID]uint64{0: 500, 1: 500}, 6, map[kwik.PathID]uint64{0: 5, 1: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := apportion(tc.byPath, cs, tc.count)
			if !maps.Equal(got, tc.want) {
				t.Errorf("apportion(%v, %d) = %v, want %v", tc.byPath, tc.count, got, tc.want)
			}
		})
	}
}

func TestPathTallyBounded(t *testing.T) {
	var tl pathTally
	tl.add(0, 1, 1)
	for id := kwik.PathID(1); id <= maxTallyPaths+10; id++ {
		tl.strike(id)
	}
	s := tl.snapshot()
	if len(s) != maxTallyPaths {
		t.Errorf("tally holds %d paths, want %d", len(s), maxTallyPaths)
	}
	if s[0].chunks != 1 || s[maxTallyPaths+10].strikes != 1 {
		t.Errorf("path 0 %+v or the newest path %+v forgotten", s[0], s[maxTallyPaths+10])
	}
	if _, ok := s[1]; ok {
		t.Errorf("the oldest secondary path is still counted")
	}
}

// pathReport asks the primary for its account of the client's paths.
func (c *mpCluster) pathReport() []transfer.PathReport {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := c.client.PathReport(ctx)
	if err != nil {
		c.t.Fatalf("PathReport: %v", err)
	}
	return rs
}

// waitReportChunks asks for the path report until its delivered chunks
// add up to want (the primary credits a divided READ when its job ends,
// after the client has every byte), and returns it; after 10 s it returns
// the last report.
func (c *mpCluster) waitReportChunks(want uint64) []transfer.PathReport {
	c.t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		rs := c.pathReport()
		var sum uint64
		for _, r := range rs {
			sum += r.DeliveredChunks
		}
		if sum >= want {
			return rs
		}
		select {
		case <-tick.C:
		case <-deadline:
			return rs
		}
	}
}

func TestPathReportPrimaryAlone(t *testing.T) {
	data := mpRandomBytes(5*mpChunk+17, 21)
	c := mpStartCluster(t, mpWriteRoot(t, map[string][]byte{"f.bin": data}), nil, CoordinatorOptions{})
	if _, err := c.client.Stat(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	rs := c.pathReport()
	if len(rs) != 1 || rs[0].ID != 0 || rs[0].State != kwik.PathUp || rs[0].DeliveredChunks != 0 || rs[0].DeliveredBytes != 0 {
		t.Fatalf("report before any READ = %+v, want path 0 up with nothing delivered", rs)
	}
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	got, _ = c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	// The primary credits a READ once its handler has written the whole
	// reply, which may be after the client has read it.
	rs = c.waitReportChunks(12)
	want := transfer.PathReport{ID: 0, State: kwik.PathUp, DeliveredBytes: 2 * uint64(len(data)), DeliveredChunks: 12}
	if len(rs) != 1 {
		t.Fatalf("report = %+v, want path 0 alone", rs)
	}
	r := rs[0]
	if r.RTT <= 0 {
		t.Errorf("RTT = %v, want > 0", r.RTT)
	}
	r.RTT, r.Rate = 0, 0
	if r != want {
		t.Errorf("report = %+v, want %+v", r, want)
	}
}

func TestPathReportMultipath(t *testing.T) {
	data := mpRandomBytes(mpFileSize, 22)
	files := map[string][]byte{"f.bin": data}
	c := mpStartCluster(t, mpWriteRoot(t, files), []string{mpWriteRoot(t, files), mpWriteRoot(t, files)}, CoordinatorOptions{})
	got, _ := c.readFile("f.bin", 0)
	mpCheckSame(t, got, data)
	chunks := uint64((len(data) + mpChunk - 1) / mpChunk)
	rs := c.waitReportChunks(chunks)
	if len(rs) != 3 {
		t.Fatalf("report has %d paths, want 3: %+v", len(rs), rs)
	}
	client := c.pathStats()
	var sumChunks, sumBytes uint64
	for i, r := range rs {
		t.Logf("path %d %q %v: rtt %v rate %d B/s, delivered %d B in %d chunks, strikes %d, in flight %d", r.ID, r.Addr, r.State, r.RTT, r.Rate, r.DeliveredBytes, r.DeliveredChunks, r.Strikes, r.InFlightBytes)
		sumChunks += r.DeliveredChunks
		sumBytes += r.DeliveredBytes
		if r.ID != kwik.PathID(client[i].ID) || r.State != kwik.PathUp {
			t.Errorf("record %d: path %d %v, want path %d up", i, r.ID, r.State, client[i].ID)
		}
		if i > 0 && (r.Addr != client[i].Addr || (r.Addr != c.secs[0].Addr && r.Addr != c.secs[1].Addr)) {
			t.Errorf("path %d address %q, want the client's %q, a secondary's", r.ID, r.Addr, client[i].Addr)
		}
		if r.DeliveredChunks == 0 || r.Rate == 0 || r.RTT <= 0 || r.Strikes != 0 || r.InFlightBytes != 0 {
			t.Errorf("path %d: %+v, want chunks, a rate, an RTT, no strikes, nothing in flight", r.ID, r)
		}
		// A secondary sends nothing but READ data: the primary credits it
		// with exactly the bytes the client accepted from it first.
		if i > 0 && r.DeliveredBytes != client[i].DeliveredBytes {
			t.Errorf("path %d: credited %d bytes, the client accepted %d", r.ID, r.DeliveredBytes, client[i].DeliveredBytes)
		}
	}
	if rs[1].Addr == rs[2].Addr {
		t.Errorf("both secondary paths lead to %s", rs[1].Addr)
	}
	if sumChunks != chunks || sumBytes != uint64(len(data)) {
		t.Errorf("paths delivered %d chunks, %d bytes; want %d and %d", sumChunks, sumBytes, chunks, len(data))
	}
}

func TestPathReportStrikes(t *testing.T) {
	data := mpRandomBytes(1<<20, 23)
	bad := append([]byte(nil), data...)
	for i := 0; i < len(bad); i += mpChunk {
		bad[i+100] ^= 0xff // every chunk of the mirror is corrupt
	}
	c := mpStartCluster(t, mpWriteRoot(t, map[string][]byte{"f.bin": data}), []string{mpWriteRoot(t, map[string][]byte{"f.bin": bad})}, CoordinatorOptions{})
	for i := 0; c.counters(c.secs[0].Addr).Strikes == 0; i++ {
		if i == 10 {
			t.Fatalf("10 reads without a strike: %+v", c.prim.CoordinatorStats())
		}
		got, _ := c.readFile("f.bin", 10)
		mpCheckSame(t, got, data)
	}
	want := c.counters(c.secs[0].Addr).Strikes
	rs := c.pathReport()
	if len(rs) != 2 {
		t.Fatalf("report = %+v, want 2 paths", rs)
	}
	if rs[0].Strikes != 0 || rs[1].Strikes != want || rs[1].Addr != c.secs[0].Addr {
		t.Errorf("strikes: path 0 %d, path %d (%s) %d; want 0 and %d for %s", rs[0].Strikes, rs[1].ID, rs[1].Addr, rs[1].Strikes, want, c.secs[0].Addr)
	}
}
