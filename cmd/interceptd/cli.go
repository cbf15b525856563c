package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// The command tree is built by newRoot for each run, so that no flag value
// outlives the invocation that set it (the tests run many in one process).
// Each command lives beside the code it runs: a constructor returning a
// *cobra.Command with only the flags that apply to it. A new command is one
// more constructor added in newRoot; a new flag is one more line in the
// constructor (or in policyFlags, for every command that sets a policy).

// globals are the persistent flags, set before or after the command.
type globals struct {
	socket string // --admin-socket
	output string // --output: "", "json" or "table"
}

// Names of the persistent flags, and the annotation by which a command says
// which of them it uses: the others are not shown in its help and refused
// when given, as any flag that does not apply.
const (
	flagSocket = "admin-socket"
	flagOutput = "output"
	annGlobals = "interceptd/globals"
)

// uses marks cmd as taking the named persistent flags.
func uses(cmd *cobra.Command, names ...string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[annGlobals] = strings.Join(names, ",")
	return cmd
}

func takes(cmd *cobra.Command, name string) bool {
	for _, n := range strings.Split(cmd.Annotations[annGlobals], ",") {
		if n == name {
			return true
		}
	}
	return false
}

// client is the admin API client for the socket --admin-socket names.
func (g *globals) client() *admin.Client { return client(g.socket) }

// usageError is a mistake in how a command was called: exit status 2,
// with the command's usage line.
type usageError struct {
	cmd *cobra.Command // nil: the root
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(cmd *cobra.Command, format string, a ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, a...)}
}

// ranError is an error returned by a command's own work (not by parsing
// its command line): exit status 1.
type ranError struct{ err error }

func (e *ranError) Error() string { return e.err.Error() }
func (e *ranError) Unwrap() error { return e.err }

const rootLong = `interceptd: per-container network namespaces whose DNS and HTTP egress is
intercepted and answered by in-process handlers.

Client commands find the daemon through --admin-socket or INTERCEPTD_SOCKET
(default ` + defaultSocket + `).`

// cobra's settings are the package's: set once, not per tree.
func init() {
	// Commands in the order they are added: the daemon, sandboxes, data,
	// then the rest.
	cobra.EnableCommandSorting = false
	cobra.AddTemplateFunc("globalFlags", globalFlags)
	cobra.AddTemplateFunc("commandList", commandList)
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "interceptd",
		Short: "per-container network namespaces with intercepted DNS and HTTP egress",
		Long:  rootLong,
		Args:  noArgs,
		// Errors and usage are printed by run, once, with the right exit status.
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.check(cmd)
		},
		RunE:        group,
		Annotations: map[string]string{"interceptd/group": "true"},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, flagSocket, "", "admin socket `path` of the daemon (default $INTERCEPTD_SOCKET or "+defaultSocket+")")
	pf.StringVarP(&g.output, flagOutput, "o", "", "output `format`: json or table (default: a table for lists and summaries, JSON for records)")
	root.RegisterFlagCompletionFunc(flagOutput, cobra.FixedCompletions([]string{"json", "table"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		serveCmd(),
		sandboxCmd(g),
		runCmd(g),
		runExecCmd(),
		dataCmd(g, "kv"),
		dataCmd(g, "blob"),
		dataCmd(g, "state"),
		workerCmd(g),
		statusCmd(g),
		reloadCmd(g),
		storeCmd(g),
		caCmd(),
		cleanupCmd(g),
		cniCmd(g),
		configCmd(),
		versionCmd(),
		genDocsCmd(),
	)
	// Made here rather than at Execute, so that the help and the generated
	// reference list it.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			completionHelp(c)
		}
	}
	root.SetFlagErrorFunc(flagError)
	root.SetUsageTemplate(usageTemplate)
	walk(root, func(c *cobra.Command) {
		if c.RunE != nil {
			c.RunE = ranErrors(c.RunE)
		}
	})
	return root
}

// completionHelp replaces cobra's help of the completion commands, whose
// headings would break the reference's.
func completionHelp(c *cobra.Command) {
	c.Short = "print a shell completion script (bash, zsh, fish, powershell)"
	c.Long = `Prints the script that makes a shell complete interceptd's commands, flags
and arguments. Sandbox and worker names complete from the running daemon
(nothing, silently, when none answers).`
	load := map[string]string{
		"bash":       "source <(interceptd completion bash)\n  interceptd completion bash > /etc/bash_completion.d/interceptd   # every new shell (needs bash-completion)",
		"zsh":        "source <(interceptd completion zsh)\n  interceptd completion zsh > \"${fpath[1]}/_interceptd\"            # every new shell",
		"fish":       "interceptd completion fish | source\n  interceptd completion fish > ~/.config/fish/completions/interceptd.fish   # every new shell",
		"powershell": "interceptd completion powershell | Out-String | Invoke-Expression",
	}
	for _, s := range c.Commands() {
		s.Short = "print the " + s.Name() + " completion script"
		s.Long = "Prints the " + s.Name() + " completion script. Load it in this shell, or for every new one, as the examples show."
		s.Example = "  " + load[s.Name()]
	}
}

// ranErrors marks the errors of a command's work as such, so that run
// tells them from the errors of parsing its command line.
func ranErrors(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var ue *usageError
		var ee exitError
		if err == nil || errors.As(err, &ue) || errors.As(err, &ee) {
			return err
		}
		return &ranError{err}
	}
}

// walk calls f on cmd and every command under it, hidden ones included.
func walk(cmd *cobra.Command, f func(*cobra.Command)) {
	f(cmd)
	for _, c := range cmd.Commands() {
		walk(c, f)
	}
}

