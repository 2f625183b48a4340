package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kwikfs/kwikfs/internal/cli"
	"github.com/kwikfs/kwikfs/internal/cli/clitest"
)

// TestCommandHelp: every command's --help (and `kwikfs help COMMAND`) is
// its usage, every flag and an example, with exit code 0.
func TestCommandHelp(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			clitest.CheckHelp(t, "kwikfs "+c.name, run(context.Background(), c.name, []string{"--help"}))
			clitest.CheckHelp(t, "kwikfs "+c.name, run(context.Background(), c.name, []string{"-h"}))
			clitest.CheckHelp(t, "kwikfs "+c.name, run(context.Background(), "help", []string{c.name}))
		})
	}
}

// TestUsageListsCommands: `kwikfs help` lists every command with its
// summary.
func TestUsageListsCommands(t *testing.T) {
	var b bytes.Buffer
	printUsage(&b)
	for _, c := range commands {
		if !strings.Contains(b.String(), "\n  "+c.name+strings.Repeat(" ", 10-len(c.name))+c.summary+"\n") {
			t.Errorf("kwikfs help does not list %s:\n%s", c.name, b.String())
		}
	}
	if err := run(context.Background(), "nope", nil); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("kwikfs nope: %v, want a usage error", err)
	}
}
