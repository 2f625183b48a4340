package cli

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testFlags is a flag set with one flag of every kind a command has.
type testFlags struct {
	fl        *flag.FlagSet
	listen    string
	xattrs    bool
	jobs      int
	chunk     uint
	factor    float64
	timeout   time.Duration
	memory    Size
	secondary StringList
}

func newTestFlags() *testFlags {
	t := &testFlags{fl: flag.NewFlagSet("kwik-test", flag.ContinueOnError), memory: 256 << 20}
	t.fl.SetOutput(io.Discard)
	t.fl.StringVar(&t.listen, "listen", "127.0.0.1:4433", "")
	t.fl.BoolVar(&t.xattrs, "xattrs", false, "")
	t.fl.IntVar(&t.jobs, "jobs", 8, "")
	t.fl.UintVar(&t.chunk, "chunk", 1<<20, "")
	t.fl.Float64Var(&t.factor, "late-factor", 4, "")
	t.fl.DurationVar(&t.timeout, "timeout", 5*time.Second, "")
	t.fl.Var(&t.memory, "memory", "")
	t.fl.Var(&t.secondary, "secondary", "")
	t.fl.String("config", "", "")
	return t
}

type os_devnull struct{}

func (os_devnull) Write(p []byte) (int, error) { return len(p), nil }

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestApplyConfigSetsEveryKind: a file sets a flag of every kind from
// its TOML type, and the flags it does not name keep their defaults.
func TestApplyConfigSetsEveryKind(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		check      func(*testFlags) bool
	}{
		{"string", `listen = "0.0.0.0:4433"`, func(f *testFlags) bool { return f.listen == "0.0.0.0:4433" }},
		{"quoted key", `"listen" = "[::]:4433"`, func(f *testFlags) bool { return f.listen == "[::]:4433" }},
		{"boolean true", `xattrs = true`, func(f *testFlags) bool { return f.xattrs }},
		{"boolean false", `xattrs = false`, func(f *testFlags) bool { return !f.xattrs }},
		{"integer", `jobs = 32`, func(f *testFlags) bool { return f.jobs == 32 }},
		{"integer as string", `jobs = "3"`, func(f *testFlags) bool { return f.jobs == 3 }},
		{"unsigned", `chunk = 262144`, func(f *testFlags) bool { return f.chunk == 262144 }},
		{"float", `late-factor = 2.5`, func(f *testFlags) bool { return f.factor == 2.5 }},
		{"float from integer", `late-factor = 3`, func(f *testFlags) bool { return f.factor == 3 }},
		{"duration", `timeout = "1m30s"`, func(f *testFlags) bool { return f.timeout == 90*time.Second }},
		{"size with unit", `memory = "64M"`, func(f *testFlags) bool { return f.memory == 64<<20 }},
		{"size in bytes", `memory = 1048576`, func(f *testFlags) bool { return f.memory == 1<<20 }},
		{"array", `secondary = ["10.0.0.2:4434", "10.0.0.3:4434,name=m3"]`, func(f *testFlags) bool {
			return reflect.DeepEqual([]string(f.secondary), []string{"10.0.0.2:4434", "10.0.0.3:4434,name=m3"})
		}},
		{"empty array", `secondary = []`, func(f *testFlags) bool { return len(f.secondary) == 0 }},
		{"comments and blank lines", "# a primary\n\nlisten = \"1.2.3.4:1\" # here\n", func(f *testFlags) bool { return f.listen == "1.2.3.4:1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags()
			if err := ApplyConfig(f.fl, writeConfig(t, tc.file)); err != nil {
				t.Fatalf("ApplyConfig: %v", err)
			}
			if !tc.check(f) {
				t.Errorf("%s: flags are %+v", tc.file, *f)
			}
		})
	}
	f := newTestFlags()
	if err := ApplyConfig(f.fl, writeConfig(t, `jobs = 2`)); err != nil {
		t.Fatal(err)
	}
	if f.listen != "127.0.0.1:4433" || f.memory != 256<<20 || f.timeout != 5*time.Second || len(f.secondary) != 0 {
		t.Errorf("flags the file does not name changed: %+v", *f)
	}
}

