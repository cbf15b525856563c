package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/store"
	"golang.org/x/sys/unix"
)

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

const dataUsage = `usage:
  interceptd kv get|delete KEY            [--host H] [--sandbox S]
  interceptd kv put KEY [VALUE|-]         [--ttl SECONDS | --expiration UNIX] [--metadata JSON]
  interceptd kv list                      [--prefix P] [--limit N] [--cursor C]
  interceptd kv ... --namespace NS        a KV namespace directly (e.g. per-sandbox secrets)
  interceptd blob put KEY [FILE|-]        [--content-type T]
  interceptd blob get|delete KEY
  interceptd blob list                    [--prefix P] [--delimiter D] [--cursor C]
  interceptd state get|delete SANDBOX KEY
  interceptd state put SANDBOX KEY [VALUE|-] [--ttl SECONDS | --expiration UNIX] [--create]
  interceptd state list SANDBOX           [--prefix P]
--host picks the handler (default: the first of its kind in the config);
--sandbox acts as that sandbox for a handler with scope: sandbox.
A put without VALUE reads standard input (- says so), never a terminal.
state put refuses a sandbox that does not exist, unless --create (to seed one
before it is made).
`

// cmdData runs kv, blob and state operator commands through the admin API,
// which hands them to the same handler a sandbox's request reaches.
func cmdData(kind string, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, dataUsage)
		return errUsage
	}
	op := args[0]
	fs := flag.NewFlagSet(kind+" "+op, flag.ContinueOnError)
	sock := adminSocketFlag(fs)
	host := fs.String("host", "", "handler `host` (default: the first "+kind+" handler)")
	sandbox := fs.String("sandbox", "", "act as `sandbox` (per-sandbox handlers)")
	// Strings, passed on as written: store.ParseExpiry judges them here and
	// again in the daemon, as it judges a sandbox's ?ttl= and ?expiration=.
	ttl := fs.String("ttl", "", fmt.Sprintf("expire after `seconds`, %d to %d (kv and state put)", store.MinTTL, store.MaxTTL))
	expiration := fs.String("expiration", "", fmt.Sprintf("expire at unix time `seconds`, up to %d (kv and state put)", store.MaxExpiration))
	meta := fs.String("metadata", "", "metadata `json` (kv put)")
	ctype := fs.String("content-type", "", "Content-Type `type` (blob put)")
	prefix := fs.String("prefix", "", "list keys with this `prefix`")
	delim := fs.String("delimiter", "", "fold keys at this `delimiter` (blob list)")
	limit := fs.Int("limit", 0, "page `size` (list)")
	cursor := fs.String("cursor", "", "continue a listing from `cursor`")
	namespace := fs.String("namespace", "", "kv: use this KV `namespace` directly, exposed by a handler or not")
	create := fs.Bool("create", false, "state put: seed the state of a sandbox that does not exist (yet)")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return errUsage
	}
	if kind == "state" {
		if len(pos) == 0 {
			fmt.Fprint(os.Stderr, dataUsage)
			return errUsage
		}
		*sandbox, pos = pos[0], pos[1:]
	}
	c := client(*sock)
	handlerKind := map[string]string{"kv": "kv", "blob": "blob", "state": "state"}[kind]
	if *host == "" && *namespace == "" {
		hs, err := c.Handlers()
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.Kind == handlerKind {
				*host = h.Host
				break
			}
		}
		if *host == "" {
			return fmt.Errorf("no %s handler is configured", handlerKind)
		}
	}
	need := func(min, max int) error {
		if len(pos) < min || len(pos) > max {
			fmt.Fprint(os.Stderr, dataUsage)
			return errUsage
		}
		return nil
	}
	q := url.Values{}
	var body io.Reader
	hdr := http.Header{}
	method, key := "", ""
	switch op {
	case "get":
		if err := need(1, 1); err != nil {
			return err
		}
		method, key = http.MethodGet, pos[0]
	case "delete":
		if err := need(1, 1); err != nil {
			return err
		}
		method, key = http.MethodDelete, pos[0]
	case "put":
		if err := need(1, 2); err != nil {
			return err
		}
		method, key = http.MethodPut, pos[0]
		if kind == "state" && !*create {
			// A typo'd sandbox name would otherwise store state no one reads.
			if _, err := c.Get(*sandbox); err != nil {
				var ae *admin.APIError
				if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
					return fmt.Errorf("no sandbox named %q: create it first (interceptd sandbox create %s), or pass --create to seed its state before it exists", *sandbox, *sandbox)
				}
				return err
			}
		}
		if len(pos) == 1 && stdinIsTerminal() {
			return fmt.Errorf("%s put %s: no value: give it as an argument, or pipe it in with - (standard input is a terminal)", kind, key)
		}
		switch {
		case len(pos) == 2 && pos[1] != "-" && kind == "blob":
			f, err := os.Open(pos[1])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, _ := f.Stat()
			body = f
			hdr.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		case len(pos) == 2 && pos[1] != "-":
			body = strings.NewReader(pos[1])
		default:
			body = os.Stdin
		}
		if *ttl != "" || *expiration != "" {
			if kind == "blob" {
				return fmt.Errorf("--ttl and --expiration apply to kv and state, not blob")
			}
			if _, err := store.ParseExpiry(*ttl, *expiration, time.Now()); err != nil {
				return err
			}
			for k, v := range map[string]string{"ttl": *ttl, "expiration": *expiration} {
				if v != "" {
					q.Set(k, v)
				}
			}
		}
		if *meta != "" {
			hdr.Set("X-KV-Metadata", *meta)
		}
		if *ctype != "" {
			hdr.Set("Content-Type", *ctype)
		}
	case "list":
		if err := need(0, 0); err != nil {
			return err
		}
		method = http.MethodGet
		for k, v := range map[string]string{"prefix": *prefix, "delimiter": *delim, "cursor": *cursor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
	default:
		fmt.Fprintf(os.Stderr, "interceptd %s: unknown operation %q\n%s", kind, op, dataUsage)
		return errUsage
	}
	var resp *http.Response
	if *namespace != "" && kind == "kv" {
		resp, err = c.Namespace(method, *namespace, key, q, body, hdr)
	} else {
		resp, err = c.Handler(method, *host, key, *sandbox, q, body, hdr)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(strings.TrimPrefix(string(b), "interceptd: "))
		var j struct{ Error string }
		if json.Unmarshal(b, &j) == nil && j.Error != "" {
			msg = j.Error
		}
		return &admin.APIError{Status: resp.StatusCode, Message: msg}
	}
	if op == "put" && kind != "blob" || op == "delete" {
		return nil
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if op == "get" && kind != "blob" && isTerminal() {
		fmt.Println()
	}
	return nil
}

func isTerminal() bool {
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// stdinIsTerminal reports whether standard input is a terminal: a put with
// no value would then wait for a typist who does not know it is waited for.
func stdinIsTerminal() bool {
	_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
	return err == nil
}
