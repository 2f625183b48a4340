package main

import (
	"testing"

	"github.com/kwikfs/kwikfs/internal/cli/clitest"
)

func TestHelp(t *testing.T) {
	clitest.CheckHelp(t, "kwik-primary", run([]string{"--help"}))
}
