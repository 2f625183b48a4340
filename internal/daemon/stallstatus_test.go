package daemon

import (
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/kwik"
)

// TestMergePathsStall checks that a stalled path and a path owing data
// show as such in the status.
func TestMergePathsStall(t *testing.T) {
	client := []kwik.PathStats{
		{ID: 0, Addr: "p:1", State: kwik.PathUp},
		{ID: 1, Addr: "s1:1", State: kwik.PathFailed, Stalled: true},
		{ID: 2, Addr: "s1:1", State: kwik.PathUp, AwaitingData: 1500 * time.Microsecond},
	}
	got := mergePaths(client, nil)
	if len(got) != 3 || got[0].Stalled || got[0].AwaitingDataMillis != 0 {
		t.Fatalf("paths %+v", got)
	}
	if got[1].State != "failed" || !got[1].Stalled {
		t.Errorf("path 1 %+v: want failed and stalled", got[1])
	}
	if got[2].Stalled || got[2].AwaitingDataMillis != 1.5 {
		t.Errorf("path 2 %+v: want up, owing data for 1.5 ms", got[2])
	}
}
