package main

import "github.com/kwikfs/kwikfs/internal/cli"

// The --help of each command.
var (
	mountHelp = cli.Help{
		Usage: "kwikfs mount --primary HOST:PORT --ca FILE [--cert FILE --key FILE] --cache DIR [flags] MOUNTPOINT\nkwikfs mount --config FILE [flags] MOUNTPOINT\nkwikfs HOST:PORT MOUNTPOINT -o ca=FILE,cache=DIR[,cert=FILE,key=FILE][,FLAG=VALUE|FLAG]...   (what mount -t fuse.kwikfs runs)",
		About: `Mounts the tree a kwik-primary exports at MOUNTPOINT, read-only, through
FUSE, and serves it until unmounted (umount MOUNTPOINT), SIGINT or
SIGTERM; with --background it returns once mounted. File data is fetched
in chunks, each verified against its hash, over one multipath session to the primary and the secondaries it names,
and kept in the chunk store under --cache, so nothing is fetched twice.
--memory bounds the memory for file data and --cache-size the disk space
of the store. Every flag may be given as a key of the --config file
instead (flags on the command line override it), and every flag is an
option of mount -o in the mount(8) form (ca=FILE, xattrs). Exit status 0 once
unmounted, 1 on failure, 2 on a usage error.`,
		Examples: `kwikfs mount --primary 10.0.0.1:4433 --ca certs/ca.pem --cert certs/client.pem \
    --key certs/client-key.pem --cache /var/cache/kwikfs --memory 1G --cache-size 50G /mnt/data
# the same from /etc/kwikfs/mount.toml (primary = "10.0.0.1:4433", memory = "1G", ...):
kwikfs mount --config /etc/kwikfs/mount.toml /mnt/data
# through mount(8), the daemon in the background (umount stops it):
mount -t fuse.kwikfs 10.0.0.1:4433 /mnt/data -o ca=/etc/kwikfs/ca.pem,cache=/var/cache/kwikfs`,
	}
	statusHelp = cli.Help{
		Usage: "kwikfs status [--json] MOUNTPOINT",
		About: `Asks the daemon serving the kwikfs mount at MOUNTPOINT for its state:
connection, data fetched, reads served from memory and from the store,
store size against its limit, one row per path of the multipath session
and the prefetch jobs. --json prints the same as a JSON object.`,
		Examples: `kwikfs status /mnt/data
kwikfs status --json /mnt/data | jq .paths`,
	}
	prefetchHelp = cli.Help{
		Usage: "kwikfs prefetch [--detach] PATH...\nkwikfs prefetch --cancel ID PATH",
		About: `Has the daemon of the kwikfs mount holding the PATHs (files or
directories, all on one mount) fetch them whole into its cache, and follows
the job with a progress bar until it ends. The job runs in the daemon: it
goes on after an interruption (and --detach returns at once), resumes after
a restart of the mount, and kwikfs status lists it. --cancel stops job ID
of the mount holding PATH.`,
		Examples: `kwikfs prefetch /mnt/data/datasets/imagenet
kwikfs prefetch --detach /mnt/data/models /mnt/data/checkpoints/latest.pt
kwikfs prefetch --cancel 3 /mnt/data`,
	}
	getHelp = cli.Help{
		Usage: "kwikfs get --primary HOST:PORT --ca FILE [--cert FILE --key FILE] [flags] REMOTE_PATH... DEST\nkwikfs get --config FILE [flags] REMOTE_PATH... DEST",
		About: `Copies files and directory trees of the primary's export to DEST without
FUSE, every chunk verified, as cp -r would: one REMOTE_PATH (relative to the
exported root; "" or / is the root) and a DEST that does not exist make DEST
the copy; several paths, or a DEST that is a directory, go inside DEST under
their base names. Symbolic links, permission bits and mtimes are kept. Run
it again after an interruption and it fetches only what is missing: files
complete at DEST (same size and mtime) are skipped, and the verified chunks
of partial files (NAME.kwikpart) are kept. Every flag may be given as a
key of the --config file instead. Flags go before the paths.
Exit status 0: everything copied; 1: something failed (each named on
stderr); 2: usage error.`,
		Examples: `kwikfs get --primary 10.0.0.1:4433 --ca certs/ca.pem --cert certs/client.pem \
    --key certs/client-key.pem datasets/imagenet /scratch/imagenet`,
	}
	certsHelp = cli.Help{
		Usage: `kwikfs certs --out DIR [--host NAME_OR_IP]...
kwikfs certs --out DIR --client NAME [--validity DURATION]
kwikfs certs --out DIR --server NAME [--host NAME_OR_IP]... [--validity DURATION]
kwikfs certs --out DIR --signing-key-only`,
		About: `The first form makes a CA, a server certificate, a client certificate and
the primary's signing key (signing-key.pem, for the primary alone) with its
public half (verify-key.pem, for the secondaries). The second and third
issue another client certificate, or a certificate for one server, from that
CA. The last makes a new signing key pair.`,
		Examples: `kwikfs certs --out certs --host 10.0.0.1 --host primary.example.net
kwikfs certs --out certs --client laptop
kwikfs certs --out certs --server mirror-1 --host mirror-1.example.net`,
	}
	demoHelp = cli.Help{
		Usage: "kwikfs demo [--dir DIR] [--tree DIR] [--mountpoint DIR] [--faults [--faults-size SIZE]]",
		About: `Starts a kwik-primary and two kwik-secondaries on loopback, mounts their
export at --mountpoint and shows the paths at work while you read files;
Ctrl-C stops everything. Certificates, a sample tree (unless --tree names
one) and the cache go under --dir. With --faults it plays a scripted story
instead: a secondary killed and restarted during a copy, the mount daemon
killed with SIGKILL during another and mounted again, every copy checked
with sha256.`,
		Examples: `kwikfs demo --dir demo --mountpoint mnt
kwikfs demo --faults --faults-size 64M`,
	}
)
