package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
)

// Help is what a command's --help says besides its flags.
type Help struct {
	// Usage is the synopsis, one or more lines without "usage: ", e.g.
	// "kwikfs status [--json] MOUNTPOINT".
	Usage string
	// About is a paragraph on what the command does.
	About string
	// Examples are command lines, one or more, each with a comment line
	// ("# ...") before it when it needs one.
	Examples string
}

// FlagSet is a flag.FlagSet with the help of its command and, when
// AddConfigFlag was called, a --config FILE flag. Its Parse returns the
// help for -h and --help (a *HelpError, which Fail prints on stdout), and
// prints the short usage on stderr for a mistake; flag's own messages are
// dropped (its output is io.Discard), since Parse returns them as errors.
type FlagSet struct {
	*flag.FlagSet
	help   Help
	config *string // --config's value; nil without AddConfigFlag
}

// NewFlagSet returns an empty FlagSet named name (the command line that
// runs it, e.g. "kwikfs mount") with help h. Its Usage prints the short
// usage (Help.Usage and a pointer to --help) on stderr: a command calls it
// before returning a usage error of its own.
func NewFlagSet(name string, h Help) *FlagSet {
	f := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), help: h}
	f.SetOutput(io.Discard)
	f.Usage = func() { f.PrintUsage(os.Stderr) }
	return f
}

// AddConfigFlag defines --config FILE: a TOML file whose keys are flag
// names, read by Parse as ApplyConfig describes.
func (f *FlagSet) AddConfigFlag() {
	f.config = f.String("config", "", "read flags from this TOML `FILE`: one key per flag (listen = \"0.0.0.0:4433\", xattrs = true, a repeatable flag takes an array); flags on the command line override it")
}

// Parse parses args, then, when --config names a file, sets the flags
// the command line did not from it (ApplyConfig). For -h or --help it
// returns a *HelpError holding the help; for a mistake it prints the short
// usage on stderr and returns an error wrapping ErrUsage, as are the
// config file's errors.
func (f *FlagSet) Parse(args []string) error {
	usage := f.Usage
	f.Usage = func() {} // flag calls it for -h and for mistakes; Parse prints instead
	err := f.FlagSet.Parse(args)
	f.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		var b strings.Builder
		f.PrintHelp(&b)
		return &HelpError{Flags: f.FlagSet, Text: b.String()}
	case err != nil:
		f.Usage()
		return Usagef("%v", err)
	}
	return f.LoadConfig()
}

// LoadConfig sets the flags not set yet from the file --config names, if
// any (ApplyConfig). Parse calls it; a command that sets flags another way
// (the mount(8) options) calls it after them.
func (f *FlagSet) LoadConfig() error {
	if f.config != nil && *f.config != "" {
		return ApplyConfig(f.FlagSet, *f.config)
	}
	return nil
}

// PrintUsage writes the short usage: the synopsis and where to find more.
func (f *FlagSet) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\nRun \"%s --help\" for its flags and examples.\n", indentLines(f.help.Usage, "       "), f.Name())
}

// PrintHelp writes the whole help: synopsis, what the command does, every
// flag with its default, and the examples.
func (f *FlagSet) PrintHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n", indentLines(f.help.Usage, "       "))
	if f.help.About != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(f.help.About))
	}
	first := true
	f.VisitAll(func(fl *flag.Flag) {
		if first {
			fmt.Fprintln(w, "Flags:")
			first = false
		}
		printFlag(w, fl)
	})
	if !first {
		fmt.Fprintln(w)
	}
	if f.help.Examples != "" {
		fmt.Fprintf(w, "Example:\n  %s\n", indentLines(strings.TrimSpace(f.help.Examples), "  "))
	}
}

// printFlag writes one flag for the help: "  --name TYPE", then its usage
// with its default, unless that is the zero value, indented and wrapped
// (its own line breaks are spaces).
func printFlag(w io.Writer, fl *flag.Flag) {
	name, usage := flag.UnquoteUsage(fl)
	fmt.Fprintf(w, "  --%s", fl.Name)
	if name != "" {
		fmt.Fprintf(w, " %s", name)
	}
	fmt.Fprintln(w)
	if !isZeroValue(fl) {
		def := fl.DefValue
		if g, ok := fl.Value.(flag.Getter); ok {
			if _, ok := g.Get().(string); ok {
				def = strconv.Quote(def)
			}
		}
		usage += " (default " + def + ")"
	}
	fmt.Fprintf(w, "%s\n", wrap(usage, "      ", 80))
}

// isZeroValue reports whether fl's default is its type's zero value, as
// flag.PrintDefaults decides whether to show it.
func isZeroValue(fl *flag.Flag) (zero bool) {
	defer func() {
		if recover() != nil {
			zero = false // a String method that needs a set-up value
		}
	}()
	t := reflect.TypeOf(fl.Value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	return fl.DefValue == z.Interface().(flag.Value).String()
}

// wrap breaks text into lines of at most width columns where it can, each
// starting with indent; runs of white space, line breaks included, are
// one space.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line)
	return b.String()
}

// indentLines indents every line of s but the first by prefix.
func indentLines(s, prefix string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+prefix)
}

// HelpError is what FlagSet.Parse returns for -h or --help: the help
// asked for, which is not a failure. Fail prints Text on stdout and exits
// with ExitOK, as ExitCode maps it.
type HelpError struct {
	// Flags is the flag set Text describes.
	Flags *flag.FlagSet
	// Text is the help, as FlagSet.PrintHelp writes it.
	Text string
}

func (e *HelpError) Error() string { return "help requested" }

// Is makes errors.Is(err, flag.ErrHelp) true.
func (e *HelpError) Is(target error) bool { return target == flag.ErrHelp }
