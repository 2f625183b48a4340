package integration

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/integration/linkemu"
	"github.com/kwikfs/kwikfs/internal/certgen"
)

// Environment overrides of TestFaultLoop, to repeat a failing run.
const (
	faultSeedEnv   = "KWIKFS_FAULT_SEED"   // the seed (default defaultFaultSeed)
	faultRoundsEnv = "KWIKFS_FAULT_ROUNDS" // the number of rounds (default 20)
)

const defaultFaultSeed = 4

// faultKind is what a round of TestFaultLoop does to the cluster.
type faultKind int

const (
	killSecondary faultKind = iota // SIGKILL a secondary; restarted after the round
	cutPath                        // cut a secondary's relay; restored after the round
	killPrimary                    // SIGKILL the primary; restarted on its address after a short outage
)

func (k faultKind) String() string {
	return [...]string{"kill secondary", "cut path", "kill primary"}[k]
}

// faultSecondary is a kwik-secondary reached through a link-emulator relay,
// so that its path can be cut, and restarted on the same address when
// killed.
type faultSecondary struct {
	srv     *server
	backend string // where the secondary listens
	relay   *linkemu.Relay
}

// roundFile is one file of a round's tree.
type roundFile struct {
	rel  string
	size int
	sha  [32]byte
}

// makeRoundTree writes a tree of mixed sizes under dir, drawn from rng:
// one large file, a few medium ones (some at chunk boundaries) and many
// small ones, in nested directories, every file with distinct random bytes.
func makeRoundTree(t *testing.T, rng *rand.Rand, dir string) []roundFile {
	t.Helper()
	var files []roundFile
	add := func(rel string, size int) {
		var seed [32]byte
		for i := range 4 {
			v := rng.Uint64()
			for k := range 8 {
				seed[8*i+k] = byte(v >> (8 * k))
			}
		}
		data := make([]byte, size)
		rand.NewChaCha8(seed).Read(data)
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, roundFile{rel: rel, size: size, sha: sha256.Sum256(data)})
	}
	dirs := []string{"", "a", "a/b", "c"}
	add("big.bin", 1<<20+rng.IntN(30<<20))
	for i := range 2 + rng.IntN(4) {
		size := []int{chunkSize - 1, chunkSize, chunkSize + 1, 100<<10 + rng.IntN(1400<<10)}[rng.IntN(4)]
		add(filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("m%d.bin", i)), size)
	}
	for i := range 10 + rng.IntN(30) {
		add(filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("s%02d.dat", i)), rng.IntN(40<<10))
	}
	return files
}

// roundOutcome is how the files of one round came out of the copy.
type roundOutcome struct {
	ok, failed int      // identical; reported by cp as failed
	violations []string // wrong bytes that cp did not report, or garbage
}

// judgeRound checks every file of a round's copy: byte-identical, or
// reported as failed by a cp that exited non-zero (the file absent, or
// named in cp's messages and holding a prefix of the source, never other
// bytes). A copy that exited 0 must be complete.
func judgeRound(t *testing.T, files []roundFile, srcDir, mntDir, dstDir string, cpErr error, cpOut string) roundOutcome {
	t.Helper()
	var out roundOutcome
	got := scanTree(t, dstDir)
	// named reports whether cp's messages name rel (as source or
	// destination) or a directory above it.
	named := func(rel string) bool {
		for p := rel; p != "."; p = filepath.Dir(p) {
			for _, base := range []string{mntDir, dstDir} {
				if strings.Contains(cpOut, "'"+filepath.Join(base, p)+"'") {
					return true
				}
			}
		}
		return strings.Contains(cpOut, "'"+mntDir+"'")
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.rel] = true
		for d := filepath.Dir(f.rel); d != "."; d = filepath.Dir(d) {
			want[d] = true
		}
		g, present := got[f.rel]
		switch {
		case present && g.mode.IsRegular() && g.size == int64(f.size) && g.sha == f.sha:
			out.ok++
		case cpErr == nil:
			out.violations = append(out.violations, fmt.Sprintf("%s: cp exited 0 but the copy is %s", f.rel, describe(g, present)))
		case !present:
			out.failed++
		case !named(f.rel):
			out.violations = append(out.violations, fmt.Sprintf("%s: %s, and cp did not report it", f.rel, describe(g, present)))
		default:
			// Reported: what cp wrote before the error must be the start
			// of the file, never other bytes.
			partial, err := os.ReadFile(filepath.Join(dstDir, f.rel))
			src, serr := os.ReadFile(filepath.Join(srcDir, f.rel))
			if err != nil || serr != nil {
				t.Fatalf("read %s: %v %v", f.rel, err, serr)
			}
			if !bytes.HasPrefix(src, partial) {
				out.violations = append(out.violations, fmt.Sprintf("%s: reported failed, but its %d bytes are not a prefix of the source", f.rel, len(partial)))
				continue
			}
			out.failed++
		}
	}
	for rel := range got {
		if !want[rel] {
			out.violations = append(out.violations, fmt.Sprintf("%s: in the copy but not in the source", rel))
		}
	}
	slices.Sort(out.violations)
	return out
}

