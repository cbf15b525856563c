package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/store"
	"github.com/spf13/cobra"
)

const defaultSocket = "/run/interceptd/admin.sock"

func socketPath(flagVal string) string {
	if flagVal != "" {
		return flagVal
	}
	if env := os.Getenv("INTERCEPTD_SOCKET"); env != "" {
		return env
	}
	return defaultSocket
}

func client(flagVal string) *admin.Client { return admin.NewClient(socketPath(flagVal)) }

// policyFlags are the flags that set a sandbox's policy. sandbox create
// and sandbox policy both take them: a flag added here is on both.
type policyFlags struct {
	internet    string
	allow, deny []string
	inbound     []string
	worker      string
	// limits: --max-rps, --max-conns, --max-dns-qps, each N or "default".
	limits [3]string
}

// limitFlags name a sandbox's own limits, in policy.LimitFields' order.
var limitFlags = [3]struct{ flag, help string }{
	{"max-rps", "the sandbox's own intercepted HTTP requests per second (bursts of twice that; then 429)"},
	{"max-conns", "the sandbox's own cap on intercepted HTTP(S) connections held open at once"},
	{"max-dns-qps", "the sandbox's own DNS queries answered per second (bursts of twice that; then REFUSED)"},
}

func (p *policyFlags) add(cmd *cobra.Command, g *globals) {
	f := cmd.Flags()
	f.StringVar(&p.internet, "internet", "", "whether traffic no handler answers may go out: `on|off`")
	f.StringArrayVar(&p.allow, "allow", nil, "an allowed_hosts `pattern`; repeatable; replaces the list ('' for an empty one)")
	f.StringArrayVar(&p.deny, "deny", nil, "a denied_hosts `pattern`; repeatable; replaces the list ('' for an empty one)")
	f.StringArrayVar(&p.inbound, "inbound", nil, "an inbound `entry` (SOURCE-CIDR[:PORT[-PORT][/tcp|udp]]): who may open connections to the sandbox; repeatable; replaces the list ('' for none: nothing enters)")
	f.StringVar(&p.worker, "worker", "", "the sandbox's `worker` (the config's workers[].name; '' for none; create's default: the config's default_worker)")
	for i, l := range limitFlags {
		f.StringVar(&p.limits[i], l.flag, "", l.help+": `N`, 0 for no limit, or default for the daemon's")
		cmd.RegisterFlagCompletionFunc(l.flag, cobra.FixedCompletions([]string{"default", "0"}, cobra.ShellCompDirectiveNoFileComp))
	}
	cmd.RegisterFlagCompletionFunc("internet", cobra.FixedCompletions([]string{"on", "off"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("worker", g.completeWorkers)
}

// patch builds a patch from the flags that were given; nil if none.
func (p *policyFlags) patch(cmd *cobra.Command) (*admin.PolicyPatch, error) {
	set := cmd.Flags().Changed
	if !set("internet") && !set("allow") && !set("deny") && !set("inbound") {
		return nil, nil
	}
	pp := &admin.PolicyPatch{}
	if set("internet") {
		var on bool
		switch p.internet {
		case "on":
			on = true
		case "off":
		default:
			return nil, fmt.Errorf("--internet %q: want on or off", p.internet)
		}
		pp.Internet = &on
	}
	list := func(l []string) *[]string {
		if len(l) == 1 && l[0] == "" {
			l = []string{}
		}
		return &l
	}
	if set("allow") {
		pp.AllowedHosts = list(p.allow)
	}
	if set("deny") {
		pp.DeniedHosts = list(p.deny)
	}
	if set("inbound") {
		pp.Inbound = list(p.inbound)
	}
	return pp, nil
}

// limitsOn returns base with the limit flags given applied (a number: the
// sandbox's own; default: the daemon's), and whether any was given.
func (p *policyFlags) limitsOn(cmd *cobra.Command, base policy.Limits) (policy.Limits, bool, error) {
	fields := []**int{&base.RPS, &base.Conns, &base.DNSQPS}
	given := false
	for i, l := range limitFlags {
		if !cmd.Flags().Changed(l.flag) {
			continue
		}
		given = true
		v := p.limits[i]
		if v == "default" {
			*fields[i] = nil
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return base, false, fmt.Errorf("--%s %q: want a number (0 for no limit) or default", l.flag, v)
		}
		*fields[i] = &n
	}
	return base, given, nil
}

// workerFlag is the worker given (even ”), or nil when --worker is not.
func (p *policyFlags) workerFlag(cmd *cobra.Command) *string {
	if cmd.Flags().Changed("worker") {
		return &p.worker
	}
	return nil
}

func addQuotaFlag(cmd *cobra.Command, quota *[]string) {
	cmd.Flags().StringArrayVar(quota, "quota", nil, "override a store quota, `kind.bytes=SIZE` or kind.keys=N (kind: kv, state, blob; 0: no limit); repeatable")
}

const sandboxLong = `A sandbox is a network namespace the daemon made (or a runtime's, attached
through the CNI plugin) whose DNS and HTTP egress the daemon intercepts, under
the sandbox's policy. Its name is its identity in the stores.`

func sandboxCmd(g *globals) *cobra.Command {
	return newGroup("sandbox", "create, list, show, change and delete sandboxes", sandboxLong,
		sandboxCreateCmd(g), sandboxDeleteCmd(g), sandboxListCmd(g), sandboxShowCmd(g), sandboxPolicyCmd(g), sandboxQuotaCmd(g))
}

func sandboxCreateCmd(g *globals) *cobra.Command {
	var pf policyFlags
	var quota []string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "create a sandbox; prints its namespace path",
		Long: `Creates a sandbox: a network namespace bind-mounted at /run/netns/<prefix>NAME,
its link, address and rules. Prints the namespace's path, for a runtime to join.
Policy flags not given keep the config's default policy.`,
		Example: `  interceptd sandbox create web1
  interceptd sandbox create agent --internet off --allow api.example.com --quota kv.bytes=1GiB
  interceptd sandbox create build --max-rps 50 --max-conns 20 --max-dns-qps 100
  interceptd sandbox create api --inbound 10.244.0.0/16:8080/tcp --inbound 192.0.2.7
  ip netns exec icd-web1 curl -s http://my.kv/greeting`,
		Args: nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pp, err := pf.patch(cmd)
			if err != nil {
				return err
			}
			q, err := quotaOverrides(quota)
			if err != nil {
				return err
			}
			limits, _, err := pf.limitsOn(cmd, policy.Limits{})
			if err != nil {
				return err
			}
			sb, err := g.client().CreateWith(admin.CreateRequest{Name: args[0], Policy: pp, Quota: q, Worker: pf.workerFlag(cmd), Limits: limits})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sb.NetnsPath)
			return nil
		},
	}
	pf.add(cmd, g)
	addQuotaFlag(cmd, &quota)
	return uses(cmd, flagSocket)
}