// check refuses the persistent flags cmd does not use, and an --output
// other than json or table.
func (g *globals) check(cmd *cobra.Command) error {
	for _, name := range []string{flagSocket, flagOutput} {
		if !cmd.Flags().Changed(name) || takes(cmd, name) || cmd.LocalNonPersistentFlags().Lookup(name) != nil {
			continue
		}
		return usageErrorf(cmd, "--%s does not apply to %s", name, cmd.CommandPath())
	}
	switch g.output {
	case "", "json", "table":
		return nil
	}
	return usageErrorf(cmd, "--output %q: want json or table", g.output)
}

// group is what a command that only groups others does when run: without
// a subcommand, it shows its help (on stderr, as a usage error).
func group(cmd *cobra.Command, args []string) error {
	cmd.SetOut(cmd.ErrOrStderr())
	cmd.Help()
	return exitError{2}
}

// noArgs refuses arguments; for a group, the argument is an unknown
// command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasAvailableSubCommands() {
		hint := ""
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's default for the root
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
		}
		return usageErrorf(cmd, "unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
	}
	return usageErrorf(cmd, "%s takes no arguments, got %q", cmd.CommandPath(), args)
}

// nArgs wants between min and max arguments (max -1: no limit), and names
// the missing ones from the command's Use line.
func nArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min {
			names := strings.Fields(cmd.Use)[1:]
			missing := "an argument"
			if len(args) < len(names) {
				missing = names[len(args)]
			}
			return usageErrorf(cmd, "%s: missing %s", cmd.CommandPath(), missing)
		}
		if max >= 0 && len(args) > max {
			return usageErrorf(cmd, "%s: unexpected argument %q", cmd.CommandPath(), args[max])
		}
		return nil
	}
}

// flagError turns a flag parsing error into a usage error that, for a flag
// another command has, names the commands it goes with.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		var with []string
		walk(cmd.Root(), func(c *cobra.Command) {
			if !c.Hidden && c.LocalNonPersistentFlags().Lookup(name) != nil {
				with = append(with, strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" "))
			}
		})
		if len(with) > 0 {
			return usageErrorf(cmd, "--%s goes with %s, not %s", name, strings.Join(with, " or "), strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" "))
		}
	}
	// Go's flag package took -config; pflag reads it as -c -o -n ...
	if _, a, ok := strings.Cut(msg, "' in -"); ok {
		if name, _, _ := strings.Cut(a, "="); cmd.Flags().Lookup(name) != nil {
			return usageErrorf(cmd, "%s: a long flag takes two dashes: --%s", msg, a)
		}
	}
	return &usageError{cmd: cmd, err: err}
}

// globalFlags is the usage of the persistent flags cmd uses.
func globalFlags(cmd *cobra.Command) string {
	fs := pflag.NewFlagSet("globals", pflag.ContinueOnError)
	cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if takes(cmd, f.Name) {
			fs.AddFlag(f)
		}
	})
	return strings.TrimRight(fs.FlagUsagesWrapped(0), " \n")
}

// commandList is the root's list of every command, subcommands included,
// so that the first help one reads shows them all.
func commandList(cmd *cobra.Command) string {
	var rows [][2]string
	var add func(c *cobra.Command)
	add = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			if !s.IsAvailableCommand() {
				continue
			}
			// completion's subcommands are one per shell: one row says it.
			if s.Runnable() && !isGroup(s) || s.Name() == "completion" {
				rows = append(rows, [2]string{strings.TrimPrefix(s.CommandPath(), cmd.CommandPath()+" "), s.Short})
			}
			if s.Name() != "completion" {
				add(s)
			}
		}
	}
	add(cmd)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%s\n", r[0], r[1])
	}
	tw.Flush()
	return strings.TrimRight(b.String(), "\n")
}

// isGroup reports whether cmd only groups subcommands.
func isGroup(cmd *cobra.Command) bool { return cmd.Annotations["interceptd/group"] == "true" }

// newGroup is a command that only groups subcommands.
func newGroup(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use: use, Short: short, Long: long,
		Args:        noArgs,
		RunE:        group,
		Annotations: map[string]string{"interceptd/group": "true"},
	}
	c.AddCommand(subs...)
	return c
}

const usageTemplate = `Usage:{{if and .Runnable (not (index .Annotations "interceptd/group"))}}
  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} COMMAND{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableSubCommands}}

Commands:{{if .HasParent}}{{range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{else}}
{{commandList .}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}{{with globalFlags .}}

Global Flags:
{{.}}{{end}}{{if .HasAvailableSubCommands}}

Run '{{.CommandPath}} COMMAND --help' for more about a command.{{end}}
`

// printOut writes v in the format --output asks for: JSON, or table, which
// is def's way when def is not nil, else the fields one per line.
func (g *globals) printOut(w io.Writer, v any, def func(io.Writer) error) error {
	switch {
	case g.output == "json" || g.output == "" && def == nil:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case def != nil:
		return def(w)
	}
	return printFields(w, v)
}

// printFields writes a record as a table of its fields, one per line,
// nested fields by their dotted path.
func printFields(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var tree any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&tree); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var visit func(path string, v any)
	visit = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				visit(strings.TrimPrefix(path+"."+k, "."), v[k])
			}
			if len(v) == 0 && path != "" {
				fmt.Fprintf(tw, "%s\t-\n", path)
			}
		case []any:
			if len(v) == 0 {
				fmt.Fprintf(tw, "%s\t-\n", path)
			}
			for i, e := range v {
				visit(fmt.Sprintf("%s[%d]", path, i), e)
			}
		case nil:
			fmt.Fprintf(tw, "%s\t-\n", path)
		default:
			fmt.Fprintf(tw, "%s\t%v\n", path, v)
		}
	}
	visit("", tree)
	return tw.Flush()
}
