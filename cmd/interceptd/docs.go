package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// genDocsCmd writes docs/cli.md; `go generate ./cmd/interceptd` runs it,
// and TestTheCommittedReferenceIsCurrent fails when the file is stale.
func genDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs FILE|-",
		Short:  "write the command reference (docs/cli.md) from the command tree",
		Hidden: true,
		Args:   nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b bytes.Buffer
			if err := genDocs(&b, cmd.Root()); err != nil {
				return err
			}
			if args[0] == "-" {
				_, err := cmd.OutOrStdout().Write(b.Bytes())
				return err
			}
			return os.WriteFile(args[0], b.Bytes(), 0o644)
		},
	}
}

// genDocs writes the reference of every command people use (hidden ones
// are not), in the order of the tree, in Markdown.
func genDocs(w io.Writer, root *cobra.Command) error {
	var cmds []*cobra.Command
	walk(root, func(c *cobra.Command) {
		if !c.Hidden && !hiddenUnder(c) && c.Name() != "help" {
			cmds = append(cmds, c)
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, `# interceptd command reference

Generated from the command tree by `+"`go generate ./cmd/interceptd`"+`: do not
edit by hand (a test fails when this file and the commands differ). The same
text is each command's `+"`--help`"+`.

%s

Exit status: 0 on success, 1 when a command fails (the message says why), 2
when a command is called wrongly (an unknown command or flag, a flag that does
not apply, a missing argument); `+"`run`"+` exits with its command's status.
Every flag is written with two dashes (`+"`--config`"+`, not `+"`-config`"+`); flags may
come before or after the arguments, and the global flags before the command.

`, root.Long)
	for _, c := range cmds {
		fmt.Fprintf(&b, "- [%s](#%s): %s\n", c.CommandPath(), strings.ReplaceAll(c.CommandPath(), " ", "-"), c.Short)
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "\n## %s\n\n", c.CommandPath())
		if c.Long != "" && c != root {
			fmt.Fprintf(&b, "%s\n\n", c.Long)
		} else {
			fmt.Fprintf(&b, "%s.\n\n", upperFirst(c.Short))
		}
		fmt.Fprintf(&b, "```\n%s\n```\n", useLine(c))
		if c.HasAvailableSubCommands() {
			b.WriteString("\nCommands:\n\n")
			for _, s := range c.Commands() {
				if s.IsAvailableCommand() {
					fmt.Fprintf(&b, "- [%s](#%s): %s\n", s.Name(), strings.ReplaceAll(s.CommandPath(), " ", "-"), s.Short)
				}
			}
		}
		if c.Example != "" {
			fmt.Fprintf(&b, "\nExamples:\n\n```\n%s\n```\n", c.Example)
		}
		if fl := flagUsages(c.LocalFlags()); fl != "" {
			fmt.Fprintf(&b, "\nFlags:\n\n```\n%s\n```\n", fl)
		}
		if gl := globalFlags(c); gl != "" {
			fmt.Fprintf(&b, "\nGlobal flags:\n\n```\n%s\n```\n", gl)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hiddenUnder reports whether one of c's parents is hidden.
func hiddenUnder(c *cobra.Command) bool {
	for p := c.Parent(); p != nil; p = p.Parent() {
		if p.Hidden {
			return true
		}
	}
	return false
}

// flagUsages is the usage of fs without --help, which every command has.
func flagUsages(fs *pflag.FlagSet) string {
	out := pflag.NewFlagSet("", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			out.AddFlag(f)
		}
	})
	return strings.TrimRight(out.FlagUsagesWrapped(0), " \n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
