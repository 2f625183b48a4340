// Command kwikfs is the kwikfs client.
//
//	kwikfs mount --primary HOST:PORT --ca FILE --cert FILE --key FILE --cache DIR MOUNTPOINT
//	kwikfs status [--json] MOUNTPOINT
//	kwikfs prefetch [--detach] PATH...
//	kwikfs get --primary HOST:PORT --ca FILE [--cert FILE --key FILE] REMOTE_PATH... DEST
//	kwikfs certs --out DIR [--host NAME_OR_IP]...
//	kwikfs certs --out DIR --client NAME
//	kwikfs demo [--dir DIR] [--tree DIR] [--mountpoint DIR] [--faults [--faults-size SIZE]]
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
		fmt.Fprint(os.Stderr, usage)
		err = cli.Usagef("unknown command %q", cmd)
	}
	stop()
	cli.Fail("kwikfs", err)
}
