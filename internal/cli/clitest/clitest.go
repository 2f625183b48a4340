// Package clitest checks what the commands built on package cli share, in
// their tests.
package clitest

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/kwikfs/kwikfs/internal/cli"
)

// CheckHelp checks that err, what a command returned for --help, is the
// help (a *cli.HelpError, exit code 0) with the command's usage line,
// every flag of its flag set and an example.
func CheckHelp(t testing.TB, command string, err error) {
	t.Helper()
	var he *cli.HelpError
	if !errors.As(err, &he) {
		t.Fatalf("%s --help returned %v, want the help", command, err)
	}
	if code := cli.ExitCode(err); code != cli.ExitOK {
		t.Errorf("%s --help: exit code %d, want %d", command, code, cli.ExitOK)
	}
	if !strings.HasPrefix(he.Text, "usage: "+command+" ") {
		t.Errorf("%s --help does not start with its usage line:\n%s", command, he.Text)
	}
	if !strings.Contains(he.Text, "\nExample:\n  "+command+" ") {
		t.Errorf("%s --help has no example of %s:\n%s", command, command, he.Text)
	}
	n := 0
	he.Flags.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(he.Text, "\n  --"+f.Name+" ") && !strings.Contains(he.Text, "\n  --"+f.Name+"\n") {
			t.Errorf("%s --help does not list --%s", command, f.Name)
		}
	})
	if got := strings.Count(he.Text, "\n  --"); got != n {
		t.Errorf("%s --help lists %d flags, its flag set has %d", command, got, n)
	}
}