func describe(e entry, present bool) string {
	if !present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes with sha %x", e.size, e.sha[:6])
}

// TestFaultLoop copies a fresh tree with cp -r out of one mount over a
// primary and two secondaries (each behind a relay) in each of 20 rounds,
// and at a random moment of each copy SIGKILLs a random secondary, cuts a
// random secondary's path or SIGKILLs the primary (which comes back on the
// same address after an outage of 0.2 to 6 s, half the time longer than
// the mount's 3 s fetch timeout). Every file of every round must come
// out byte-identical, or be reported by cp as failed (cp exits non-zero;
// the file is absent or holds only a prefix of the source): wrong bytes
// never surface; a round whose fault hit a secondary must complete. The
// killed server or cut path is restored before the next round. The seed is
// logged; KWIKFS_FAULT_SEED repeats a run, KWIKFS_FAULT_ROUNDS changes the
// number of rounds (round r is the same whatever their number).
func TestFaultLoop(t *testing.T) {
	seed := uint64(defaultFaultSeed)
	if s := os.Getenv(faultSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", faultSeedEnv, s, err)
		}
		seed = v
	}
	rounds := 20
	if s := os.Getenv(faultRoundsEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want a positive number", faultRoundsEnv, s)
		}
		rounds = v
	}
	t.Logf("seed %d (%s=%d repeats this run), %d rounds", seed, faultSeedEnv, seed, rounds)
	// Each round draws its tree and its fault from a generator of its own,
	// so round r is the same whatever the number of rounds.
	rngs := make([]*rand.Rand, rounds)
	for r := range rngs {
		rngs[r] = rand.New(rand.NewPCG(seed, uint64(r)))
	}

	root := filepath.Join(t.TempDir(), "tree")
	trees := make([][]roundFile, rounds)
	sizes := make([]int64, rounds)
	for r := range trees {
		trees[r] = makeRoundTree(t, rngs[r], filepath.Join(root, fmt.Sprintf("round-%02d", r)))
		for _, f := range trees[r] {
			sizes[r] += int64(f.size)
		}
	}

	certDir := certs(t)
	secs := make([]*faultSecondary, 2)
	primaryArgs := []string{"--chunk-size", strconv.Itoa(chunkSize)}
	for i := range secs {
		s := &faultSecondary{}
		s.srv, s.relay, s.backend = startRelayedSecondary(t, root, certDir)
		secs[i] = s
		primaryArgs = append(primaryArgs, "--secondary", s.relay.Addr())
	}
	p := startPrimary(t, root, certDir, primaryArgs...)
	addr := p.addr
	const fetchTimeout = 3 * time.Second
	m := startMount(t, addr, filepath.Join(certDir, certgen.CAFile), filepath.Join(t.TempDir(), "cache"),
		"--fetch-timeout", fetchTimeout.String())
	out := t.TempDir()

	var complete, partial int
	byKind := map[faultKind][2]int{} // complete, partial rounds
	loopStart := time.Now()
	for r := range rounds {
		rng := rngs[r]
		kind := faultKind(rng.IntN(3))
		target := rng.IntN(len(secs))
		frac := 0.05 + 0.8*rng.Float64()
		// Half the outages outlast the fetch timeout: reads then fail.
		outage := time.Duration(200+rng.IntN(5800)) * time.Millisecond
		name := fmt.Sprintf("round-%02d", r)
		srcDir, mntDir, dstDir := filepath.Join(root, name), filepath.Join(m.dir, name), filepath.Join(out, name)

		st0 := m.liveStatus(t)
		roundStart := time.Now()
		cp := startTool(t, "/bin/cp", "-r", mntDir, dstDir)

		// The fault strikes once the round has fetched frac of its bytes.
		trigger := st0.FS.BytesFetched + int64(frac*float64(sizes[r]))
		struck := "during the copy"
	poll:
		for m.liveStatus(t).FS.BytesFetched < trigger {
			select {
			case <-cp.done:
				struck = "after the copy ended"
				break poll
			case <-time.After(10 * time.Millisecond):
			}
		}
		faultAt := time.Since(roundStart)
		what := kind.String()
		switch kind {
		case killSecondary:
			secs[target].srv.stop(t, syscall.SIGKILL, 10*time.Second)
			what += fmt.Sprintf(" %d (%s)", target, secs[target].relay.Addr())
		case cutPath:
			secs[target].relay.Cut(true)
			what += fmt.Sprintf(" %d (%s)", target, secs[target].relay.Addr())
		case killPrimary:
			p.stop(t, syscall.SIGKILL, 10*time.Second)
			what += fmt.Sprintf(", back after %v", outage)
			select {
			case <-cp.done:
			case <-time.After(outage):
			}
			p = startPrimary(t, root, certDir, append([]string{"--listen", addr}, primaryArgs...)...)
		}
		select {
		case <-cp.done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: cp -r still running 2 minutes after it started (fault: %s)", name, what)
		}
		copyTime := time.Since(roundStart)

		// Restore before judging, so that the next round starts whole.
		switch kind {
		case killSecondary:
			s := secs[target]
			s.srv = startServer(t, "kwik-secondary", root, certDir, "--listen", s.backend, "--advertise", s.relay.Addr())
		case cutPath:
			secs[target].relay.Cut(false)
		}

		res := judgeRound(t, trees[r], srcDir, mntDir, dstDir, cp.err, cp.Output())
		st := m.liveStatus(t)
		outcome := "complete"
		kc := byKind[kind]
		switch {
		case len(res.violations) > 0:
			outcome = "WRONG BYTES"
		case cp.err == nil && res.failed == 0:
			complete++
			kc[0]++
		default:
			outcome = "errors reported"
			partial++
			kc[1]++
		}
		byKind[kind] = kc
		t.Logf("%s: %d files, %.1f MiB, %d paths at start; %s at %.0f%% (%v, %s); cp %v in %v: %s, %d identical, %d failed; fetched %.1f MiB, fetch errors %d",
			name, len(trees[r]), float64(sizes[r])/(1<<20), len(st0.Paths), what, 100*frac, faultAt.Round(time.Millisecond), struck,
			exitText(cp.err), copyTime.Round(time.Millisecond), outcome, res.ok, res.failed,
			float64(st.FS.BytesFetched-st0.FS.BytesFetched)/(1<<20), st.FS.FetchErrors-st0.FS.FetchErrors)
		for _, v := range res.violations {
			t.Errorf("%s: %s", name, v)
		}
		if len(res.violations) > 0 {
			t.Logf("%s: cp output:\n%s", name, tail([]byte(cp.Output())))
		}
		if res.failed > 0 {
			t.Logf("%s: cp reported:\n%s", name, tail([]byte(cp.Output())))
		}
		select {
		case <-m.done:
			t.Fatalf("the mount daemon exited during %s: %v", name, m.err)
		default:
		}
	}
	t.Logf("%d rounds in %v: %d complete, %d with errors reported; by fault (complete, with errors): kill secondary %v, cut path %v, kill primary %v",
		rounds, time.Since(loopStart).Round(time.Millisecond), complete, partial, byKind[killSecondary], byKind[cutPath], byKind[killPrimary])
	if complete == 0 {
		t.Errorf("no round completed its copy")
	}
	// Issue 4: a secondary that dies, or whose path is cut, mid-copy costs
	// nothing but time; only the primary's outage may fail reads.
	for _, k := range []faultKind{killSecondary, cutPath} {
		if n := byKind[k][1]; n > 0 {
			t.Errorf("%d rounds with fault %q ended with read errors; the copy must complete from the other servers", n, k)
		}
	}
}

