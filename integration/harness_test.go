package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/internal/control"
	"golang.org/x/sys/unix"
)

// binDir holds the binaries built once by TestMain, with -race;
// plainBinDir the same built without it (see usePlainBinaries).
var binDir, plainBinDir string

// usePlainBinaries makes the rest of the test start binaries built without
// the race detector. A test that runs dozens of processes at once (the
// 32-client load test) is to measure kwikfs, not the detector, whose CPU
// cost (several times the program's) starves every process for seconds on
// a 2-core machine. Tests in this package do not run in parallel.
func usePlainBinaries(t *testing.T) {
	old := binDir
	binDir = plainBinDir
	t.Cleanup(func() { binDir = old })
}

func TestMain(m *testing.M) {
	// A test that re-runs this binary as a child process (to kill it) sets
	// helperEnv: the child runs that helper instead of the tests.
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	dir, err := os.MkdirTemp("", "kwikfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by all: one test runs the mount as an unprivileged user.
	os.Chmod(dir, 0o755)
	plain := filepath.Join(dir, "plain")
	for _, args := range [][]string{{"-race", "-o", dir + "/"}, {"-o", plain + "/"}} {
		build := exec.Command("go", append(append([]string{"build"}, args...), "github.com/kwikfs/kwikfs/cmd/...")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	os.Chmod(plain, 0o755)
	binDir, plainBinDir = dir, plain
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string { return filepath.Join(binDir, name) }

// certs writes a fresh certificate bundle into a temp dir.
func certs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	b, err := certgen.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clientCertArgs returns the flags of `kwikfs mount` that present the
// client certificate certs wrote into certDir: the servers the harness
// starts admit only clients with one (--client-ca), unless started with
// --allow-anonymous.
func clientCertArgs(certDir string) []string {
	return []string{"--cert", filepath.Join(certDir, certgen.ClientCertFile), "--key", filepath.Join(certDir, certgen.ClientKeyFile)}
}

// proc is a running binary whose output is captured for failure reports.
type proc struct {
	cmd    *exec.Cmd
	name   string
	mu     sync.Mutex
	output bytes.Buffer
	done   chan struct{}
	err    error // exit status, valid after done
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.Write(b)
}

// Output returns what the process printed so far.
func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// start runs a binary. It is killed, and its output logged if the test
// failed, at cleanup.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startAs(t, nil, name, args...)
}

// startAs is start with the process running under cred (nil: as the test).
func startAs(t *testing.T, cred *syscall.Credential, name string, args ...string) *proc {
	t.Helper()
	return startArgv(t, cred, name, bin(name), args...)
}

// startArgv is startAs running program (a binary of ours, or a wrapper
// that runs one, such as `ip netns exec`) with args; name names it in
// reports.
func startArgv(t *testing.T, cred *syscall.Credential, name, program string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(program, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		// The binaries are built with -race: a race any of them reports
		// fails the test that started it.
		if strings.Contains(p.Output(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s %s output:\n%s", name, strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// signal sends sig and waits up to timeout for the exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v of %v", p.name, timeout, sig)
		return nil
	}
}

// server is a running kwik-primary or kwik-secondary.
type server struct {
	*proc
	addr  string
	certs string
}

// primary is a running kwik-primary.
type primary = server

func startPrimary(t *testing.T, root, certDir string, extra ...string) *primary {
	t.Helper()
	return startServer(t, "kwik-primary", root, certDir, extra...)
}

// startServer runs a kwik server binary exporting root on a free loopback
// port and waits until it listens.
func startServer(t *testing.T, binary, root, certDir string, extra ...string) *server {
	t.Helper()
	return startServerIn(t, nil, binary, root, certDir, extra...)
}

// startServerIn is startServer with the server in link's namespace,
// listening on its end of the veth pair (link nil: on loopback, here).
func startServerIn(t *testing.T, link *netnsLink, binary, root, certDir string, extra ...string) *server {
	t.Helper()
	listen := "127.0.0.1:0"
	if link != nil {
		listen = link.nsIP + ":0"
	}
	args := []string{
		"--root", root, "--listen", listen,
		"--cert", filepath.Join(certDir, certgen.CertFile),
		"--key", filepath.Join(certDir, certgen.KeyFile),
		"--log-level", "warn",
	}
	switch binary {
	case "kwik-primary":
		args = append(args, "--signing-key", filepath.Join(certDir, certgen.SigningKeyFile))
	case "kwik-secondary":
		args = append(args, "--verify-key", filepath.Join(certDir, certgen.VerifyKeyFile))
	}
	if !slices.Contains(extra, "--allow-anonymous") {
		args = append(args, "--client-ca", filepath.Join(certDir, certgen.CAFile))
	}
	args = append(args, extra...)
	var p *proc
	if link != nil {
		p = startArgv(t, nil, binary, "ip", append([]string{"netns", "exec", link.ns, bin(binary)}, args...)...)
	} else {
		p = start(t, binary, args...)
	}
	return &server{proc: p, addr: waitListening(t, p), certs: certDir}
}

// waitListening waits until server p prints "listening on HOST:PORT" and
// returns the address.
func waitListening(t *testing.T, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				return addr
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s not listening after 20s:\n%s", p.name, p.Output())
	return ""
}

// mount is a running `kwikfs mount`.
type mount struct {
	*proc
	dir   string
	cache string
}

// startMount mounts addr at a new directory with the given cache and waits
// until the mount answers. The mount presents the client certificate of
// caFile's directory (clientCertArgs) unless extra holds --cert, or
// --no-cert (which is not passed on).
func startMount(t *testing.T, addr, caFile, cache string, extra ...string) *mount {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return startMountAt(t, addr, caFile, cache, mnt, extra...)
}

func startMountAt(t *testing.T, addr, caFile, cache, mnt string, extra ...string) *mount {
	t.Helper()
	args := []string{"mount", "--primary", addr, "--ca", caFile, "--cache", cache, "--log-level", "warn"}
	if !slices.Contains(extra, "--cert") && !slices.Contains(extra, "--no-cert") {
		args = append(args, clientCertArgs(filepath.Dir(caFile))...)
	}
	extra = slices.DeleteFunc(slices.Clone(extra), func(a string) bool { return a == "--no-cert" })
	args = append(append(args, extra...), mnt)
	return waitMounted(t, start(t, "kwikfs", args...), mnt, cache)
}

// waitMounted waits until p, a `kwikfs mount` of cache at mnt, has
// mounted, and detaches the mount at cleanup if it is left.
func waitMounted(t *testing.T, p *proc, mnt, cache string) *mount {
	t.Helper()
	m := &mount{proc: p, dir: mnt, cache: cache}
	t.Cleanup(func() {
		if isMounted(mnt) {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if isMounted(mnt) {
			return m
		}
		select {
		case <-p.done:
			t.Fatalf("kwikfs mount exited: %v\n%s", p.err, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("not mounted after 20s:\n%s", p.Output())
	return nil
}

// unmount stops the daemon with SIGINT and checks it exits 0 with the mount
// gone.
func (m *mount) unmount(t *testing.T) {
	t.Helper()
	m.unmountBy(t, syscall.SIGINT)
}

// unmountBy stops the daemon with sig and checks it exits 0 with the
// mount gone.
func (m *mount) unmountBy(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := m.stop(t, sig, 20*time.Second); err != nil {
		t.Fatalf("kwikfs mount exited with %v after %v:\n%s", err, sig, m.Output())
	}
	if isMounted(m.dir) {
		t.Fatalf("%s still mounted after the daemon exited", m.dir)
	}
}

// isMounted reports whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescapeMountinfo(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// status runs `kwikfs status --json` on the mount (see readStatus).
func (m *mount) status(t *testing.T) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := readStatus(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// run runs a command and fails the test with its output on error.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(out))
	}
	return string(out)
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitExit waits for p to exit within timeout.
func waitExit(t *testing.T, p *proc, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.name, timeout)
		return nil
	}
}
