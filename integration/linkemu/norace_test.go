//go:build !race

package linkemu

// raceEnabled reports whether the tests run under the race detector, which
// slows quic-go about five times: throughput assertions are skipped then.
const raceEnabled = false
