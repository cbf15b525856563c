package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/store"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// dataOp is one kv, blob or state operation and the flags it was given.
type dataOp struct {
	kind, op              string // kv, blob or state; get, put, delete or list
	host, sandbox         string
	ttl, expiration       string
	meta, ctype           string
	prefix, delim, cursor string
	limit                 int
	namespace             string
	create                bool
}

var dataShort = map[string]string{
	"kv":    "seed and inspect KV namespaces",
	"blob":  "seed and inspect blob buckets",
	"state": "read and seed a sandbox's state",
}

const dataLong = `Operator access to the %[1]s handlers, through the admin API: the daemon hands
each operation to the same handler a sandbox's request reaches.
--host picks the handler (default: the first %[1]s handler in the config).`

// dataCmd is the kv, blob or state command: get, put, delete and list,
// each with the flags that apply to it for that kind.
func dataCmd(g *globals, kind string) *cobra.Command {
	ops := []struct{ op, use, short, example string }{
		{"get", "get KEY", "print a key's value", "  interceptd %[1]s get %[2]sgreeting"},
		{"put", "put KEY [VALUE|-]", "store a value: the argument, or standard input with -", "  interceptd %[1]s put %[2]sgreeting hello\n  echo hello | interceptd %[1]s put %[2]sgreeting -"},
		{"delete", "delete KEY", "delete a key", "  interceptd %[1]s delete %[2]sgreeting"},
		{"list", "list", "list keys (JSON)", "  interceptd %[1]s list %[2]s--prefix config/"},
	}
	long := fmt.Sprintf(dataLong, kind)
	sbArg := ""
	switch kind {
	case "kv":
		long += "\n--sandbox acts as that sandbox, for a handler with scope: sandbox;\n--namespace reaches a KV namespace directly, exposed by a handler or not."
	case "blob":
		long += "\n--sandbox acts as that sandbox, for a handler with scope: sandbox."
		ops[0].short, ops[2].short, ops[3].short = "print an object", "delete an object", "list objects (JSON)"
		ops[1].use = "put KEY [FILE|-]"
		ops[1].short = "store an object: a file, or standard input with -"
		ops[1].example = "  interceptd %[1]s put report.pdf ./report.pdf --content-type application/pdf\n  tar c . | interceptd %[1]s put backup.tar -"
	case "state":
		long = `Operator access to a sandbox's state (the state handler's keys), through the
admin API: the daemon hands each operation to the same handler the sandbox's
request reaches. --host picks the handler (default: the first state handler).`
		sbArg = "web1 "
	}
	var subs []*cobra.Command
	for _, o := range ops {
		d := &dataOp{kind: kind, op: o.op}
		use := o.use
		min, max := 1, 1
		switch o.op {
		case "put":
			max = 2
		case "list":
			min, max = 0, 0
		}
		if kind == "state" {
			// The sandbox is the first argument: state is always someone's.
			use = strings.Replace(use, " ", " SANDBOX ", 1)
			if o.op == "list" {
				use = "list SANDBOX"
			}
			min, max = min+1, max+1
		}
		cmd := &cobra.Command{
			Use:     use,
			Short:   o.short,
			Example: fmt.Sprintf(o.example, kind, sbArg),
			Args:    nArgs(min, max),
			RunE: func(cmd *cobra.Command, args []string) error {
				return d.run(g, cmd, args)
			},
		}
		switch {
		case kind == "state":
			cmd.ValidArgsFunction = g.completeSandboxes
		case kind == "blob" && o.op == "put":
			cmd.ValidArgsFunction = fileAfterKey
		default:
			cmd.ValidArgsFunction = noCompletion
		}
		d.flags(cmd)
		if o.op == "list" {
			uses(cmd, flagSocket, flagOutput)
		} else {
			uses(cmd, flagSocket)
		}
		subs = append(subs, cmd)
	}
	if kind == "kv" || kind == "state" {
		subs[1].Long = "Stores a value under KEY. A put without VALUE is an error at a terminal: give the value, or - to read it\nfrom standard input."
	} else {
		subs[1].Long = "Stores an object under KEY. A put without FILE is an error at a terminal: give the file, or - to read the\nobject from standard input."
	}
	if kind == "state" {
		subs[1].Long += "\nRefuses a sandbox that does not exist, unless --create (to seed its state\nbefore it is made)."
	}
	return newGroup(kind, dataShort[kind], long, subs...)
}

