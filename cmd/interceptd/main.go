// Command interceptd is the daemon and its CLI; run as interceptd-cni, the
// CNI plugin (cni.go). docs/cli.md is the reference of its commands,
// generated from the command tree:
//
//go:generate go run . gen-docs ../../docs/cli.md
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/interceptd/interceptd/internal/buildinfo"
	"github.com/spf13/cobra"
)

func main() {
	if isCNI() {
		runCNI()
		return
	}
	os.Exit(run(os.Args[1:]))
}

// exitError carries a process exit status through the command functions.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// run runs the CLI with args and returns the exit status: 0, 1 when a
// command failed, 2 when it was called wrongly, or what exitError says.
func run(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	var (
		ee exitError
		ue *usageError
		re *ranError
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &re):
		fmt.Fprintf(os.Stderr, "interceptd: %v\n", re.err)
		return 1
	case errors.As(err, &ue) && ue.cmd != nil:
		cmd = ue.cmd
	}
	// Anything else is cobra's or pflag's word on the command line.
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(os.Stderr, "interceptd: %v\nusage: %s\nRun '%s --help' for more.\n", err, useLine(cmd), cmd.CommandPath())
	return 2
}

// useLine is cmd's usage line, or its subcommands' for a group.
func useLine(cmd *cobra.Command) string {
	if isGroup(cmd) {
		return cmd.CommandPath() + " COMMAND"
	}
	return cmd.UseLine()
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print interceptd's version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Version())
			return err
		},
	}
}
