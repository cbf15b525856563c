package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/interceptd/interceptd/router/worker"
	"github.com/spf13/cobra"
)

// workerCmd is `interceptd worker check FILE | list | reload NAME`.
func workerCmd(g *globals) *cobra.Command {
	check := &cobra.Command{
		Use:     "check FILE",
		Short:   "compile and load a worker script without a daemon; list its exports",
		Example: `  interceptd worker check examples/workers/seed/worker.js`,
		Args:    nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			exports, err := worker.Check(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: ok\n", args[0])
			for _, e := range exports {
				fmt.Fprintln(w, "  "+e)
			}
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "the daemon's workers, their scripts and the hosts they serve",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, err := g.client().Workers()
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), ws, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSCRIPT\tOUTBOUND\tHOSTS")
				for _, w := range ws {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", w.Name, w.Script, w.Outbound, strings.Join(w.Hosts, ","))
				}
				return tw.Flush()
			})
		},
	}
	reload := &cobra.Command{
		Use:   "reload NAME",
		Short: "compile NAME's script again and swap it in",
		Long: `Reads and compiles the worker's script again and swaps it in: requests in
flight finish on the old one, and a script that fails keeps the old one.`,
		Example:           `  interceptd worker reload app`,
		Args:              nArgs(1, 1),
		ValidArgsFunction: g.completeWorkers,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().ReloadWorker(args[0]); err != nil {
				return fmt.Errorf("reloading worker %s (the previous version stays in force): %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "worker %s reloaded\n", args[0])
			return nil
		},
	}
	uses(list, flagSocket, flagOutput)
	uses(reload, flagSocket)
	return newGroup("worker", "check a worker script; list or reload the daemon's workers", "", check, list, reload)
}
