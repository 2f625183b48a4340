package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// netnsLink is a network namespace joined to the test's own by a veth
// pair, with addresses in 198.19.0.0/16 (of the benchmarking range
// 198.18.0.0/15; kwikbench uses 198.18.0.0/16). A server started in it
// (startServerIn) is reached over the pair, and the pair's counters tell
// every byte that crossed it: IP, UDP and QUIC headers, retransmissions
// and metadata included. The namespace is deleted at cleanup.
type netnsLink struct {
	ns      string // the namespace
	hostDev string // the test's end of the pair
	hostIP  string
	nsIP    string
}

var netnsSeq atomic.Int32

// newNetnsLink makes a namespace and its veth pair. It needs root and
// iproute2's ip (make deps installs it).
func newNetnsLink(t *testing.T) *netnsLink {
	t.Helper()
	n := int(netnsSeq.Add(1))
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	sub := (os.Getpid() + n) % 64
	l := &netnsLink{
		ns:      "kwtest-" + id,
		hostDev: "kwt" + strings.ReplaceAll(id, "-", "n"),
		hostIP:  "198.19." + strconv.Itoa(sub) + ".1",
		nsIP:    "198.19." + strconv.Itoa(sub) + ".2",
	}
	nsDev := l.hostDev + "p"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	exec.Command("ip", "netns", "del", l.ns).Run() // a leftover of a killed run
	ip("netns", "add", l.ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", l.ns).Run() // takes the pair with it
		exec.Command("ip", "link", "del", l.hostDev).Run()
	})
	ip("link", "add", l.hostDev, "type", "veth", "peer", "name", nsDev, "netns", l.ns)
	ip("addr", "add", l.hostIP+"/30", "dev", l.hostDev)
	ip("link", "set", l.hostDev, "up")
	ip("-n", l.ns, "addr", "add", l.nsIP+"/30", "dev", nsDev)
	ip("-n", l.ns, "link", "set", nsDev, "up")
	ip("-n", l.ns, "link", "set", "lo", "up")
	return l
}

// rxBytes returns the bytes the test's end of the pair has received: what
// servers in the namespace sent.
func (l *netnsLink) rxBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + l.hostDev + "/statistics/rx_bytes")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
