package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
)

const defaultSocket = "/run/interceptd/admin.sock"

func adminSocketFlag(fs *flag.FlagSet) *string {
	return fs.String("admin-socket", "", "admin socket `path` (default $INTERCEPTD_SOCKET or "+defaultSocket+")")
}

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

func cmdSandbox(args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: interceptd sandbox create NAME [--internet on|off] [--allow P]... [--deny P]... [--worker W] [--quota KIND.bytes|KIND.keys=N]... | policy NAME [same flags but --quota; --worker '' for none] | quota NAME [--quota ...]... | delete [--purge] NAME | list | show NAME")
		return errUsage
	}
	fs := flag.NewFlagSet("sandbox "+args[0], flag.ContinueOnError)
	sock := adminSocketFlag(fs)
	purge := fs.Bool("purge", false, "delete: also delete everything the sandbox stored (state, per-sandbox keys and objects)")
	internet := fs.String("internet", "", "create, policy: internet `on|off`")
	var allow, deny stringList
	fs.Var(&allow, "allow", "create, policy: an allowed_hosts `pattern`; repeatable; replaces the list")
	fs.Var(&deny, "deny", "create, policy: a denied_hosts `pattern`; repeatable; replaces the list")
	worker := fs.String("worker", "", "create, policy: the sandbox's `worker` (config workers[].name; '' for none; create's default: the config's default_worker)")
	var quota stringList
	fs.Var(&quota, "quota", "create, quota: override a store quota, `kind.bytes=SIZE` or kind.keys=N (kind: kv, state, blob; 0: no limit); repeatable")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return errUsage
	}
	fs.Parse(append([]string{"--"}, pos...))
	if len(quota) > 0 && args[0] != "create" && args[0] != "quota" {
		return fmt.Errorf("--quota goes with sandbox create or sandbox quota, not %s", args[0])
	}
	// The worker is the one given (even ''), or nil when --worker is not.
	var workerFlag *string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "worker" {
			workerFlag = worker
		}
	})
	if workerFlag != nil && args[0] != "create" && args[0] != "policy" {
		return fmt.Errorf("--worker goes with sandbox create or sandbox policy, not %s", args[0])
	}
	c := client(*sock)
	need := func(n int) error {
		if fs.NArg() != n {
			fmt.Fprintf(os.Stderr, "usage: interceptd sandbox %s%s\n", args[0], map[int]string{0: "", 1: " NAME"}[n])
			return errUsage
		}
		return nil
	}
	switch args[0] {
	case "create":
		if err := need(1); err != nil {
			return err
		}
		pp, err := policyPatch(fs, *internet, allow, deny)
		if err != nil {
			return err
		}
		q, err := quotaOverrides(quota)
		if err != nil {
			return err
		}
		sb, err := c.CreateWith(admin.CreateRequest{Name: fs.Arg(0), Policy: pp, Quota: q, Worker: workerFlag})
		if err != nil {
			return err
		}
		fmt.Println(sb.NetnsPath)
	case "quota":
		if err := need(1); err != nil {
			return err
		}
		q, err := quotaOverrides(quota)
		if err != nil {
			return err
		}
		var out any
		if q == nil {
			var info admin.SandboxInfo
			info, err = c.Show(fs.Arg(0))
			out = info.Quota
		} else {
			out, err = c.SetQuota(fs.Arg(0), q)
		}
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "delete":
		if err := need(1); err != nil {
			return err
		}
		return c.DeleteSandbox(fs.Arg(0), *purge)
	case "policy":
		if err := need(1); err != nil {
			return err
		}
		pp, err := policyPatch(fs, *internet, allow, deny)
		if err != nil {
			return err
		}
		if workerFlag != nil {
			// First: a worker the config does not have changes nothing.
			if _, err := c.SetWorker(fs.Arg(0), *workerFlag); err != nil {
				return err
			}
		}
		var p any
		if pp == nil {
			p, err = c.Policy(fs.Arg(0))
		} else {
			p, err = c.SetPolicy(fs.Arg(0), *pp)
		}
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	case "show":
		if err := need(1); err != nil {
			return err
		}
		sb, err := c.Show(fs.Arg(0))
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sb)
	case "list":
		if err := need(0); err != nil {
			return err
		}
		list, err := c.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
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
	default:
		fmt.Fprintf(os.Stderr, "interceptd sandbox: unknown command %q\n", args[0])
		return errUsage
	}
	return nil
}