// fileAfterKey completes blob put's FILE with the shell's file names.
func fileAfterKey(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 1 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func noCompletion(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// flags adds the flags that apply to d's kind and operation.
func (d *dataOp) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.host, "host", "", "handler `host` (default: the first "+d.kind+" handler)")
	if d.kind != "state" {
		f.StringVar(&d.sandbox, "sandbox", "", "act as `sandbox` (per-sandbox handlers)")
	}
	if d.kind == "kv" {
		f.StringVar(&d.namespace, "namespace", "", "use this KV `namespace` directly, exposed by a handler or not")
	}
	switch d.op {
	case "put":
		if d.kind != "blob" {
			// Strings, passed on as written: store.ParseExpiry judges them
			// here and again in the daemon, as it judges a sandbox's ?ttl=
			// and ?expiration=.
			f.StringVar(&d.ttl, "ttl", "", fmt.Sprintf("expire after `seconds`, %d to %d", store.MinTTL, store.MaxTTL))
			f.StringVar(&d.expiration, "expiration", "", fmt.Sprintf("expire at unix time `seconds`, up to %d", store.MaxExpiration))
		}
		switch d.kind {
		case "kv":
			f.StringVar(&d.meta, "metadata", "", "metadata `json`")
		case "blob":
			f.StringVar(&d.ctype, "content-type", "", "Content-Type `type`")
		case "state":
			f.BoolVar(&d.create, "create", false, "seed the state of a sandbox that does not exist (yet)")
		}
	case "list":
		f.StringVar(&d.prefix, "prefix", "", "list keys with this `prefix`")
		f.IntVar(&d.limit, "limit", 0, "page `size`")
		f.StringVar(&d.cursor, "cursor", "", "continue a listing from `cursor`")
		if d.kind == "blob" {
			f.StringVar(&d.delim, "delimiter", "", "fold keys at this `delimiter`")
		}
	}
}

// run runs kv, blob and state operator commands through the admin API,
// which hands them to the same handler a sandbox's request reaches.
func (d *dataOp) run(g *globals, cmd *cobra.Command, pos []string) error {
	kind, op := d.kind, d.op
	host, sandbox, namespace := &d.host, &d.sandbox, &d.namespace
	if kind == "state" {
		*sandbox, pos = pos[0], pos[1:]
	}
	if d.ttl != "" || d.expiration != "" {
		// Judged before the daemon is asked, by the rule every write path
		// shares.
		if _, err := store.ParseExpiry(d.ttl, d.expiration, time.Now()); err != nil {
			return err
		}
	}
	c := g.client()
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
	q := url.Values{}
	var body io.Reader
	hdr := http.Header{}
	method, key := "", ""
	switch op {
	case "get":
		method, key = http.MethodGet, pos[0]
	case "delete":
		method, key = http.MethodDelete, pos[0]
	case "put":
		method, key = http.MethodPut, pos[0]
		if kind == "state" && !d.create {
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
		for k, v := range map[string]string{"ttl": d.ttl, "expiration": d.expiration} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if d.meta != "" {
			hdr.Set("X-KV-Metadata", d.meta)
		}
		if d.ctype != "" {
			hdr.Set("Content-Type", d.ctype)
		}
	case "list":
		method = http.MethodGet
		for k, v := range map[string]string{"prefix": d.prefix, "delimiter": d.delim, "cursor": d.cursor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if d.limit > 0 {
			q.Set("limit", strconv.Itoa(d.limit))
		}
	}
	var resp *http.Response
	var err error
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
	if op == "list" && g.output == "table" {
		return printListing(cmd.OutOrStdout(), resp.Body)
	}
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if op == "get" && kind != "blob" && isTerminal() {
		fmt.Println()
	}
	return nil
}

// printListing writes a kv or state listing (keys) or a blob listing
// (objects and folded prefixes) as a table; the cursor of a page that is not
// the last goes to standard error.
func printListing(w io.Writer, body io.Reader) error {
	var l struct {
		Keys []struct {
			Name       string          `json:"name"`
			Expiration int64           `json:"expiration"`
			Metadata   json.RawMessage `json:"metadata"`
		} `json:"keys"`
		Objects []struct {
			Key      string    `json:"key"`
			Size     int64     `json:"size"`
			ETag     string    `json:"etag"`
			Uploaded time.Time `json:"uploaded"`
		} `json:"objects"`
		Prefixes []string `json:"delimited_prefixes"`
		Cursor   string   `json:"cursor"`
	}
	if err := json.NewDecoder(body).Decode(&l); err != nil {
		return fmt.Errorf("reading the listing: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if l.Objects != nil || l.Prefixes != nil {
		fmt.Fprintln(tw, "KEY\tSIZE\tETAG\tUPLOADED")
		for _, p := range l.Prefixes {
			fmt.Fprintf(tw, "%s\t-\t-\t-\n", p)
		}
		for _, o := range l.Objects {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", o.Key, o.Size, o.ETag, o.Uploaded.Local().Format(time.RFC3339))
		}
	} else {
		fmt.Fprintln(tw, "NAME\tEXPIRES\tMETADATA")
		for _, k := range l.Keys {
			exp, meta := "-", "-"
			if k.Expiration != 0 {
				exp = time.Unix(k.Expiration, 0).Local().Format(time.RFC3339)
			}
			var b bytes.Buffer
			if json.Compact(&b, k.Metadata) == nil && b.Len() > 0 {
				meta = b.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, exp, meta)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Cursor != "" {
		fmt.Fprintf(os.Stderr, "more: --cursor %s\n", l.Cursor)
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
