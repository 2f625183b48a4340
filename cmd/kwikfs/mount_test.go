package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/cli"
)

func TestIsMountSource(t *testing.T) {
	for arg, want := range map[string]bool{
		"127.0.0.1:4433": true, "primary.example.net:4433": true, "[::1]:4433": true,
		"mount": false, "status": false, "host:": false, "-h": false, "/mnt/data": false,
	} {
		if got := isMountSource(arg); got != want {
			t.Errorf("isMountSource(%q) = %v, want %v", arg, got, want)
		}
	}
}

// TestMountHelperOptionsAreFlags: the options of the mount(8) form set the
// flags of kwikfs mount of the same names; the options mount(8), fstab and
// systemd add are dropped; the daemon goes to the background.
func TestMountHelperOptionsAreFlags(t *testing.T) {
	m, err := parseMountHelper([]string{"h.example.net:4433", "/mnt/data", "-o",
		"rw,ca=/etc/k/ca.pem,cert=/etc/k/c.pem,key=/etc/k/k.pem,cache=/var/cache/k,fetch-timeout=3s,memory=512M,read-ahead=0,noexec,debug,log=/var/log/k.log,_netdev,x-systemd.automount,dev,suid"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := m.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Primary != "h.example.net:4433" || cfg.Mountpoint != "/mnt/data" || cfg.CAFile != "/etc/k/ca.pem" ||
		cfg.CertFile != "/etc/k/c.pem" || cfg.KeyFile != "/etc/k/k.pem" || cfg.CacheDir != "/var/cache/k" ||
		cfg.FetchTimeout != 3*time.Second || cfg.MemoryBytes != 512<<20 || cfg.ReadAheadMax != -1 || !cfg.NoExec || !cfg.Debug {
		t.Errorf("config %+v", cfg)
	}
	if !*m.background || *m.logFile != "/var/log/k.log" {
		t.Errorf("background %v, log %q; want true, /var/log/k.log", *m.background, *m.logFile)
	}

	m, err = parseMountHelper([]string{"h:1", "/mnt", "-o", "ca=/x,cache=/c,noexec,exec,ro,background=false"})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.NoExec || *m.background {
		t.Errorf("exec after noexec: noexec %v; background=false: background %v", m.cfg.NoExec, *m.background)
	}
}

func TestMountHelperRefuses(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		err  string
	}{
		{[]string{"h:1", "/mnt", "-o", "ca=/x,cache=/c,allow_other"}, `unknown option "allow_other"`},
		{[]string{"h:1", "/mnt", "-o", "ca=/x,cache=/c,memory=lots"}, `option memory: invalid value "lots"`},
		{[]string{"h:1", "/mnt", "/other"}, "want SOURCE MOUNTPOINT -o OPTIONS"},
	} {
		_, err := parseMountHelper(tc.argv)
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseMountHelper(%q) = %v, want a usage error with %q", tc.argv, err, tc.err)
		}
	}
	// Missing required options name them as options.
	m, err := parseMountHelper([]string{"h:1", "/mnt", "-o", "ca=/x,cert=/c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.config(); !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "mount needs primary=, ca= and cache=") {
		t.Errorf("config without cache= = %v", err)
	}
}
