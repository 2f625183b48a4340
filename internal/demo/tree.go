package demo

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// MakeSampleTree writes the demo's sample tree into dir: nested directories,
// a few hundred small files, names with spaces and non-ASCII letters, a
// symlink, a 0600 file, an empty file and a 64 MiB file of pseudo-random
// bytes (the same bytes every time).
func MakeSampleTree(dir string) error {
	rng := rand.New(rand.NewChaCha8([32]byte{'k', 'w', 'i', 'k'}))
	write := func(rel string, data []byte, mode os.FileMode) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
		return os.Chmod(p, mode)
	}
	files := map[string]string{
		"README.txt":                        "This tree is served by kwik-primary and mounted read-only by kwikfs.\n",
		"docs/guide.md":                     "# Guide\n\nEvery chunk you read was verified against its hash (BLAKE3) before you saw it.\n",
		"docs/nested/deeper/deepest.txt":    "five levels down\n",
		"names with spaces/hello world.txt": "spaces are fine\n",
		"unicodé/naïve-café.txt":            "non-ASCII names are fine\n",
		"empty":                             "",
	}
	for rel, text := range files {
		if err := write(rel, []byte(text), 0o644); err != nil {
			return err
		}
	}
	if err := write("private/secret.txt", []byte("only the owner may read this\n"), 0o600); err != nil {
		return err
	}
	for i := range 300 {
		data := make([]byte, 1+rng.IntN(8192))
		for j := range data {
			data[j] = byte('a' + rng.IntN(26))
		}
		if err := write(fmt.Sprintf("small/%02d/file-%03d.txt", i/30, i), data, 0o644); err != nil {
			return err
		}
	}
	big := make([]byte, 64<<20)
	for i := 0; i+8 <= len(big); i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			big[i+k] = byte(v >> (8 * k))
		}
	}
	if err := write("big/sample-64MiB.bin", big, 0o644); err != nil {
		return err
	}
	if err := os.Symlink("docs/guide.md", filepath.Join(dir, "guide-link")); err != nil {
		return err
	}
	return nil
}