func sandboxDeleteCmd(g *globals) *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "delete a sandbox (--purge: and everything it stored)",
		Long: `Deletes a sandbox: its namespace, link and rules. What it stored (state,
per-sandbox keys and objects) stays, unless --purge.`,
		Example: `  interceptd sandbox delete web1
  interceptd sandbox delete --purge web1`,
		Args:              nArgs(1, 1),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.client().DeleteSandbox(args[0], purge)
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete everything the sandbox stored (state, per-sandbox keys and objects)")
	return uses(cmd, flagSocket)
}

func sandboxListCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list sandboxes",
		Example: `  interceptd sandbox list
  interceptd sandbox list -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := g.client().List()
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), list, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tADDRESS\tGATEWAY\tNAMESPACE\tWORKER\tCREATED")
				for _, sb := range list {
					worker := sb.Worker
					if worker == "" {
						worker = "-"
					}
					ns := sb.NetnsPath
					if sb.Lost {
						ns += " (LOST: the namespace disappeared)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sb.Name, sb.Addr, sb.Gateway, ns, worker, sb.Created.Local().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	return uses(cmd, flagSocket, flagOutput)
}

func sandboxShowCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "show a sandbox, its store usage and quotas (JSON)",
		Long: `Prints a sandbox as the daemon keeps it (address, policy, worker, limits in
force) with what the writes charged to it occupy in the stores and its quotas.
With store.backend etcd, KV and state usage and quotas come from etcd, fleet-wide.
While etcd cannot be reached the sandbox is still shown, after the request timeout:
"unavailable" names the kinds whose figures could not be read (they read 0) and
why, a note on stderr says so, and the command exits 0.`,
		Example:           `  interceptd sandbox show web1`,
		Args:              nArgs(1, 1),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			sb, err := g.client().Show(args[0])
			if err != nil {
				return err
			}
			if o := sb.Unavailable; o != nil {
				// Exit 0: the sandbox is there and shown; only the figures
				// an unreachable engine keeps are missing, and the JSON's
				// "unavailable" says which.
				fmt.Fprintf(cmd.ErrOrStderr(), "interceptd: %s usage and quotas unavailable (%s down; they read 0 below): %s\n",
					strings.Join(o.Kinds, " and "), o.Engine, o.Reason)
			}
			return g.printOut(cmd.OutOrStdout(), sb, nil)
		},
	}
	return uses(cmd, flagSocket, flagOutput)
}

func sandboxPolicyCmd(g *globals) *cobra.Command {
	var pf policyFlags
	cmd := &cobra.Command{
		Use:   "policy NAME",
		Short: "print or change a sandbox's policy (and worker, and limits)",
		Long: `Without flags, prints the sandbox's policy. With flags, changes what they
