package background

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs the child's part when Start re-executes the test binary:
// os.Args[1] names what the child does.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "child" {
		os.Exit(child(os.Args[2]))
	}
	os.Exit(m.Run())
}

func child(what string) int {
	rep, err := ChildReporter()
	if err != nil || rep == nil {
		fmt.Fprintln(os.Stderr, "no reporter:", err)
		return 9
	}
	if _, ok := os.LookupEnv(EnvReadyFD); ok {
		fmt.Fprintln(os.Stderr, EnvReadyFD, "still set")
		return 9
	}
	fmt.Fprintln(os.Stderr, "child log line")
	switch what {
	case "ready":
		rep.Ready()
		rep.Fail(errors.New("after ready")) // ignored
		time.Sleep(time.Minute)
	case "fail":
		rep.Fail(errors.New("mount /x: no such directory"))
		return 1
	case "die":
		return 3
	case "hang":
		time.Sleep(time.Minute)
	}
	return 0
}

// gone waits until process pid no longer exists.
func gone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		// Not our child once released: it is re-parented and reaped
		// by init (or the subreaper) when it exits.
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			return
		}
	}
	t.Fatalf("process %d still running", pid)
}

func TestStartReady(t *testing.T) {
	log := filepath.Join(t.TempDir(), "daemon.log")
	pid, err := Start(context.Background(), []string{"child", "ready"}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(pid, syscall.SIGKILL) })
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("getsid(%d) = %d, %v: want a session of its own", pid, sid, err)
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Fatalf("daemon %d not running after it reported ready: %v", pid, err)
	}
	data, err := os.ReadFile(log)
	if err != nil || string(data) != "child log line\n" {
		t.Errorf("log = %q, %v; want the child's standard error", data, err)
	}
	if st, err := os.Stat(log); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v, %v; want 0600", st.Mode(), err)
	}
	unix.Kill(pid, syscall.SIGTERM)
	gone(t, pid)
}

func TestStartFail(t *testing.T) {
	log := filepath.Join(t.TempDir(), "daemon.log")
	_, err := Start(context.Background(), []string{"child", "fail"}, log)
	if err == nil || err.Error() != "mount /x: no such directory" {
		t.Fatalf("Start = %v, want the child's error", err)
	}
}

func TestStartDiesSilently(t *testing.T) {
	log := filepath.Join(t.TempDir(), "daemon.log")
	_, err := Start(context.Background(), []string{"child", "die"}, log)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), log) {
		t.Fatalf("Start = %v, want the exit status and the log's name", err)
	}
}

func TestStartCancelled(t *testing.T) {
	log := filepath.Join(t.TempDir(), "daemon.log")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := Start(ctx, []string{"child", "hang"}, log)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want %v", err, context.DeadlineExceeded)
	}
	// SIGTERM ends the child at once (no handler): no wait for StopGrace.
	if d := time.Since(begin); d > StopGrace {
		t.Fatalf("Start returned after %v", d)
	}
}

func TestStartLogUnwritable(t *testing.T) {
	_, err := Start(context.Background(), []string{"child", "ready"}, filepath.Join(t.TempDir(), "missing", "daemon.log"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "daemon log: ") {
		t.Fatalf("Start = %v, want the log's error", err)
	}
}

func TestChildReporterOutsideStart(t *testing.T) {
	if rep, err := ChildReporter(); rep != nil || err != nil {
		t.Fatalf("ChildReporter() = %v, %v outside a child", rep, err)
	}
	t.Setenv(EnvReadyFD, "x")
	if _, err := ChildReporter(); err == nil {
		t.Fatal("a bad descriptor number was taken")
	}
}
