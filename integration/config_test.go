package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kwikfs/kwikfs/internal/certgen"
	"github.com/kwikfs/kwikfs/kwik"
)

// writeTOML writes a config file of key = value lines (values already in
// TOML syntax) into dir and returns its path.
func writeTOML(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServersAndMountFromConfigFiles starts a kwik-secondary, a
// kwik-primary and a mount, each from a --config file alone but for the
// primary's --listen, which overrides the file's (an address no host has,
// where it could not start). The primary's file names the secondary
// (array), serves data only through it, cuts chunks of 256K and admits
// one session per source address; the secondary's names the verify key
// (array); the mount's turns the extended attributes on. A 4 MiB file
// then reads back identical through the mount, in 16 chunks (the
// primary's chunk size), with bytes from the secondary (the primary's
// secondaries and the secondary's verify key, which checks the primary's
// commands), user.kwikfs.* answered
// (the mount's xattrs), and a second session from 127.0.0.1 is refused
// (the primary's max-sessions-per-source).
func TestServersAndMountFromConfigFiles(t *testing.T) {
	const size = 4 << 20
	root := filepath.Join(t.TempDir(), "tree")
	writeRandomFile(t, filepath.Join(root, "f.bin"), size, 41)
	certDir := certs(t)
	conf := t.TempDir()
	pem := func(name string) string { return strconv.Quote(filepath.Join(certDir, name)) }

	secFile := writeTOML(t, conf, "secondary.toml",
		"# a mirror of the primary's tree",
		"root = "+strconv.Quote(root),
		`listen = "127.0.0.1:0"`,
		"cert = "+pem(certgen.CertFile),
		"key = "+pem(certgen.KeyFile),
		"client-ca = "+pem(certgen.CAFile),
		"verify-key = ["+pem(certgen.VerifyKeyFile)+"]",
		"max-commands-per-path = 8",
		`write-timeout = "20s"`,
		`log-level = "warn"`)
	sp := start(t, "kwik-secondary", "--config", secFile)
	secAddr := waitListening(t, sp)

	primFile := writeTOML(t, conf, "primary.toml",
		"root = "+strconv.Quote(root),
		`listen = "192.0.2.1:4433"`, // TEST-NET-1: overridden by --listen
		"cert = "+pem(certgen.CertFile),
		"key = "+pem(certgen.KeyFile),
		"client-ca = "+pem(certgen.CAFile),
		"signing-key = "+pem(certgen.SigningKeyFile),
		"secondary = ["+strconv.Quote(secAddr)+"]",
		`serve-data = "fallback"`,
		`chunk-size = "256K"`,
		"max-sessions-per-source = 1",
		`reply-budget = "16M"`,
		`log-level = "warn"`)
	pp := start(t, "kwik-primary", "--config", primFile, "--listen", "127.0.0.1:0")
	primAddr := waitListening(t, pp)
	if !strings.HasPrefix(primAddr, "127.0.0.1:") {
		t.Fatalf("primary listens on %s, want 127.0.0.1 (--listen over the file's)", primAddr)
	}

	mnt := filepath.Join(t.TempDir(), "mnt")
	cache := filepath.Join(t.TempDir(), "cache")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountFile := writeTOML(t, conf, "mount.toml",
		"primary = "+strconv.Quote(primAddr),
		"ca = "+pem(certgen.CAFile),
		"cert = "+pem(certgen.ClientCertFile),
		"key = "+pem(certgen.ClientKeyFile),
		"cache = "+strconv.Quote(cache),
		`memory = "128M"`,
		`memory-cache = "16M"`,
		`cache-size = "1G"`,
		"xattrs = true",
		`log-level = "warn"`)
	m := waitMounted(t, start(t, "kwikfs", "mount", "--config", mountFile, mnt), mnt, cache)
	waitPathsUp(t, m, 2)

	copyPath := filepath.Join(t.TempDir(), "copy.bin")
	run(t, time.Minute, "cp", filepath.Join(mnt, "f.bin"), copyPath)
	if fileSHA(t, copyPath) != fileSHA(t, filepath.Join(root, "f.bin")) {
		t.Fatal("the copy differs from the source")
	}
	getfattr := func(name string) string {
		t.Helper()
		return run(t, 30*time.Second, "getfattr", "--absolute-names", "--only-values", "-n", name, filepath.Join(mnt, "f.bin"))
	}
	if got, want := getfattr("user.kwikfs.cached"), "1.000 (16/16 chunks)"; got != want {
		t.Errorf("user.kwikfs.cached = %q, want %q (chunks of 256K)", got, want)
	}
	var sum, fromSecondary uint64
	src := getfattr("user.kwikfs.sources")
	for _, line := range strings.Split(strings.TrimSuffix(src, "\n"), "\n") {
		addr, n, _ := strings.Cut(line, " ")
		v, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			t.Fatalf("sources line %q in %q", line, src)
		}
		sum += v
		if addr == secAddr {
			fromSecondary = v
		}
	}
	// The first chunk comes with the file's opening (FILES), which the
	// attribute does not count; what READ replies brought, it does.
	if sum > size || fromSecondary == 0 {
		t.Errorf("user.kwikfs.sources = %q; want at most %d bytes in all, some from the secondary %s", src, size, secAddr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := kwik.Dial(ctx, primAddr, &kwik.Config{TLSConfig: clientTLS(t, certDir)})
	var se *kwik.SessionError
	if err == nil {
		s.Close()
		t.Fatal("a second session from 127.0.0.1 was admitted; the file allows one per source address")
	}
	if !errors.As(err, &se) || se.Code != kwik.SessionLimitError || !strings.Contains(se.Message, "limit of 1 sessions per source address") {
		t.Fatalf("second session from 127.0.0.1: %v, want the per-source session limit of 1", err)
	}
	m.unmount(t)
}

// TestConfigFileMistakes: a config file with an unknown key, a key of
// the wrong type or a config key stops each command at once with exit
// code 2 and a message naming the file, the line and the key.
func TestConfigFileMistakes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		command []string
		file    string
		want    string // after "config FILE"
	}{
		{[]string{"kwik-primary"}, "root = \"/srv\"\nlisen = \"0.0.0.0:4433\"\n", `:2: key "lisen": unknown key: kwik-primary has no flag --lisen`},
		{[]string{"kwik-secondary"}, "verify-key = \"/etc/kwikfs/verify-key.pem\"\n", `:1: key "verify-key": want an array of strings`},
		{[]string{"kwikfs", "mount"}, "\nxattrs = \"yes\"\n", `:2: key "xattrs": want a boolean (true or false), not the string "yes"`},
		{[]string{"kwikfs", "mount"}, "memory-cache = \"64Q\"\n", `:1: key "memory-cache": invalid value "64Q": bad size "64Q"`},
		{[]string{"kwikfs", "get"}, "config = \"/etc/kwikfs/other.toml\"\n", `:1: key "config": a config file cannot name another`},
	} {
		name := strings.Join(tc.command, " ")
		file := writeTOML(t, dir, strings.ReplaceAll(name, " ", "-")+".toml", tc.file)
		args := append(tc.command[1:], "--config", file)
		if tc.command[0] == "kwikfs" {
			args = append(args, "a", "b") // positional arguments, to reach the file
		}
		cmd := exec.Command(bin(tc.command[0]), args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s --config: %v, want exit code 2\n%s", name, err, stderr.String())
			continue
		}
		if want := fmt.Sprintf("config %s%s", file, tc.want); !strings.Contains(stderr.String(), want) || stdout.Len() != 0 {
			t.Errorf("%s --config: stderr %q, stdout %q; want %q on stderr alone", name, stderr.String(), stdout.String(), want)
		}
	}
}
