package main

import (
	"strings"

	"github.com/kwikfs/kwikfs/internal/cli"
)

// cacheSize is the flag.Value of --cache-size, as daemon.Config.CacheSize
// holds it: 0 for "auto", -1 for no limit, else a size in bytes
// (parseCacheSize).
type cacheSize int64

func (c *cacheSize) String() string {
	switch {
	case *c == 0:
		return "auto"
	case *c < 0:
		return "unlimited"
	}
	return cli.FormatSize(int64(*c))
}

func (c *cacheSize) Set(v string) error {
	n, err := parseCacheSize(v)
	if err != nil {
		return err
	}
	*c = cacheSize(n)
	return nil
}

// parseCacheSize parses the --cache-size value into daemon.Config.CacheSize:
// "auto" is 0 (the daemon's default), "unlimited", "none" and "0" are -1
// (no limit), and anything else is a SIZE as cli.ParseSize reads it, e.g.
// "512M", "10G", "1GiB", "1048576".
func parseCacheSize(v string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "auto":
		return 0, nil
	case "unlimited", "none", "0":
		return -1, nil
	}
	return cli.ParseSize(v)
}
