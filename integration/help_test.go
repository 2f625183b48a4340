package integration

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// runOutput runs one of our binaries and returns its stdout, stderr and
// exit code.
func runOutput(t *testing.T, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// TestHelpOnStdoutUsageOnStderr: --help of every command prints its help
// on stdout alone and exits 0; a flag it does not know prints the short
// usage on stderr alone and exits 2.
func TestHelpOnStdoutUsageOnStderr(t *testing.T) {
	for _, argv := range [][]string{
		{"kwik-primary"}, {"kwik-secondary"},
		{"kwikfs", "mount"}, {"kwikfs", "status"}, {"kwikfs", "prefetch"},
		{"kwikfs", "get"}, {"kwikfs", "certs"}, {"kwikfs", "demo"},
	} {
		name := strings.Join(argv, " ")
		stdout, stderr, code := runOutput(t, argv[0], append(argv[1:], "--help")...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: "+name+" ") || !strings.Contains(stdout, "\nExample:\n  "+name+" ") {
			t.Errorf("%s --help: exit code %d, stderr %q, stdout:\n%s", name, code, stderr, stdout)
		}
		stdout, stderr, code = runOutput(t, argv[0], append(argv[1:], "--no-such-flag")...)
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "usage: "+name+" ") ||
			!strings.Contains(stderr, `Run "`+name+` --help" for its flags and examples.`) || !strings.Contains(stderr, "-no-such-flag") {
			t.Errorf("%s --no-such-flag: exit code %d, stdout %q, stderr:\n%s", name, code, stdout, stderr)
		}
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		stdout, stderr, code := runOutput(t, "kwikfs", args...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "\n  mount ") || !strings.Contains(stdout, "\n  demo ") {
			t.Errorf("kwikfs %s: exit code %d, stderr %q, stdout:\n%s", args[0], code, stderr, stdout)
		}
	}
	for _, args := range [][]string{nil, {"nope"}} {
		stdout, stderr, code := runOutput(t, "kwikfs", args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "\n  mount ") {
			t.Errorf("kwikfs %q: exit code %d, stdout %q, stderr:\n%s", args, code, stdout, stderr)
		}
	}
}