// cmdRun creates a sandbox, runs the command in its network namespace with
// the caller's stdio, deletes the sandbox and exits with the command's status.
//
// The command is started through `ip netns exec`, which also bind-mounts
// /etc/netns/<netns>/resolv.conf (written by the daemon) over
// /etc/resolv.conf in a private mount namespace, exactly as a user running
// `ip netns exec` by hand gets it. Unless --privileged, it runs as an
// unprivileged user with no capabilities (see runas.go): a network namespace
// does not hide the host's files. If the daemon intercepts HTTPS, the
// command trusts its CA (see runtrust.go).
func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	sock := adminSocketFlag(fs)
	name := fs.String("name", "", "sandbox `name` (default: run-<random>)")
	as := fs.String("user", "", "run the command as `NAME|UID[:GROUP|GID]` (default: the user who ran sudo, else nobody)")
	privileged := fs.Bool("privileged", false, "run the command as the caller (root) with every capability, on the host's files: not a sandbox")
	keep := fs.Bool("keep", false, "keep what the command stored in the sandbox's state and per-sandbox stores (default: purged with the sandbox); prints the sandbox's name")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: interceptd run [--name NAME] [--keep] [--user NAME|UID[:GID] | --privileged] -- CMD [ARGS...]")
		return errUsage
	}
	if *privileged && *as != "" {
		fmt.Fprintln(os.Stderr, "interceptd run: --user and --privileged exclude each other")
		return errUsage
	}
	if *name == "" {
		b := make([]byte, 4)
		rand.Read(b)
		*name = "run-" + hex.EncodeToString(b)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("run needs iproute2's ip: %w", err)
	}
	var execArgs []string
	if !*privileged {
		u, err := chooseUser(*as, os.Getenv, hostAccounts)
		if err != nil {
			return err
		}
		execArgs = u.args()
	}
	c := client(*sock)
	// interceptd's CA, for run-exec to make the command trust; nil when the
	// daemon intercepts no HTTPS.
	ca, err := c.CACert()
	if err != nil {
		return err
	}
	if *privileged && ca != nil {
		execArgs = []string{"--privileged"}
	}
	command := fs.Args()
	if execArgs != nil {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding interceptd itself, for run-exec: %w", err)
		}
		command = append(append(append([]string{self, "run-exec"}, execArgs...), "--"), command...)
	}
	sb, err := c.Create(*name, nil)
	if err != nil {
		return err
	}
	defer func() {
		// A throwaway sandbox leaves nothing behind: what the command stored
		// under its name goes with it, unless --keep.
		if err := c.DeleteSandbox(sb.Name, !*keep); err != nil {
			fmt.Fprintf(os.Stderr, "interceptd: deleting sandbox %s: %v\n", sb.Name, err)
		} else if *keep {
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

func cmdStore(args []string) error {
	fs := flag.NewFlagSet("store", flag.ContinueOnError)
	sock := adminSocketFlag(fs)
	check := fs.Bool("check", false, "run bbolt's consistency check first")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errUsage
	}
	st, err := client(*sock).StoreStats(*check)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// policyPatch builds a patch from the flags that were given; nil if none.
func policyPatch(fs *flag.FlagSet, internet string, allow, deny stringList) (*admin.PolicyPatch, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["internet"] && !set["allow"] && !set["deny"] {
		return nil, nil
	}
	pp := &admin.PolicyPatch{}
	if set["internet"] {
		var on bool
		switch internet {
		case "on":
			on = true
		case "off":
		default:
			return nil, fmt.Errorf("--internet %q: want on or off", internet)
		}
		pp.Internet = &on
	}
	if set["allow"] {
		l := []string(allow)
		if len(l) == 1 && l[0] == "" {
			l = []string{}
		}
		pp.AllowedHosts = &l
	}
	if set["deny"] {
		l := []string(deny)
		if len(l) == 1 && l[0] == "" {
			l = []string{}
		}
		pp.DeniedHosts = &l
	}
	return pp, nil
}

func cmdStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	sock := adminSocketFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errUsage
	}
	st, err := client(*sock).Status()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
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
	u := st.StoreUsage
	fmt.Fprintf(tw, "store usage\tkv %s in %d keys, state %s in %d keys, blob %s in %d objects (charged to sandboxes)\n",
		mib(u.KV.Bytes), u.KV.Keys, mib(u.State.Bytes), u.State.Keys, mib(u.Blob.Bytes), u.Blob.Keys)
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

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// quotaOverrides reads --quota kind.bytes=SIZE / kind.keys=N flags; nil if
// none were given.
func quotaOverrides(flags stringList) (map[string]int64, error) {
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
