// Package linkemu emulates a network path of known capacity between a UDP
// client (typically a QUIC client) and a UDP server on loopback.
//
// This machine has no netem, so delay, jitter and loss come from user space:
// a Relay listens on 127.0.0.1, forwards every datagram from a client to the
// target server through a per-client upstream socket, and forwards the
// server's replies back to that client. Each direction is an independent
// emulated link with the same Config.
//
// # The emulated link
//
// Every datagram that the relay reads in one direction goes through, in this
// order:
//
//  1. Cut: while the relay is cut, the datagram is dropped (DroppedCut).
//  2. Random loss with probability Config.Loss (DroppedLoss).
//  3. The bottleneck: a drop-tail FIFO drained at Config.RateBitsPerSec. A
//     datagram of n bytes (UDP payload; IP and UDP headers are not counted)
//     leaves it at max(arrival, previous departure) + n*8/rate. If the bytes
//     still waiting in the bottleneck (datagrams whose departure lies in the
//     future, the one being serialised included) plus n exceed the queue
//     limit, the datagram is dropped (DroppedQueue). With rate 0 there is no
//     bottleneck and no queue limit.
//  4. Propagation: the datagram is delivered Config.Delay after its
//     departure, plus a uniform random jitter in [-Jitter, +Jitter]; the total
//     delay never goes below zero.
//
// Jitter never reorders datagrams: a datagram is never delivered before the
// one that entered the same direction before it (its delivery time is raised
// to its predecessor's if needed). This is how a real path with variable
// queueing behaves (one FIFO), unlike netem's jitter, which reorders freely.
// The price is that under dense traffic (datagrams closer together than
// 2*Jitter) the delay is biased upwards, towards Delay+Jitter, because each
// datagram waits for its slowest predecessor.
//
// The default queue limit (QueueBytes 0) is one bandwidth-delay product,
// rate * 2*Delay / 8 bytes, and at least 64 KiB: enough for a loss-based
// congestion controller (Cubic, Reno) to keep the link busy after halving its
// window, like a well-dimensioned router buffer.
//
// # Timing
//
// One delivery goroutine per direction sleeps until the earliest due time and
// then sends every datagram that is due, so a late wake-up (Go timers are
// precise to roughly 50 µs to 1 ms) delays a batch but never lowers the
// average rate: departure times are computed from the previous departure, not
// from when the goroutine ran. At 100 Mbit/s a late wake-up of 1 ms therefore
// delivers about ten datagrams back to back. A datagram's arrival time is
// when the relay reads it; if the relay is starved of CPU, datagrams wait in
// the kernel's socket buffer (4 MiB asked for) before the link sees them.
// DirStats.TotalLate and MaxLate report how late deliveries were, so a test
// can tell a starved relay from a slow protocol. Measured here: a mean of
// 0.1 to 0.7 ms (Go timer granularity) while the maximum stays under about
// 10 ms when the machine is not overloaded; the relay costs a few µs of CPU
// per datagram (BenchmarkRelayDatagrams).
//
// # Determinism
//
// Loss and jitter draw from pseudo-random generators seeded with Config.Seed,
// one pair per direction, so the same Seed and the same sequence of datagrams
// give the same loss decisions and jitter offsets. Datagrams dropped by a cut
// or by queue overflow draw nothing. Delivery times still depend on real
// arrival times.
//
// # Clients
//
// Each client address (the client's 5-tuple) gets its own upstream socket,
// so several clients may share one relay and each receives only its own
// replies; all clients share the bottleneck of each direction, as they would
// share one physical path. Upstream sockets live until Close.
//
// # Locking and goroutines
//
// A Relay runs one reader for the listening socket, one reader per client
// and one delivery goroutine per direction. Close stops and waits for all of
// them. All methods are safe for concurrent use.
package linkemu
