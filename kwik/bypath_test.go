package kwik

import (
	"reflect"
	"testing"
)

// TestReceivedByPath serves one stream from the primary and a secondary in
// alternating units and checks the client's per-path counts: empty before
// any byte, exact per path once the stream has been read to its end, and a
// copy the caller may change.
func TestReceivedByPath(t *testing.T) {
	const unit, units = 128 << 10, 5
	c := newCluster(t, 1, nil)
	serveCommands(t, c.secs[0], writePattern(t))
	id := c.addPaths(t)[0]
	cli, srv := c.request(t)
	if got := cli.ReceivedByPath(); len(got) != 0 {
		t.Fatalf("ReceivedByPath before any data = %v, want empty", got)
	}
	want := map[PathID]uint64{}
	for i := range units {
		off := reserve(t, srv, unit)
		if i%2 == 0 {
			want[0] += unit
			if _, err := srv.WriteAt(pattern(off, unit), int64(off)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want[id] += unit
		if err := c.srv.SendRawData(id, Grant{StreamID: srv.StreamID(), Offset: off, Length: unit}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _ := readDigest(t, cli); n != unit*units {
		t.Fatalf("read %d bytes, want %d", n, unit*units)
	}
	got := cli.ReceivedByPath()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReceivedByPath = %v, want %v", got, want)
	}
	got[0] = 0
	if again := cli.ReceivedByPath(); !reflect.DeepEqual(again, want) {
		t.Fatalf("ReceivedByPath after changing the copy = %v, want %v", again, want)
	}
	if s := srv.ReceivedByPath(); len(s) != 0 {
		t.Fatalf("server side ReceivedByPath = %v, want empty", s)
	}
}