// TestApplyConfigCommandLineOverrides: a flag given on the command line
// keeps its value, a repeatable one too (the file's list is not added),
// and the file sets the rest.
func TestApplyConfigCommandLineOverrides(t *testing.T) {
	f := newTestFlags()
	if err := f.fl.Parse([]string{"--listen", "127.0.0.1:0", "--secondary", "cli:1", "--xattrs=false"}); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "listen = \"0.0.0.0:4433\"\nsecondary = [\"file:1\", \"file:2\"]\nxattrs = true\njobs = 4\n")
	if err := ApplyConfig(f.fl, path); err != nil {
		t.Fatal(err)
	}
	if f.listen != "127.0.0.1:0" || !reflect.DeepEqual([]string(f.secondary), []string{"cli:1"}) || f.xattrs || f.jobs != 4 {
		t.Errorf("listen %q, secondary %q, xattrs %v, jobs %d; want 127.0.0.1:0, [cli:1], false, 4", f.listen, f.secondary, f.xattrs, f.jobs)
	}
	// What the file set counts as set, as a flag on the command line does.
	var set []string
	f.fl.Visit(func(fl *flag.Flag) { set = append(set, fl.Name) })
	if want := []string{"jobs", "listen", "secondary", "xattrs"}; !reflect.DeepEqual(set, want) {
		t.Errorf("set flags %q, want %q", set, want)
	}
}

// TestApplyConfigErrors: every mistake is a usage error naming the file,
// the line and the key, and the flags before it in the file may be set
// but none after.
func TestApplyConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       string // after "config FILE"
	}{
		{"unknown key", "jobs = 2\nlisen = \"x\"\n", `:2: key "lisen": unknown key: kwik-test has no flag --lisen`},
		{"config in the file", "config = \"/etc/other.toml\"\n", `:1: key "config": a config file cannot name another`},
		{"string for a boolean", "\n\nxattrs = \"yes\"\n", `:3: key "xattrs": want a boolean (true or false), not the string "yes"`},
		{"integer for a string", "listen = 4433\n", `:1: key "listen": want a string, not the integer 4433`},
		{"boolean for a number", "jobs = true\n", `:1: key "jobs": want a string or a number, not the boolean true`},
		{"string for a list", "secondary = \"10.0.0.2:4434\"\n", `:1: key "secondary": want an array of strings (the flag is repeatable), not the string "10.0.0.2:4434"`},
		{"integer in a list", "secondary = [\"a:1\", 2]\n", `:1: key "secondary": element 1: want a string, not the integer 2`},
		{"array for a scalar", "memory = [\"1M\"]\n", `:1: key "memory": want a string or a number, not an array`},
		{"table", "jobs = 1\n[listen]\nhost = \"x\"\n", `:2: key "listen": want a string, not a table`},
		{"date", "jobs = 2024-01-01\n", `:1: key "jobs": want a string or a number, not a date or time`},
		{"bad size", "memory = \"64Q\"\n", `:1: key "memory": invalid value "64Q": bad size "64Q"`},
		{"bad duration", "timeout = \"30\"\n", `:1: key "timeout": time: missing unit in duration "30"`},
		{"integer for a duration", "timeout = 30\n", `:1: key "timeout": want a duration as a string, e.g. "30s" or "2m", not the integer 30`},
		{"not TOML", "jobs = 2\nlisten: x\n", `:2: `},
		{"duplicate key", "jobs = 2\njobs = 3\n", `:2: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFlags()
			path := writeConfig(t, tc.file)
			err := ApplyConfig(f.fl, path)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("ApplyConfig = %v, want a usage error", err)
			}
			if want := "config " + path + tc.want; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\ndoes not contain %q", err, want)
			}
		})
	}
}

func TestApplyConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.toml")
	err := ApplyConfig(newTestFlags().fl, path)
	if !errors.Is(err, ErrUsage) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("ApplyConfig(missing file) = %v, want a usage error naming %s", err, path)
	}
}

// TestApplyConfigTypeCheckedWhenOverridden: a key the command line set is
// not applied, but a wrong type there is still an error.
func TestApplyConfigTypeCheckedWhenOverridden(t *testing.T) {
	f := newTestFlags()
	if err := f.fl.Parse([]string{"--xattrs"}); err != nil {
		t.Fatal(err)
	}
	if err := ApplyConfig(f.fl, writeConfig(t, "xattrs = 1\n")); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `key "xattrs"`) {
		t.Errorf("ApplyConfig = %v, want a usage error for key xattrs", err)
	}
}