name, leaves the rest, and prints the policy in force. The change applies to
the sandbox's next requests and flows. The limit flags change the sandbox's own
limits (sandbox show prints those in force).`,
		Example: `  interceptd sandbox policy web1
  interceptd sandbox policy web1 --internet off --allow api.example.com
  interceptd sandbox policy web1 --deny ''        # an empty denied_hosts
  interceptd sandbox policy web1 --inbound 10.244.0.0/16:8080/tcp
  interceptd sandbox policy web1 --inbound ''     # nothing enters
  interceptd sandbox policy web1 --worker ''      # no worker
  interceptd sandbox policy web1 --max-rps 10 --max-dns-qps default`,
		Args:              nArgs(1, 1),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			pp, err := pf.patch(cmd)
			if err != nil {
				return err
			}
			if w := pf.workerFlag(cmd); w != nil {
				// First: a worker the config does not have changes nothing.
				if _, err := c.SetWorker(args[0], *w); err != nil {
					return err
				}
			}
			if _, given, err := pf.limitsOn(cmd, policy.Limits{}); err != nil {
				return err
			} else if given {
				info, err := c.Show(args[0])
				if err != nil {
					return err
				}
				limits, _, _ := pf.limitsOn(cmd, info.Limits)
				if _, err := c.SetLimits(args[0], limits); err != nil {
					return err
				}
			}
			var p any
			if pp == nil {
				p, err = c.Policy(args[0])
			} else {
				p, err = c.SetPolicy(args[0], *pp)
			}
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), p, nil)
		},
	}
	pf.add(cmd, g)
	return uses(cmd, flagSocket, flagOutput)
}

func sandboxQuotaCmd(g *globals) *cobra.Command {
	var quota []string
	cmd := &cobra.Command{
		Use:   "quota NAME",
		Short: "print or replace a sandbox's quota overrides",
		Long: `Without --quota, prints the sandbox's quota overrides. With --quota, replaces
