// Command interceptd is the daemon and its CLI.
//
//	interceptd serve [--config FILE] [--data-dir DIR] [--admin-socket PATH]
//	                 [--metrics-listen ADDR] [--dns-upstream ADDR]... [--log-level LEVEL]
//	interceptd sandbox create NAME [--quota ...] | quota NAME | delete NAME | list | show NAME
//	interceptd run [--name NAME] [--user NAME|UID[:GID] | --privileged] -- CMD [ARGS...]
//	interceptd cleanup [--config FILE]
//	interceptd config default | check FILE
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/interceptd/interceptd/internal/buildinfo"
)

const usage = `interceptd: per-container network namespaces whose DNS and HTTP egress is
intercepted and answered by in-process handlers.

Usage:
  interceptd serve [flags]                 run the daemon (root)
  interceptd sandbox create NAME           create a sandbox; prints its namespace path
                                           (--internet, --allow, --deny, --quota kv.bytes=1GiB ...)
  interceptd sandbox delete NAME           delete a sandbox
  interceptd sandbox list                  list sandboxes
  interceptd sandbox show NAME             show one sandbox, its store usage and quotas, as JSON
  interceptd sandbox quota NAME [--quota KIND.bytes=SIZE|KIND.keys=N]...
                                           print or replace a sandbox's quota overrides
  interceptd sandbox delete --purge NAME   delete a sandbox and everything it stored
  interceptd run [--name NAME] -- CMD...   run CMD in a fresh sandbox, then delete it; as the
                                           user who ran sudo (else nobody), no capabilities
                                           (--user NAME|UID[:GID], or --privileged for root)
  interceptd kv get|put|delete|list ...    seed and inspect KV namespaces
  interceptd blob get|put|delete|list ...  seed and inspect blob buckets
  interceptd state get|put|delete|list SANDBOX ...   a sandbox's state
  interceptd worker check FILE|list|reload NAME
                                           check a worker script; list or reload the daemon's workers
  interceptd status [--json]               version, uptime, sandboxes, requests, denials, store size
  interceptd store [--check]               print store statistics as JSON (--check: bbolt's check
                                           and a recount of every sandbox's usage)
  interceptd store compact [--config FILE] rewrite the stopped daemon's store without the space
                                           deleted data left, and print the sizes
  interceptd ca [--config FILE]            print interceptd's CA certificate (PEM), which signs the
                                           certificates of handlers marked https: for clients to trust
  interceptd cleanup [--config FILE]       remove every namespace, link, rule and route the daemon made
  interceptd config default                print the embedded default config
  interceptd config check FILE             validate a config file
  interceptd version

Client commands find the daemon through --admin-socket or INTERCEPTD_SOCKET
(default /run/interceptd/admin.sock). Run 'interceptd COMMAND -h' for flags.
`

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

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:])
	case "sandbox":
		err = cmdSandbox(args[1:])
	case "run":
		err = cmdRun(args[1:])
	case "run-exec": // run's second half, inside the sandbox; not for people
		err = cmdRunExec(args[1:])
	case "kv", "blob", "state":
		err = cmdData(args[0], args[1:])
	case "status":
		err = cmdStatus(args[1:])
	case "worker":
		err = cmdWorker(args[1:])
	case "store":
		if len(args) > 1 && args[1] == "compact" {
			err = cmdStoreCompact(args[2:])
		} else {
			err = cmdStore(args[1:])
		}
	case "ca":
		err = cmdCA(args[1:])
	case "cleanup":
		err = cmdCleanup(args[1:])
	case "config":
		err = cmdConfig(args[1:])
	case "version":
		fmt.Println(buildinfo.Version())
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "interceptd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(os.Stderr, "interceptd: %v\n", err)
		return 1
	}
}

var errUsage = errors.New("usage")
