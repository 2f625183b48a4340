// Package background runs a command's daemon as a process of its own, in
// the background, and waits until it is ready: what mount(8) needs from a
// FUSE file system's command, which must return once the mount is up and
// leave the daemon serving it. Go cannot fork, so the command runs itself
// again.
//
// # Protocol
//
// Start re-executes the running binary (os.Executable) with the same
// arguments in a new session (setsid: no controlling terminal, no SIGHUP
// or SIGINT from one), standard input and output on /dev/null and
// standard error appended to a log file. The child finds the write end of
// a pipe on the descriptor named by the environment variable EnvReadyFD,
// and ChildReporter hands it to the command. The child reports once:
// Ready ("R"), or its error ("E" and the text) when it fails first;
// either closes the pipe. The parent, reading the other end, returns nil
// at "R", the error at "E", and an error naming the exit status and the
// log when the pipe closes without a word (the child died). So a parent
// never waits past its child's readiness or death.
//
// # Cancellation
//
// If Start's context ends first, the child gets SIGTERM (then SIGKILL
// after StopGrace) and Start returns the context's error once it exited.
package background

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvReadyFD is the environment variable that tells a process Start
// started which descriptor its report pipe is.
const EnvReadyFD = "KWIKFS_READY_FD"

// StopGrace is how long a cancelled Start waits for its child to exit on
// SIGTERM before killing it.
const StopGrace = 5 * time.Second

// Report bytes.
const (
	readyByte = 'R'
	errorByte = 'E'
)

// Start runs this binary again with args (os.Args[1:] for the same
// command line) as a daemon in the background, its standard error
// appended to logFile (created with mode 0600 if missing), and waits for
// its report (see the package documentation). It returns the child's
// process ID once the child reported ready. Start must not be called by a
// child (ChildReporter non-nil); the child's environment does not carry
// EnvReadyFD on to anything it runs.
func Start(ctx context.Context, args []string, logFile string) (pid int, err error) {
	// The executable by its path, not /proc/self/exe: the kernel names
	// the process after it (ps -C, pgrep).
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("start daemon: %w", err)
	}
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("report pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = os.Args[0]
	cmd.Stderr = logf // stdin and stdout: /dev/null
	cmd.ExtraFiles = []*os.File{w}
	// ExtraFiles[0] is descriptor 3 in the child.
	cmd.Env = append(os.Environ(), EnvReadyFD+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close() // the child holds the only write end now
	if err != nil {
		return 0, fmt.Errorf("start daemon: %w", err)
	}

	type report struct {
		msg []byte
		err error
	}
	reported := make(chan report, 1)
	go func() {
		// The pipe closes when the child reports or exits, so this
		// read ends by the time Start returns or the child does.
		msg, err := io.ReadAll(r)
		reported <- report{msg, err}
	}()
	var rep report
	select {
	case rep = <-reported:
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-reported:
		case <-time.After(StopGrace):
			cmd.Process.Kill()
			<-reported
		}
		cmd.Wait()
		return 0, ctx.Err()
	}
	switch {
	case rep.err == nil && len(rep.msg) > 0 && rep.msg[0] == readyByte:
		// It lives on after this process exits: not waited for.
		pid := cmd.Process.Pid
		cmd.Process.Release()
		return pid, nil
	case rep.err == nil && len(rep.msg) > 0 && rep.msg[0] == errorByte:
		cmd.Wait() // it exits after its report
		return 0, errors.New(string(rep.msg[1:]))
	case rep.err != nil:
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("read daemon report: %w", rep.err)
	}
	cmd.Wait()
	return 0, fmt.Errorf("daemon exited (%v) before it was ready; its log is %s", cmd.ProcessState, logFile)
}

// Reporter is a child's end of the report pipe. It is not safe for
// concurrent use.
type Reporter struct {
	f *os.File // nil once reported
}

// ChildReporter returns the report pipe if Start started this process,
// and nil otherwise. It removes EnvReadyFD from the environment and marks
// the descriptor close-on-exec, so that nothing the child runs inherits
// either. Call it once.
func ChildReporter() (*Reporter, error) {
	v, ok := os.LookupEnv(EnvReadyFD)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvReadyFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor Start passes", EnvReadyFD, v)
	}
	unix.CloseOnExec(fd)
	return &Reporter{f: os.NewFile(uintptr(fd), "ready-pipe")}, nil
}

// Ready tells the parent the daemon is ready and closes the pipe. Calls
// after the first report do nothing.
func (r *Reporter) Ready() { r.send(append([]byte(nil), readyByte)) }

// Fail tells the parent the daemon failed with err (nil: with no error
// text) and closes the pipe, unless it reported already.
func (r *Reporter) Fail(err error) {
	msg := "daemon failed"
	if err != nil {
		msg = err.Error()
	}
	r.send(append([]byte{errorByte}, msg...))
}

func (r *Reporter) send(b []byte) {
	if r.f == nil {
		return
	}
	r.f.Write(b) // the parent may be gone; nothing to do about it
	r.f.Close()
	r.f = nil
}