them all with those given and prints them.`,
		Example: `  interceptd sandbox quota web1
  interceptd sandbox quota web1 --quota kv.bytes=1GiB --quota blob.keys=1000`,
		Args:              nArgs(1, 1),
		ValidArgsFunction: g.completeSandboxes,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			q, err := quotaOverrides(quota)
			if err != nil {
				return err
			}
			var out any
			if q == nil {
				var info admin.SandboxInfo
				info, err = c.Show(args[0])
				out = info.Quota
			} else {
				out, err = c.SetQuota(args[0], q)
			}
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), out, nil)
		},
	}
	addQuotaFlag(cmd, &quota)
	return uses(cmd, flagSocket, flagOutput)
}

// completeSandboxes completes a command's first argument with the names of
// the daemon's sandboxes; nothing, and no word, when no daemon answers.
func (g *globals) completeSandboxes(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return completeFrom(toComplete, func() ([]string, error) {
		list, err := g.client().List()
		names := make([]string, len(list))
		for i, sb := range list {
			names[i] = sb.Name
		}
		return names, err
	})
}

// completeWorkers completes a worker's name from the daemon's workers.
func (g *globals) completeWorkers(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return completeFrom(toComplete, func() ([]string, error) {
		ws, err := g.client().Workers()
		names := make([]string, len(ws))
		for i, w := range ws {
			names[i] = w.Name
		}
		return names, err
	})
}

// completionTimeout bounds how long a completion waits for the daemon: a
// shell waits on it.
const completionTimeout = 2 * time.Second

// completeFrom offers the names that start with prefix, from a call to the
// daemon given at most completionTimeout.
func completeFrom(prefix string, names func() ([]string, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	type result struct {
		names []string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		n, err := names()
		ch <- result{n, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(completionTimeout):
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if r.err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range r.names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// runCmd is `interceptd run`: it creates a sandbox, runs the command in its
// network namespace with the caller's stdio, deletes the sandbox and exits
// with the command's status.
//
// The command is started through `ip netns exec`, which also bind-mounts
// /etc/netns/<netns>/resolv.conf (written by the daemon) over
// /etc/resolv.conf in a private mount namespace, exactly as a user running
// `ip netns exec` by hand gets it. Unless --privileged, it runs as an
// unprivileged user with no capabilities (see runas.go): a network namespace
// does not hide the host's files. If the daemon intercepts HTTPS, the
// command trusts its CA (see runtrust.go).
func runCmd(g *globals) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [flags] [--] CMD [ARGS...]",
		Short: "run a command in a fresh sandbox, then delete it",
		Long: `Creates a sandbox (run-<random> unless --name), runs CMD in it with the
sandbox's resolv.conf, and when CMD ends deletes the sandbox and purges what CMD
stored under its name (state, per-sandbox keys and objects), unless --keep.

CMD runs as the user who ran sudo (else nobody), with every capability dropped
and no_new_privs set: a network namespace does not hide the host's files.
--user chooses another user; --privileged keeps root, for trusted commands only.
If the daemon intercepts HTTPS, CMD trusts interceptd's CA, in its own mount
namespace only.

The exit status is CMD's (127 when CMD is not found, 126 when it cannot be
executed); SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to CMD, and the
sandbox is deleted whatever ends it. Flags after CMD are CMD's.`,
		Example: `  interceptd run -- sh -c 'curl -s -X PUT --data hello http://my.kv/greeting; curl -s http://my.kv/greeting'
  interceptd run --name job1 --keep -- ./job.sh
  interceptd run --user 1000:1000 -- id`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf(cmd, "run: missing CMD, the command to run")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.privileged && o.user != "" {
				return usageErrorf(cmd, "run: --user and --privileged exclude each other")
			}
			return o.run(g, args)
		},
	}
	// CMD's own flags are CMD's: the first argument ends run's flags.
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "sandbox `name` (default: run-<random>)")
	f.StringVar(&o.user, "user", "", "run the command as `NAME|UID[:GROUP|GID]` (default: the user who ran sudo, else nobody)")
	f.BoolVar(&o.privileged, "privileged", false, "run the command as the caller (root) with every capability, on the host's files: not a sandbox")
	f.BoolVar(&o.keep, "keep", false, "keep what the command stored in the sandbox's state and per-sandbox stores (default: purged with the sandbox); prints the sandbox's name")
	return uses(cmd, flagSocket)
}

type runOptions struct {
	name, user       string
	privileged, keep bool
}

func (o *runOptions) run(g *globals, command []string) error {
	name := o.name
	if name == "" {
		b := make([]byte, 4)
		rand.Read(b)
		name = "run-" + hex.EncodeToString(b)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("run needs iproute2's ip: %w", err)
	}
	var execArgs []string
	if !o.privileged {
		u, err := chooseUser(o.user, os.Getenv, hostAccounts)
		if err != nil {
			return err
		}
		execArgs = u.args()
	}
	c := g.client()
	// interceptd's CA, for run-exec to make the command trust; nil when the
	// daemon intercepts no HTTPS.
	ca, err := c.CACert()
	if err != nil {
		return err
	}
	if o.privileged && ca != nil {
		execArgs = []string{"--privileged"}
	}
	if execArgs != nil {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding interceptd itself, for run-exec: %w", err)
		}
		command = append(append(append([]string{self, "run-exec"}, execArgs...), "--"), command...)
	}
	sb, err := c.Create(name, nil)
	if err != nil {
		return err
	}
	defer func() {
		// A throwaway sandbox leaves nothing behind: what the command stored
		// under its name goes with it, unless --keep.
		if err := c.DeleteSandbox(sb.Name, !o.keep); err != nil {
			fmt.Fprintf(os.Stderr, "interceptd: deleting sandbox %s: %v\n", sb.Name, err)
		} else if o.keep {
			fmt.Fprintf(os.Stderr, "interceptd run: kept what sandbox %s stored (interceptd state list %s; sandbox delete --purge %s removes it)\n", sb.Name, sb.Name, sb.Name)
		}
	}()

	cmd := exec.Command(ip, append([]string{"netns", "exec", sb.Netns}, command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = runExecEnv(os.Environ(), ca)
	// Terminal signals reach the child through its process group; for
	// signals sent to us alone, pass them on. Either way we stay alive to
	// delete the sandbox.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting command: %w", err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{128 + int(ws.Signal())}
		}
		return exitError{ee.ExitCode()}
	}
	return err
}

