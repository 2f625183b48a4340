package mountopt

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"ro", []string{"ro"}},
		{"ca=/etc/ca.pem,cache=/var/cache/k,debug", []string{"ca=/etc/ca.pem", "cache=/var/cache/k", "debug"}},
		{`a=1,b="x,y",c`, []string{"a=1", "b=x,y", "c"}},
		{",,a,,", []string{"a"}},
		{"ca=/x y", []string{"ca=/x y"}},
	} {
		if got := Split(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want Args
		err  string
	}{
		{[]string{"h:1", "/mnt", "-o", "rw,ca=/x,dev,suid"}, Args{"h:1", "/mnt", []string{"rw", "ca=/x", "dev", "suid"}}, ""},
		{[]string{"-o", "ro", "h:1", "-oca=/x", "/mnt"}, Args{"h:1", "/mnt", []string{"ro", "ca=/x"}}, ""},
		{[]string{"h:1", "/mnt"}, Args{"h:1", "/mnt", nil}, ""},
		{[]string{"h:1", "/mnt", "-o"}, Args{}, "-o needs OPTIONS"},
		{[]string{"h:1", "/mnt", "-n", "-o", "ro"}, Args{}, `unknown argument "-n"`},
		{[]string{"h:1"}, Args{}, "got 1 arguments"},
		{[]string{"h:1", "/a", "/b"}, Args{}, "got 3 arguments"},
	} {
		got, err := Parse(tc.argv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v, want an error with %q", tc.argv, err, tc.err)
			}
			continue
		}
		if err != nil || got.Source != tc.want.Source || got.Mountpoint != tc.want.Mountpoint || !slices.Equal(got.Options, tc.want.Options) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.argv, got, err, tc.want)
		}
	}
}

// flags is a flag set like a mount command's: strings, a duration, two
// booleans.
func flags() (*flag.FlagSet, *string, *time.Duration, *bool, *bool) {
	fl := flag.NewFlagSet("test", flag.ContinueOnError)
	ca := fl.String("ca", "", "")
	timeout := fl.Duration("fetch-timeout", 15*time.Second, "")
	debug := fl.Bool("debug", false, "")
	noexec := fl.Bool("noexec", false, "")
	return fl, ca, timeout, debug, noexec
}

func TestApplySetsFlags(t *testing.T) {
	fl, ca, timeout, debug, noexec := flags()
	opts := Split("rw,ca=/etc/k/ca.pem,fetch-timeout=3s,debug,noexec,noauto,_netdev,nofail,x-systemd.automount,x-systemd.device-timeout=10,comment=x,defaults,nodev,nosuid,dev,suid,noatime,user,users")
	if err := Apply(fl, opts, map[string]string{"rw": "", "ro": ""}); err != nil {
		t.Fatal(err)
	}
	if *ca != "/etc/k/ca.pem" || *timeout != 3*time.Second || !*debug || !*noexec {
		t.Fatalf("ca=%q fetch-timeout=%v debug=%v noexec=%v", *ca, *timeout, *debug, *noexec)
	}
}

func TestApplyAlias(t *testing.T) {
	fl, _, _, _, noexec := flags()
	if err := Apply(fl, []string{"noexec", "exec"}, map[string]string{"exec": "noexec=false"}); err != nil {
		t.Fatal(err)
	}
	if *noexec {
		t.Fatal("exec after noexec left noexec set")
	}
}

func TestApplyRefuses(t *testing.T) {
	for _, tc := range []struct{ opt, err string }{
		{"bogus=1", `unknown option "bogus"`},
		{"allow_other", `unknown option "allow_other"`},
		{"rw", `unknown option "rw"`}, // not an alias in this call
		{"ca", `option "ca" needs a value (ca=...)`},
		{"fetch-timeout=soon", `option fetch-timeout: invalid value "soon"`},
		{"debug=maybe", `option debug: invalid value "maybe"`},
	} {
		fl, _, _, _, _ := flags()
		fl.SetOutput(new(strings.Builder))
		err := Apply(fl, []string{"ca=/x", tc.opt}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Apply(%q) = %v, want an error with %q", tc.opt, err, tc.err)
		}
	}
}
