package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// readLoop reads path with bufSize read(2) calls, checks it got want bytes
// (any number when want < 0) and returns MB/s.
func readLoop(path string, bufSize int, want int64) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, bufSize)
	start := time.Now()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if want >= 0 && n != want {
		return 0, fmt.Errorf("read %d bytes of %s, want %d", n, path, want)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

// readFile reads path with 1 MiB read(2) calls and returns MB/s.
func readFile(path string) (float64, error) { return readLoop(path, 1<<20, -1) }

// readChild reads path to the end in a child process (`kwikbench
// read-file`, see readFileChild) with bufSize read(2) calls, checks it got
// want bytes, and returns MiB/s and the child's CPU time (its rusage).
func readChild(path string, bufSize int, want int64) (mibps float64, cpu time.Duration, err error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "read-file", path, strconv.Itoa(bufSize), strconv.FormatInt(want, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	mbps, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return mbps * 1e6 / (1 << 20), rusageCPU(cmd.ProcessState), nil
}

// readFileChild is `kwikbench read-file PATH BUFSIZE WANT`: it reads PATH
// with readLoop and prints its MB/s.
func readFileChild(args []string) error {
	bufSize, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	want, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil {
		return err
	}
	mbps, err := readLoop(args[0], bufSize, want)
	if err != nil {
		return err
	}
	fmt.Println(mbps)
	return nil
}

// What dropCaches drops: the values of /proc/sys/vm/drop_caches.
const (
	dropPageCache = "1" // the page cache
	dropAll       = "3" // the page cache, dentries and inodes
)

// dropCaches writes dirty pages back (sync) and drops what, dropPageCache
// or dropAll. It needs root.
func dropCaches(what string) error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte(what), 0); err != nil {
		return fmt.Errorf("drop caches (needs root): %w", err)
	}
	return nil
}
