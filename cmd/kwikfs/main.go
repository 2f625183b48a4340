// Command kwikfs is the kwikfs client.
//
//	kwikfs mount --primary HOST:PORT --ca FILE --cert FILE --key FILE --cache DIR [--background] MOUNTPOINT
//	kwikfs mount --config FILE MOUNTPOINT
//	kwikfs HOST:PORT MOUNTPOINT -o ca=FILE,cache=DIR[,cert=FILE,key=FILE][,FLAG=VALUE|FLAG]...
//	kwikfs status [--json] MOUNTPOINT
//	kwikfs prefetch [--detach] PATH...
//	kwikfs get --primary HOST:PORT --ca FILE [--cert FILE --key FILE] REMOTE_PATH... DEST
//	kwikfs certs --out DIR [--host NAME_OR_IP]...
//	kwikfs certs --out DIR --client NAME
//	kwikfs demo [--dir DIR] [--tree DIR] [--mountpoint DIR] [--faults [--faults-size SIZE]]
//	kwikfs help [COMMAND]
//
// The form with HOST:PORT first is what `mount -t fuse.kwikfs HOST:PORT
// MOUNTPOINT -o OPTIONS` runs (through mount.fuse3): every flag of kwikfs
// mount is an option, and it returns once the daemon it leaves in the
// background has mounted.
//
// "kwikfs COMMAND --help" prints a command's flags with their defaults
// and examples. Exit codes: 0 success (--help included), 1 failure, 2
// usage error, 130 interrupted.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kwikfs/kwikfs/internal/cli"
)

// command is one kwikfs command.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

// commands are kwikfs's commands, in the order the help lists them.
var commands = []command{
	{"mount", "mount a primary's export read-only at a directory, through FUSE", runMount},
	{"status", "show a mount's connection, cache, paths and prefetch jobs", runStatus},
	{"prefetch", "fetch files and trees of a mount into its cache, in its daemon", runPrefetch},
	{"get", "copy files and trees of a primary's export to local disk, without a mount", runGet},
	{"certs", "make a CA, server and client certificates and the primary's signing key", func(_ context.Context, args []string) error { return runCerts(args) }},
	{"demo", "run a primary, two secondaries and a mount on this machine and show them work", runDemo},
}

// printUsage writes the list of commands.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `usage: kwikfs COMMAND [flags] [arguments]

kwikfs mounts a directory tree exported by a kwik-primary, read-only, and
fetches files in hash-verified chunks over one multipath session to the
primary and its secondaries (kwik-secondary mirrors), keeping them in a
local cache.

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `  help      show this list, or a command's help: kwikfs help mount

Run "kwikfs COMMAND --help" for a command's flags, their defaults and
examples.

Example:
  kwikfs mount --config /etc/kwikfs/mount.toml /mnt/data
`)
}

func main() {
	if len(os.Args) < 2 {
		printUsage(os.Stderr)
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1], os.Args[2:])
	stop()
	cli.Fail("kwikfs", err)
}

// run runs command name with args.
func run(ctx context.Context, name string, args []string) error {
	switch name {
	case "-h", "--help", "-help", "help":
		if len(args) == 0 {
			printUsage(os.Stdout)
			return nil
		}
		name, args = args[0], []string{"--help"}
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, args)
		}
	}
	if isMountSource(name) {
		return runMountHelper(ctx, append([]string{name}, args...))
	}
	printUsage(os.Stderr)
	return cli.Usagef("unknown command %q", name)
}
