package demo

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
)

// stopGrace is how long stop waits after SIGTERM before it sends SIGKILL.
const stopGrace = 5 * time.Second

// process is a child process the demo started and owns. One goroutine
// waits for it; it ends when the process exits, and stop and kill return
// only after it has.
type process struct {
	name string
	addr string // a server's listening address; "" for others
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done
}

// startProcess runs the sibling binary name (see siblingBinary) with args,
// its standard error going to stderr and its standard output to stdout
// (nil: discarded). The process runs in a process group of its own, so that
// a Ctrl-C in the terminal reaches the demo alone, which then stops its
// processes in order; it gets SIGTERM should the demo die first.
func startProcess(name string, stdout, stderr io.Writer, args ...string) (*process, error) {
	bin, err := siblingBinary(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = cmd.Wait()
	}()
	return p, nil
}

// stop sends SIGTERM, waits up to stopGrace for the exit, then sends
// SIGKILL and waits for the exit. It may be called more than once, and
// after the process has exited.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.kill()
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// startServer runs a kwik server binary exporting tree on listen (port 0:
// a free port) and returns it once it listens, with its address in addr.
// The primary gets the signing key, a secondary its public half; extra
// flags follow.
func startServer(name, tree, certDir, listen string, extra ...string) (*process, error) {
	args := []string{
		"--root", tree, "--listen", listen,
		"--cert", filepath.Join(certDir, certgen.CertFile),
		"--key", filepath.Join(certDir, certgen.KeyFile),
		"--client-ca", filepath.Join(certDir, certgen.CAFile),
		"--log-level", "warn"}
	if name == "kwik-primary" {
		args = append(args, "--signing-key", filepath.Join(certDir, certgen.SigningKeyFile))
	} else {
		args = append(args, "--verify-key", filepath.Join(certDir, certgen.VerifyKeyFile))
	}
	lw := &listenWriter{found: make(chan string, 1)}
	p, err := startProcess(name, lw, os.Stderr, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case p.addr = <-lw.found:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %v", name, p.err)
	case <-t.C:
		p.stop()
		return nil, fmt.Errorf("%s: not listening after 10s", name)
	}
}

// listenWriter is a server's standard output: it sends the address of the
// first "listening on ADDR" line on found and discards everything else.
type listenWriter struct {
	found chan string // buffered, of capacity 1

	mu   sync.Mutex // guards line and sent
	line []byte     // the current line so far
	sent bool
}

func (w *listenWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent {
		return len(b), nil
	}
	w.line = append(w.line, b...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			return len(b), nil
		}
		if addr, ok := strings.CutPrefix(string(w.line[:i]), "listening on "); ok {
			w.found <- strings.TrimSpace(addr)
			w.sent, w.line = true, nil
			return len(b), nil
		}
		w.line = w.line[i+1:]
	}
}

// siblingBinary finds the binary name in the directory of this executable,
// or else on PATH.
func siblingBinary(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found beside kwikfs or on PATH (run make build): %w", name, err)
	}
	return p, nil
}
