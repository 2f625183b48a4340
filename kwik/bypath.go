package kwik

// ReceivedByPath returns, on a client, how many bytes of the stream each
// path delivered first (duplicates excluded), for up to 32 paths: path 0 is
// the primary, the others are secondary paths (see Session.Stats for their
// addresses). The counts include bytes received but not yet read, and keep
// growing until the stream's receive side ends; after it has ended with
// io.EOF they sum to the stream's length. The map is a copy the caller owns;
// it is empty before any byte arrived, and always empty on a server.
func (st *Stream) ReceivedByPath() map[PathID]uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	m := make(map[PathID]uint64, len(st.byPath))
	for _, pb := range st.byPath {
		m[PathID(pb.PathID)] += pb.Bytes
	}
	return m
}
