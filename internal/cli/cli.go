// Package cli holds what the kwikfs commands share: flag sets with their
// help and --config files (FlagSet, ApplyConfig), the SIZE flag type
// (Size), the flags both servers take (ServerFlags), logging set-up and
// the mapping from errors to exit codes.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Exit codes of every kwikfs command.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitCanceled = 130 // interrupted, as a shell reports SIGINT
)

// ExitCode maps the error a command ended with to its exit code; help
// asked for (flag.ErrHelp, a HelpError) is a success.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.Is(err, context.Canceled):
		return ExitCanceled
	case errors.Is(err, ErrUsage):
		return ExitUsage
	default:
		return ExitError
	}
}

// ErrUsage marks a command-line mistake.
var ErrUsage = errors.New("usage")

// Usagef returns an error wrapping ErrUsage.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// NewLogger returns a text logger on stderr at the named level (debug, info,
// warn, error).
func NewLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, Usagef("bad --log-level %q", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// Fail prints err for command prog on stderr and exits with its code. It
// prints nothing for nil or an interruption (context.Canceled), and the
// help for a *HelpError, on stdout.
func Fail(prog string, err error) {
	if err == nil {
		os.Exit(ExitOK)
	}
	if he := (*HelpError)(nil); errors.As(err, &he) {
		fmt.Print(he.Text)
		os.Exit(ExitOK)
	}
	if !errors.Is(err, context.Canceled) && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	}
	os.Exit(ExitCode(err))
}

// StringList is a repeatable string flag: each use appends its value.
type StringList []string

func (l *StringList) String() string     { return strings.Join(*l, ",") }
func (l *StringList) Set(v string) error { *l = append(*l, v); return nil }

// IsTerminal reports whether w is a terminal (an *os.File on a tty), where
// a progress line may be redrawn in place.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
