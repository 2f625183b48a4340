package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func newHelpFlags() (*FlagSet, *string, *Size, *time.Duration) {
	fl := NewFlagSet("kwik-test", Help{
		Usage:    "kwik-test --root DIR [flags]\nkwik-test --version",
		About:    "Serves a test.",
		Examples: "kwik-test --root /srv/data --memory 1G",
	})
	fl.AddConfigFlag()
	root := fl.String("root", "", "directory to serve (required)")
	mem := Size(256 << 20)
	fl.Var(&mem, "memory", "memory budget, a `SIZE`")
	timeout := fl.Duration("timeout", 5*time.Second, "how long to wait")
	return fl, root, &mem, timeout
}

// TestFlagSetHelp: -h and --help return the help, with the synopsis, the
// paragraph, every flag with its default and the example, and it is not
// a failure.
func TestFlagSetHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		fl, _, _, _ := newHelpFlags()
		err := fl.Parse([]string{"--root", "/x", arg})
		var he *HelpError
		if !errors.As(err, &he) || ExitCode(err) != ExitOK || !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("Parse(%s) = %v, want a HelpError with exit code 0", arg, err)
		}
		for _, want := range []string{
			"usage: kwik-test --root DIR [flags]\n       kwik-test --version\n\nServes a test.\n\nFlags:\n",
			"  --config FILE\n", "  --memory SIZE\n      memory budget, a SIZE (default 256M)\n",
			"  --root string\n      directory to serve (required)\n", "  --timeout duration\n      how long to wait (default 5s)\n",
			"Example:\n  kwik-test --root /srv/data --memory 1G\n",
		} {
			if !strings.Contains(he.Text, want) {
				t.Errorf("help does not contain %q:\n%s", want, he.Text)
			}
		}
		if he.Flags != fl.FlagSet {
			t.Errorf("HelpError.Flags is not the flag set parsed")
		}
	}
}

// TestFlagSetParseMistake: an unknown flag or a bad value is a usage
// error (exit code 2).
func TestFlagSetParseMistake(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"--memory", "64Q"}, {"--timeout"}} {
		fl, _, _, _ := newHelpFlags()
		if err := fl.Parse(args); !errors.Is(err, ErrUsage) || ExitCode(err) != ExitUsage {
			t.Errorf("Parse(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestFlagSetConfig: --config sets what the command line does not, and
// its errors are usage errors.
func TestFlagSetConfig(t *testing.T) {
	fl, root, mem, timeout := newHelpFlags()
	path := writeConfig(t, "root = \"/srv/file\"\nmemory = \"1G\"\ntimeout = \"1m\"\n")
	if err := fl.Parse([]string{"--timeout", "2s", "--config", path, "extra"}); err != nil {
		t.Fatal(err)
	}
	if *root != "/srv/file" || *mem != 1<<30 || *timeout != 2*time.Second || fl.NArg() != 1 {
		t.Errorf("root %q, memory %d, timeout %v, %d arguments; want /srv/file, 1G, 2s (the command line's), 1", *root, *mem, *timeout, fl.NArg())
	}
	fl, _, _, _ = newHelpFlags()
	if err := fl.Parse([]string{"--config", writeConfig(t, "rot = \"/x\"\n")}); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), `key "rot"`) {
		t.Errorf("Parse with an unknown key = %v, want a usage error naming it", err)
	}
}

// TestFlagSetWithoutConfig: a FlagSet without AddConfigFlag has no
// --config.
func TestFlagSetWithoutConfig(t *testing.T) {
	fl := NewFlagSet("kwik-test", Help{Usage: "kwik-test"})
	if err := fl.Parse([]string{"--config", "x.toml"}); !errors.Is(err, ErrUsage) {
		t.Errorf("Parse(--config) = %v, want a usage error", err)
	}
}
