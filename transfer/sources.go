package transfer

import (
	"math/bits"
	"strconv"

	"github.com/kwikfs/kwikfs/kwik"
)

// reportSources calls ClientOptions.OnReadSources for a READ reply on
// stream st of session s, of which dataBytes bytes of verified chunks were
// handed to the caller.
//
// Servers are named by the address the session knows for the path that
// delivered the bytes: the primary's for path 0, the secondary's for the
// others ("path N" for a path the session no longer lists). The reply's
// status byte, written by the primary, is not file data and is taken off
// path 0. When the reply was read to its end the counts are exact; when it
// was cut short (error, cancellation, lost session) some bytes may have
// arrived that were never read, and the dataBytes read are then shared
// between the paths in proportion to what each delivered. The counts
// always sum to dataBytes unless the stream itemized fewer bytes than that
// (more than 32 paths).
func (c *Client) reportSources(s *kwik.Session, st *kwik.Stream, path string, dataBytes uint64) {
	if dataBytes == 0 {
		return
	}
	byPath := st.ReceivedByPath()
	switch {
	case byPath[0] > 0:
		byPath[0]--
	default:
		// Not expected: the primary writes the status. Take it off the
		// largest contributor so the total stays right.
		var big kwik.PathID
		for id, n := range byPath {
			if n > byPath[big] {
				big = id
			}
		}
		if byPath[big] > 0 {
			byPath[big]--
		}
	}
	shares := apportion(byPath, dataBytes)
	addrs := make(map[kwik.PathID]string, len(shares))
	for _, ps := range s.Stats().Paths {
		if ps.RemoteAddr != nil {
			addrs[kwik.PathID(ps.ID)] = ps.RemoteAddr.String()
		} else {
			addrs[kwik.PathID(ps.ID)] = ps.Addr
		}
	}
	byServer := make(map[string]uint64, len(shares))
	for id, n := range shares {
		if n == 0 {
			continue
		}
		name, ok := addrs[id]
		if !ok || name == "" {
			name = "path " + strconv.FormatUint(uint64(id), 10)
		}
		byServer[name] += n
	}
	c.onSrc(path, byServer)
}

// apportion scales the counts of byPath down so that they sum to total
// when they sum to more: each path gets its proportional share rounded
// down, and the bytes left by rounding go to the paths in decreasing
// order of their counts. Counts that sum to total or less are returned as
// they are.
func apportion(byPath map[kwik.PathID]uint64, total uint64) map[kwik.PathID]uint64 {
	var sum uint64
	for _, n := range byPath {
		sum += n
	}
	if sum <= total {
		return byPath
	}
	out := make(map[kwik.PathID]uint64, len(byPath))
	var given uint64
	for id, n := range byPath {
		// n*total/sum in 128 bits: n <= sum, so the quotient fits.
		hi, lo := bits.Mul64(n, total)
		share, _ := bits.Div64(hi, lo, sum)
		out[id] = share
		given += share
	}
	for given < total {
		// Hand one byte to the largest contributor not yet topped up
		// (the remainder is smaller than the number of paths).
		var best kwik.PathID
		bestSet := false
		for id, n := range byPath {
			if out[id] >= n {
				continue
			}
			if !bestSet || n > byPath[best] || (n == byPath[best] && id < best) {
				best, bestSet = id, true
			}
		}
		if !bestSet {
			break
		}
		out[best]++
		given++
	}
	return out
}
