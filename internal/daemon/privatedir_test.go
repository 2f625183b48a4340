package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivateDir: a new cache directory is made 0700, an existing one open
// to others loses the group's and others' permissions, and a symbolic
// link, a file and (as root) another user's directory are refused.
func TestPrivateDir(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	base := t.TempDir()
	mode := func(p string) os.FileMode {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}

	fresh := filepath.Join(base, "a", "cache")
	if err := PrivateDir(fresh, log); err != nil || mode(fresh) != 0o700 {
		t.Errorf("new directory: %v, mode %#o; want 0700", err, mode(fresh))
	}
	loose := filepath.Join(base, "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := PrivateDir(loose, log); err != nil || mode(loose) != 0o700 {
		t.Errorf("a 0775 directory: %v, mode %#o; want 0700", err, mode(loose))
	}

	link := filepath.Join(base, "link")
	if err := os.Symlink(loose, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, file} {
		if err := PrivateDir(p, log); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("PrivateDir(%s) = %v, want a refusal", p, err)
		}
	}
	if os.Geteuid() == 0 {
		theirs := filepath.Join(base, "theirs")
		if err := os.Mkdir(theirs, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := PrivateDir(theirs, log); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
			t.Errorf("another user's directory: %v, want a refusal", err)
		}
	}
}
