// Package mountopt reads the command line mount(8) gives a FUSE file
// system — SOURCE MOUNTPOINT -o OPTIONS — into a command's own flags.
//
// # How mount(8) gets here
//
// `mount -t fuse.NAME SOURCE MOUNTPOINT -o OPTS` (or an fstab line of type
// fuse.NAME) makes util-linux's mount run /sbin/mount.fuse.NAME if it
// exists and /sbin/mount.fuse (fuse3's mount.fuse3) otherwise. mount.fuse3
// runs `NAME SOURCE MOUNTPOINT -o OPTS` through /bin/sh. mount(8) clears
// PATH first, so the shell looks NAME up in its default path
// (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin with
// Debian's dash). On the way, mount(8) keeps x-* options to itself and
// drops noauto and the like, and adds rw when ro is not given;
// mount.fuse3 drops _netdev, auto, noauto, user, users, nouser and adds
// dev and suid unless nodev and nosuid are given.
//
// # Options
//
// Apply turns each option into a flag: key=value is fl.Set(key, value),
// and a bare key is fl.Set(key, "true") when key is a boolean flag. So
// every flag of the command is an option with no list to keep. Options
// that mount(8), fstab and systemd use for themselves (Generic) are
// accepted and dropped; a command maps or drops others with its aliases.
package mountopt

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// Args is what mount.fuse3 passes: SOURCE MOUNTPOINT -o OPTIONS.
type Args struct {
	Source, Mountpoint string
	// Options are the comma-separated options of every -o, in order.
	Options []string
}

// Parse reads SOURCE MOUNTPOINT and any number of "-o OPTS" or "-oOPTS",
// in any order, as mount.fuse3 and a person typing the same form give
// them. Any other dash argument is an error.
func Parse(argv []string) (Args, error) {
	var a Args
	var pos []string
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		switch {
		case arg == "-o":
			if i+1 == len(argv) {
				return Args{}, fmt.Errorf("-o needs OPTIONS")
			}
			i++
			a.Options = append(a.Options, Split(argv[i])...)
		case strings.HasPrefix(arg, "-o"):
			a.Options = append(a.Options, Split(arg[2:])...)
		case strings.HasPrefix(arg, "-") && arg != "-":
			return Args{}, fmt.Errorf("unknown argument %q: want SOURCE MOUNTPOINT -o OPTIONS", arg)
		default:
			pos = append(pos, arg)
		}
	}
	if len(pos) != 2 {
		return Args{}, fmt.Errorf("want SOURCE MOUNTPOINT -o OPTIONS, got %d arguments besides -o", len(pos))
	}
	a.Source, a.Mountpoint = pos[0], pos[1]
	return a, nil
}

// Split splits an option string at the commas outside double quotes, as
// libmount does, and drops the quotes around a value: `a=1,b="x,y"` is
// "a=1" and "b=x,y". Empty options (",,") are dropped.
func Split(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
		}
		cur.Reset()
	}
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

// generic are the options, besides x-* and comment=*, that mount(8),
// fstab, mount.fuse3 and systemd use for themselves, or that ask for what
// a FUSE daemon gives anyway (access-time and sync modes).
var generic = []string{
	"defaults", "auto", "noauto", "_netdev", "nofail", "user", "users", "nouser", "owner", "group",
	"dev", "nodev", "suid", "nosuid", "sync", "async", "dirsync",
	"atime", "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime",
	"lazytime", "nolazytime", "silent", "loud", "iversion", "noiversion",
}

// Generic reports whether opt is an option mount(8), fstab or systemd use
// for themselves (noauto, _netdev, nofail, user, x-systemd.automount,
// comment=...), or one asking for what a FUSE daemon gives anyway (nodev,
// noatime, sync): Apply drops them.
func Generic(opt string) bool {
	key, _, _ := strings.Cut(opt, "=")
	return strings.HasPrefix(key, "x-") || key == "comment" || slices.Contains(generic, opt)
}

// Apply sets the flags opts name on fl (see the package documentation).
// aliases maps an option, bare or key=value as written, to the option it
// stands for ("exec": "noexec=false"), or to "" to accept and drop it; an
// alias is looked up before Generic. An option that names no flag, or a
// bare key of a flag that is not boolean, or a value the flag refuses is
// an error naming it; the flags set before it stay set.
func Apply(fl *flag.FlagSet, opts []string, aliases map[string]string) error {
	for _, opt := range opts {
		if to, ok := aliases[opt]; ok {
			if to == "" {
				continue
			}
			opt = to
		} else if Generic(opt) {
			continue
		}
		key, value, hasValue := strings.Cut(opt, "=")
		f := fl.Lookup(key)
		if f == nil {
			return fmt.Errorf("unknown option %q", key)
		}
		if !hasValue {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				return fmt.Errorf("option %q needs a value (%s=...)", key, key)
			}
			value = "true"
		}
		if err := fl.Set(key, value); err != nil {
			return fmt.Errorf("option %s: invalid value %q: %v", key, value, err)
		}
	}
	return nil
}