func storeCmd(g *globals) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "store",
		Short: "print the store's statistics (JSON)",
		Long: `Prints the running daemon's store statistics: file size, free space, usage per
kind and per sandbox. --check first runs bbolt's consistency check and a recount
of every sandbox's usage; with store.backend etcd it also checks that etcd answers
within store.etcd.request_timeout, that the prefix can be written and read back and
that the servers take a transaction of 512 operations (their --max-txn-ops, which a
state transaction of 128 keys needs), and recounts the usage of the KV and state
held there; with blobs in S3
(store.blobs.backend: s3) it checks that the bucket is reachable and exists, and
writes, reads back and deletes a probe object.`,
		Example: `  interceptd store
  interceptd store --check`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.client().StoreStats(check)
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), st, nil)
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "run bbolt's consistency check, recount every sandbox's usage, and check etcd and the S3 blob bucket where configured, first")
	cmd.AddCommand(storeCompactCmd())
	return uses(cmd, flagSocket, flagOutput)
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "the daemon's version, uptime, sandboxes, requests, denials and store",
		Long: `Prints the running daemon's version and uptime, its sandboxes (and those whose
namespace disappeared), the requests, denials and DNS queries since it started,
and its store's size, usage and free space. With store.backend etcd the KV and
state usage is etcd's, for the whole fleet (marked "etcd, fleet-wide"); while etcd
cannot be reached within store.etcd.request_timeout they show as unavailable,
with the reason, instead of a number.`,
		Example: `  interceptd status
  interceptd status -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				if g.output == "table" {
					return usageErrorf(cmd, "--json and --output table exclude each other")
				}
				g.output = "json"
			}
			st, err := g.client().Status()
			if err != nil {
				return err
			}
			return g.printOut(cmd.OutOrStdout(), st, func(w io.Writer) error { return printStatus(w, st) })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (the same as --output json)")
	return uses(cmd, flagSocket, flagOutput)
}

func reloadCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "make the daemon re-read its config file, secrets and workers' scripts",
		Long: `Asks the running daemon to re-read its config file (as SIGHUP and systemctl
reload do) and apply what can change live: handlers, the default policy, the deny
response, DNS upstreams and answers, default limits and quotas. A file that fails
validation, or that changes a field that needs a restart, is refused whole, naming
the field: the command exits 1 and the running config stays.`,
		Example: `  interceptd reload
  interceptd reload -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := g.client().Reload()
			var ae *admin.APIError
			if errors.As(err, &ae) {
				return err // refused: nothing changed
			}
			if perr := g.printOut(cmd.OutOrStdout(), res, func(w io.Writer) error {
				switch {
				case res.Config == "":
					fmt.Fprintln(w, "the daemon runs the embedded default config: secrets and workers' scripts reloaded")
				case len(res.Changed) == 0:
					fmt.Fprintf(w, "reloaded %s: nothing changed\n", res.Config)
				default:
					fmt.Fprintf(w, "reloaded %s: changed %s\n", res.Config, strings.Join(res.Changed, ", "))
				}
				if res.PolicyFollowers > 0 {
					fmt.Fprintf(w, "%d sandbox(es) that follow the default policy took the new one\n", res.PolicyFollowers)
				}
				return nil
			}); perr != nil {
				return perr
			}
			if err != nil {
				return fmt.Errorf("applied, but: %w", err)
			}
			return nil
		},
	}
	return uses(cmd, flagSocket, flagOutput)
}