// exitText describes a process's exit status.
func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// TestFaultLoopJudge checks judgeRound on a made-up copy: identical,
// absent, reported partial, unreported wrong and reported garbage files.
func TestFaultLoopJudge(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	const mnt = "/mnt/round"
	var files []roundFile
	for i, name := range []string{"same", "absent", "partial", "wrong", "garbage", "d/unreported-partial"} {
		data := bytes.Repeat([]byte{byte('a' + i)}, 1000)
		data[999] = 'z'
		files = append(files, roundFile{rel: name, size: len(data), sha: sha256.Sum256(data)})
		writeFile := func(dir string, b []byte) {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(src, data)
		switch name {
		case "same":
			writeFile(dst, data)
		case "partial", "d/unreported-partial":
			writeFile(dst, data[:500])
		case "wrong":
			writeFile(dst, data[:999])
		case "garbage":
			writeFile(dst, bytes.Repeat([]byte{'x'}, 300))
		}
	}
	if err := os.WriteFile(filepath.Join(dst, "extra"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cpOut := "cp: error reading '" + mnt + "/partial': Input/output error\n" +
		"cp: error reading '" + mnt + "/garbage': Input/output error\n"
	res := judgeRound(t, files, src, mnt, dst, fmt.Errorf("exit status 1"), cpOut)
	if res.ok != 1 || res.failed != 2 || len(res.violations) != 4 {
		t.Fatalf("judged %d ok, %d failed, violations %q; want 1 ok (same), 2 failed (absent, partial), 4 violations (wrong, garbage, unreported, extra)",
			res.ok, res.failed, res.violations)
	}
	for i, want := range []string{"d/unreported-partial: 500 bytes", "extra: in the copy", "garbage: reported failed", "wrong: 999 bytes"} {
		if !strings.HasPrefix(res.violations[i], want) {
			t.Errorf("violation %d = %q, want it to start with %q", i, res.violations[i], want)
		}
	}
	// A cp that exited 0 must have copied everything.
	if res := judgeRound(t, files, src, mnt, dst, nil, cpOut); res.ok != 1 || len(res.violations) != 6 {
		t.Errorf("cp exit 0: %d ok, violations %q; want 1 ok, 6 violations (5 files not identical, 1 extra)", res.ok, res.violations)
	}
}
