// Command kwikfs is the kwikfs client.
//
//	kwikfs mount --primary HOST:PORT --ca FILE --cert FILE --key FILE --cache DIR [--background] MOUNTPOINT
//	kwikfs HOST:PORT MOUNTPOINT -o ca=FILE,cache=DIR[,cert=FILE,key=FILE][,FLAG=VALUE|FLAG]...
//	kwikfs status [--json] MOUNTPOINT
//	kwikfs prefetch [--detach] PATH...
//	kwikfs get --primary HOST:PORT --ca FILE [--cert FILE --key FILE] REMOTE_PATH... DEST
//	kwikfs certs --out DIR [--host NAME_OR_IP]...
//	kwikfs certs --out DIR --client NAME
//	kwikfs demo [--dir DIR] [--tree DIR] [--mountpoint DIR] [--faults [--faults-size SIZE]]
//
// The second form is what `mount -t fuse.kwikfs HOST:PORT MOUNTPOINT -o
// OPTIONS` runs (through mount.fuse3): every flag of kwikfs mount is an
// option, and it returns once the daemon it leaves in the background has
// mounted.
//
// Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kwikfs/kwikfs/internal/cli"
)

const usage = `usage:
  kwikfs mount --primary HOST:PORT --ca FILE [--cert FILE --key FILE] --cache DIR [flags] MOUNTPOINT
  kwikfs HOST:PORT MOUNTPOINT -o ca=FILE,cache=DIR[,cert=FILE,key=FILE][,FLAG=VALUE|FLAG]...   (mount -t fuse.kwikfs)
  kwikfs status [--json] MOUNTPOINT
  kwikfs prefetch [--detach] PATH...   (or --cancel ID PATH)
  kwikfs get --primary HOST:PORT --ca FILE [--cert FILE --key FILE] [flags] REMOTE_PATH... DEST
  kwikfs certs --out DIR [--host NAME_OR_IP]...   (or --client NAME: one more client certificate)
  kwikfs demo [--dir DIR] [--tree DIR] [--mountpoint DIR] [--faults [--faults-size SIZE]]
Run "kwikfs COMMAND -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(cli.ExitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "mount":
		err = runMount(ctx, args)
	case "status":
		err = runStatus(ctx, args)
	case "prefetch":
		err = runPrefetch(ctx, args)
	case "get":
		err = runGet(ctx, args)
	case "certs":
		err = runCerts(args)
	case "demo":
		err = runDemo(ctx, args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		if isMountSource(cmd) {
			err = runMountHelper(ctx, os.Args[1:])
			break
		}
		fmt.Fprint(os.Stderr, usage)
		err = cli.Usagef("unknown command %q", cmd)
	}
	stop()
	cli.Fail("kwikfs", err)
}