func printStatus(w io.Writer, st admin.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version\t%s\n", st.Version)
	fmt.Fprintf(tw, "uptime\t%s (since %s)\n", (time.Duration(st.UptimeSeconds) * time.Second).String(), st.Started.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "sandboxes\t%d\n", st.Sandboxes)
	if st.SandboxesLost > 0 {
		fmt.Fprintf(tw, "sandboxes lost\t%d (their namespace disappeared: see sandbox list)\n", st.SandboxesLost)
	}
	fmt.Fprintf(tw, "requests\t%d\n", st.Requests)
	fmt.Fprintf(tw, "denials\t%d\n", st.Denials)
	fmt.Fprintf(tw, "dns queries\t%d\n", st.DNSQueries)
	fmt.Fprintf(tw, "store size\t%.1f MiB\n", float64(st.StoreBytes)/(1<<20))
	printStoreUsage(tw, st)
	floor := ""
	if st.StoreMinFreeBytes > 0 {
		floor = fmt.Sprintf(" (writes refused under %s)", mib(st.StoreMinFreeBytes))
		if st.StoreFreeBytes < st.StoreMinFreeBytes {
			floor = fmt.Sprintf(" UNDER THE FLOOR of %s: writes are refused", mib(st.StoreMinFreeBytes))
		}
	}
	fmt.Fprintf(tw, "store free\t%s%s\n", mib(st.StoreFreeBytes), floor)
	return tw.Flush()
}

// printStoreUsage writes what the writes charged to sandboxes occupy, kind
// by kind, saying which engine each figure comes from when one is not the
// host's bbolt file (etcd's are the fleet's; S3 blobs' come from their
// ledger, in etcd or bbolt), and "unavailable" with the
// reason for kinds whose engine could not be read, never a zero.
func printStoreUsage(tw io.Writer, st admin.Status) {
	u := st.StoreUsage
	kinds := []struct{ kind, what, units string }{
		{store.KindKV, "kv", "keys"}, {store.KindState, "state", "keys"}, {store.KindBlob, "blob", "objects"},
	}
	var parts []string
	remote := false
	for _, k := range kinds {
		engine := st.StoreEngines[k.kind]
		if o := st.StoreUnavailable; o != nil && slices.Contains(o.Kinds, k.kind) {
			parts = append(parts, fmt.Sprintf("%s unavailable (%s)", k.what, o.Engine))
			continue
		}
		a := u.Of(k.kind)
		p := fmt.Sprintf("%s %s in %d %s", k.what, mib(a.Bytes), a.Keys, k.units)
		switch {
		case engine == "s3" && st.StoreBlobLedger == "etcd":
			p += " (s3 ledger in etcd, fleet-wide)"
			remote = true
		case engine == "s3":
			p += " (s3 ledger in this host's bbolt file)"
			remote = true
		case engine != "" && engine != "bbolt":
			p += " (" + engine + ", fleet-wide)"
			remote = true
		}
		parts = append(parts, p)
	}
	where := ""
	if remote || st.StoreUnavailable != nil {
		where = "; the rest from this host's bbolt file"
	}
	fmt.Fprintf(tw, "store usage\t%s (charged to sandboxes%s)\n", strings.Join(parts, ", "), where)
	if o := st.StoreUnavailable; o != nil {
		fmt.Fprintf(tw, "store unavailable\t%s: %s\n", o.Engine, o.Reason)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// quotaOverrides reads --quota kind.bytes=SIZE / kind.keys=N flags; nil if
// none were given.
func quotaOverrides(flags []string) (map[string]int64, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := map[string]int64{}
	for _, f := range flags {
		field, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("--quota %q: want kind.bytes=SIZE or kind.keys=N", f)
		}
		var n int64
		if strings.HasSuffix(field, ".bytes") {
			z, err := config.ParseSize(val)
			if err != nil {
				return nil, fmt.Errorf("--quota %s: %w", field, err)
			}
			n = int64(z)
		} else {
			var err error
			if n, err = strconv.ParseInt(val, 10, 64); err != nil || n < 0 {
				return nil, fmt.Errorf("--quota %s: %q is not a number of keys", field, val)
			}
		}
		out[field] = n
	}
	if _, err := (store.Amounts{}).WithOverrides(out); err != nil {
		return nil, fmt.Errorf("--quota: %w", err)
	}
	return out, nil
}
