package transfer

import (
	"math/bits"
	"strconv"

	"github.com/kwikfs/kwikfs/kwik"
)

// Sources maps each server, by the address its path of the session has,
// to the bytes of verified file data it delivered: what Client.ReadChunks
// and Client.DownloadFileWith return, so that a caller can tell which
// server delivered what (a mount's user.kwikfs.sources attribute, the
// per-server shares of `kwikfs get`).
//
// The bytes of a READ reply are credited to the paths that carried them:
// the primary's address for path 0, a secondary's for the others ("path
// N" for a path the session no longer lists). The reply's status byte,
// written by the primary, is not file data and is taken off path 0. When
// the reply was read to its end the counts are exact; when it was cut
// short (error, cancellation, lost session) some bytes may have arrived
// that were never read, and the bytes read are then shared between the
// paths in proportion to what each delivered. The counts of a call always
// sum to the bytes it handed to its caller, unless a stream itemized fewer
// bytes than that (more than 32 paths).
//
// A nil Sources is empty and ready to read; Add makes it.
type Sources map[string]uint64

// Add adds the counts of o to s, making s when it is nil and o is not
// empty.
func (s *Sources) Add(o Sources) {
	if len(o) == 0 {
		return
	}
	if *s == nil {
		*s = make(Sources, len(o))
	}
	for addr, n := range o {
		(*s)[addr] += n
	}
}

// readSources returns the Sources of a READ reply on stream st of
// session s, of which dataBytes bytes of verified chunks were handed to
// the caller (see Sources for the rules); nil when dataBytes is 0.
func readSources(s *kwik.Session, st *kwik.Stream, dataBytes uint64) Sources {
	if dataBytes == 0 {
		return nil
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
	byServer := make(Sources, len(shares))
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
	return byServer
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
