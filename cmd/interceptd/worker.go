package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/interceptd/interceptd/router/worker"
)

// cmdWorker is `interceptd worker check FILE | list | reload NAME`.
func cmdWorker(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, workerUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("worker "+args[0], flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, workerUsage) }
	switch args[0] {
	case "check":
		// Without a daemon: compile, load once, list the exports.
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
			return errUsage
		}
		exports, err := worker.Check(fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Printf("%s: ok\n", fs.Arg(0))
		for _, e := range exports {
			fmt.Println("  " + e)
		}
		return nil
	case "list":
		sock := adminSocketFlag(fs)
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
			return errUsage
		}
		ws, err := client(*sock).Workers()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSCRIPT\tOUTBOUND\tHOSTS")
		for _, w := range ws {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", w.Name, w.Script, w.Outbound, strings.Join(w.Hosts, ","))
		}
		return tw.Flush()
	case "reload":
		sock := adminSocketFlag(fs)
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
			return errUsage
		}
		if err := client(*sock).ReloadWorker(fs.Arg(0)); err != nil {
			return fmt.Errorf("reloading worker %s (the previous version stays in force): %w", fs.Arg(0), err)
		}
		fmt.Printf("worker %s reloaded\n", fs.Arg(0))
		return nil
	}
	fmt.Fprint(os.Stderr, workerUsage)
	return errUsage
}

const workerUsage = `Usage:
  interceptd worker check FILE     compile and load a worker script without a daemon; list its exports
  interceptd worker list           the daemon's workers, their scripts and the hosts they serve
  interceptd worker reload NAME    read and compile NAME's script again and swap it in (requests in
                                   flight finish on the old one; a script that fails keeps the old one)
`
