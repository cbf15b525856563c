package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/spf13/cobra"
)

// watchedSocket listens where INTERCEPTD_SOCKET points and counts the
// connections made to it: a command that should not ask the daemon
// anything is caught asking.
func watchedSocket(t *testing.T) *atomic.Int64 {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Setenv("INTERCEPTD_SOCKET", sock)
	return &n
}

// commandPaths is every command of the tree, hidden ones included, as the
// arguments that name it.
func commandPaths() [][]string {
	var paths [][]string
	walk(newRoot(), func(c *cobra.Command) {
		paths = append(paths, strings.Fields(c.CommandPath())[1:])
	})
	return paths
}

// netnsEntries are the namespaces under the default config's prefix, the
// ones a command run with the default config would make (the machine's
// others come and go with other tests).
func netnsEntries(t *testing.T) []string {
	prefix := config.Default().Sandbox.NetnsPrefix
	ents, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestEveryCommandsHelpWorksWithoutADaemonAndTouchesNothing(t *testing.T) {
	asked := watchedSocket(t)
	// A command that took --help for an argument (config check opened a
	// file named --help) or for work would leave its mark here.
	t.Chdir(t.TempDir())
	nsBefore := netnsEntries(t)
	paths := commandPaths()
	if len(paths) < 30 {
		t.Fatalf("the walk found %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		for _, help := range [][]string{{"--help"}, {"-h"}} {
			args := append(slices.Clone(path), help...)
			name := strings.Join(append([]string{"interceptd"}, args...), " ")
			t.Run(name, func(t *testing.T) {
				code, out, stderr := captureAll(t, args...)
				want := strings.Join(append([]string{"interceptd"}, path...), " ")
				if code != 0 || stderr != "" || !strings.Contains(out, "Usage:\n  "+want) {
					t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant exit 0, no stderr, and the usage of %q", code, stderr, out, want)
				}
				if strings.Contains(out, "%!") {
					t.Errorf("a formatting mistake in the help:\n%s", out)
				}
			})
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("--help asked the daemon %d times", n)
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("--help left files in the working directory: %v", ents)
	}
	if after := netnsEntries(t); !slices.Equal(after, nsBefore) {
		t.Errorf("--help changed /run/netns: %v, then %v", nsBefore, after)
	}
}

func TestHelpListsOnlyTheFlagsThatApply(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		has, hasNot []string
	}{
		{"the top level lists every command, sandbox policy included", []string{"--help"},
			[]string{"sandbox policy", "sandbox quota", "kv put", "state list", "worker reload", "store compact", "config check", "completion"}, nil},
		{"sandbox list has no policy or purge flags", []string{"sandbox", "list", "--help"},
			[]string{"--admin-socket", "--output"}, []string{"--allow", "--deny", "--internet", "--purge", "--quota"}},
		{"sandbox create has the policy and quota flags", []string{"sandbox", "create", "--help"},
			[]string{"--allow", "--deny", "--internet", "--worker", "--quota", "--admin-socket"}, []string{"--purge", "--output"}},
		{"state get has no blob or put flags", []string{"state", "get", "--help"},
			[]string{"--host"}, []string{"--content-type", "--ttl", "--create", "--prefix", "--sandbox"}},
		{"blob put has a content type and no expiry", []string{"blob", "put", "--help"},
			[]string{"--content-type", "--sandbox"}, []string{"--ttl", "--expiration", "--namespace", "--metadata"}},
		{"config check has no daemon flags", []string{"config", "check", "--help"},
			nil, []string{"--admin-socket", "--output", "Global Flags"}},
		{"help COMMAND is --help", []string{"help", "sandbox", "delete"},
			[]string{"interceptd sandbox delete NAME", "--purge"}, []string{"--internet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := captureAll(t, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			for _, s := range tt.has {
				if !strings.Contains(out, s) {
					t.Errorf("help does not mention %s:\n%s", s, out)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(out, s) {
					t.Errorf("help mentions %s:\n%s", s, out)
				}
			}
		})
	}
}

func TestAFlagOrArgumentThatDoesNotApplyIsAUsageError(t *testing.T) {
	asked := watchedSocket(t)
	t.Chdir(t.TempDir())
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"a policy flag on sandbox list", []string{"sandbox", "list", "--internet", "off"}, "--internet goes with sandbox create or sandbox policy, not sandbox list"},
		{"--purge on sandbox create", []string{"sandbox", "create", "x", "--purge"}, "--purge goes with sandbox delete, not sandbox create"},
		{"a blob flag on state get", []string{"state", "get", "sb", "k", "--content-type", "text/plain"}, "--content-type goes with blob put, not state get"},
		{"an expiry on kv list", []string{"kv", "list", "--ttl", "5"}, "--ttl goes with kv put or state put, not kv list"},
		{"--create on kv put", []string{"kv", "put", "k", "v", "--create"}, "--create goes with state put, not kv put"},
		{"--admin-socket on a command without a daemon", []string{"config", "check", "--admin-socket", "/x", "f.yaml"}, "--admin-socket does not apply to interceptd config check"},
		{"--output on a command that prints no data", []string{"sandbox", "delete", "x", "-o", "json"}, "--output does not apply to interceptd sandbox delete"},
		{"--output before a command that prints no data", []string{"--output", "json", "version"}, "--output does not apply to interceptd version"},
		{"an --output that is not json or table", []string{"status", "--output", "yaml"}, `--output "yaml": want json or table`},
		{"--json and --output table together", []string{"status", "--json", "-o", "table"}, "exclude each other"},
		{"a flag with one dash, as Go's flag took it", []string{"serve", "-config", "x.yaml"}, "a long flag takes two dashes: --config"},
		{"an unknown flag", []string{"sandbox", "list", "--frob"}, "unknown flag: --frob"},
		{"an unknown command", []string{"frobnicate"}, `unknown command "frobnicate" for "interceptd"`},
		{"an unknown sandbox command, with a suggestion", []string{"sandbox", "lsit"}, `unknown command "lsit" for "interceptd sandbox" (did you mean list?)`},
		{"a group without a command", []string{"sandbox"}, "Usage:\n  interceptd sandbox COMMAND"},
		{"config check without a file", []string{"config", "check"}, "interceptd config check: missing FILE"},
		{"sandbox show without a name", []string{"sandbox", "show"}, "interceptd sandbox show: missing NAME"},
		{"state get without a key", []string{"state", "get", "sb"}, "interceptd state get: missing KEY"},
		{"kv get with two keys", []string{"kv", "get", "a", "b"}, `interceptd kv get: unexpected argument "b"`},
		{"version with an argument", []string{"version", "--help-me"}, "unknown flag: --help-me"},
		{"version with an argument", []string{"version", "now"}, `interceptd version takes no arguments, got ["now"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, tt.args...)
			if code != 2 || out != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and a stderr saying %q", code, out, stderr, tt.wantErr)
			}
		})
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("a usage error asked the daemon %d times", n)
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("left files in the working directory: %v", ents)
	}
}

func TestAnExpiryTheStoreWouldRefuseIsRefusedBeforeTheDaemonIsAsked(t *testing.T) {
	asked := watchedSocket(t)
	for _, args := range [][]string{
		{"kv", "put", "k", "v", "--ttl", "0"},
		{"kv", "put", "k", "v", "--ttl", "-5"},
		{"state", "put", "sb", "k", "v", "--ttl=-5", "--create"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := captureAll(t, args...)
			// The message is store.ParseExpiry's, which a sandbox's PUT gets
			// too (TestEveryWritePathJudgesTTLsAndExpirationsAlike).
			if code != 1 || !strings.Contains(stderr, "at least 1") {
				t.Errorf("exit %d %q, want exit 1 naming the minimum", code, stderr)
			}
		})
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the daemon was asked %d times", n)
	}
}

func TestGlobalFlagsGoBeforeOrAfterTheCommand(t *testing.T) {
	sock, _, _ := fakeDaemon(t)
	t.Setenv("INTERCEPTD_SOCKET", filepath.Join(t.TempDir(), "not-this-one.sock"))
	if code, _, stderr := captureAll(t, "sandbox", "create", "web1", "--admin-socket", sock); code != 0 {
		t.Fatalf("create: exit %d %s", code, stderr)
	}
	listed := func(t *testing.T, out string) {
		var l []struct{ Name string }
		if err := json.Unmarshal([]byte(out), &l); err != nil || len(l) != 1 || l[0].Name != "web1" {
			t.Errorf("not a JSON list of web1 (%v):\n%s", err, out)
		}
	}
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, out string)
	}{
		{"--admin-socket before the command", []string{"--admin-socket", sock, "sandbox", "list"}, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "web1") {
				t.Errorf("not the table:\n%s", out)
			}
		}},
		{"--admin-socket= between group and command", []string{"sandbox", "--admin-socket=" + sock, "list"}, func(t *testing.T, out string) {
			if !strings.Contains(out, "web1") {
				t.Errorf("no web1:\n%s", out)
			}
		}},
		{"--output json before the command", []string{"--output", "json", "--admin-socket", sock, "sandbox", "list"}, listed},
		{"-o json after it", []string{"sandbox", "list", "-o", "json", "--admin-socket", sock}, listed},
		{"a record as a table", []string{"sandbox", "show", "web1", "-o", "table", "--admin-socket", sock}, func(t *testing.T, out string) {
			for _, want := range []string{"name", "web1", "quota.kv.bytes", "policy.internet"} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
			if strings.Contains(out, "{") {
				t.Errorf("JSON in the table:\n%s", out)
			}
		}},
		{"a record as JSON by default", []string{"sandbox", "show", "web1", "--admin-socket", sock}, func(t *testing.T, out string) {
			var sb struct{ Name string }
			if json.Unmarshal([]byte(out), &sb); sb.Name != "web1" {
				t.Errorf("not web1's JSON:\n%s", out)
			}
		}},
		{"status -o json", []string{"-o", "json", "status", "--admin-socket", sock}, func(t *testing.T, out string) {
			var st struct{ Version string }
			if json.Unmarshal([]byte(out), &st); st.Version != "9.9.9" {
				t.Errorf("not the status JSON:\n%s", out)
			}
		}},
		{"worker list -o json", []string{"worker", "list", "-o", "json", "--admin-socket", sock}, func(t *testing.T, out string) {
			if !json.Valid([]byte(out)) {
				t.Errorf("not JSON:\n%s", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			tt.check(t, out)
		})
	}
}

func TestListingsPrintAsJSONOrAsATable(t *testing.T) {
	w := newExpiryWorld(t)
	s := []string{"--admin-socket", w.sock}
	for _, args := range [][]string{
		{"kv", "put", "--host", "my.kv", "config/mode", "fast", "--metadata", `{"by":"ops"}`},
		{"kv", "put", "--host", "my.kv", "config/ttl", "x", "--ttl", "3600"},
		{"state", "put", w.sandboxName, "k", "v", "--host", "state.do", "--create"},
	} {
		if code, _, stderr := captureAll(t, append(args, s...)...); code != 0 {
			t.Fatalf("%v: exit %d %s", args, code, stderr)
		}
	}
	tests := []struct {
		name     string
		args     []string
		want     []string
		wantJSON bool
	}{
		{"kv list is JSON by default", []string{"kv", "list", "--host", "my.kv", "--prefix", "config/"}, []string{`"name": "config/mode"`}, true},
		{"kv list -o json is the same", []string{"kv", "list", "--host", "my.kv", "-o", "json"}, []string{`"name": "config/ttl"`}, true},
		{"kv list -o table has a row per key", []string{"kv", "list", "--host", "my.kv", "-o", "table"}, []string{"NAME", "config/mode", `{"by":"ops"}`, "config/ttl"}, false},
		{"state list -o table", []string{"state", "list", w.sandboxName, "--host", "state.do", "-o", "table"}, []string{"NAME", "k "}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, append(tt.args, s...)...)
			if code != 0 {
				t.Fatalf("exit %d %s", code, stderr)
			}
			if json.Valid([]byte(out)) != tt.wantJSON {
				t.Errorf("JSON: %v, want %v:\n%s", !tt.wantJSON, tt.wantJSON, out)
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
		})
	}
}

func TestCompletionOffersTheDaemonsSandboxes(t *testing.T) {
	sock, _, _ := fakeDaemon(t)
	for _, name := range []string{"web1", "web2", "api"} {
		if code, _, stderr := captureAll(t, "sandbox", "create", name, "--admin-socket", sock); code != 0 {
			t.Fatalf("create %s: exit %d %s", name, code, stderr)
		}
	}
	missing := filepath.Join(t.TempDir(), "nothing-here.sock")
	tests := []struct {
		name       string
		args       []string
		want       []string
		wantNoneOf []string
	}{
		{"sandbox show offers every sandbox", []string{"--admin-socket", sock, "sandbox", "show", ""}, []string{"web1", "web2", "api"}, nil},
		{"a prefix narrows them", []string{"sandbox", "delete", "--admin-socket", sock, "we"}, []string{"web1", "web2"}, []string{"api"}},
		{"state get offers sandboxes first", []string{"state", "get", "--admin-socket", sock, ""}, []string{"web1", "api"}, nil},
		{"and nothing for its key", []string{"state", "get", "--admin-socket", sock, "web1", ""}, nil, []string{"web1", "api"}},
		{"--output offers its formats", []string{"sandbox", "list", "--output", ""}, []string{"json", "table"}, nil},
		{"without a daemon, nothing", []string{"--admin-socket", missing, "sandbox", "show", ""}, nil, []string{"web1", "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, append([]string{cobra.ShellCompRequestCmd}, tt.args...)...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			// Cobra's own note on stderr is for debugging and is discarded by
			// the shell scripts; an error from the daemon must not be there.
			if strings.Contains(stderr, "cannot reach") || strings.Contains(stderr, "interceptd:") {
				t.Errorf("completion spoke up: %q", stderr)
			}
			got := lines[:len(lines)-1]
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("completions %q do not offer %q", got, w)
				}
			}
			for _, w := range tt.wantNoneOf {
				if slices.Contains(got, w) {
					t.Errorf("completions %q offer %q", got, w)
				}
			}
		})
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"blob put's FILE is a file name", []string{"blob", "put", "k", ""}, ":0"},
		{"blob put's KEY is not", []string{"blob", "put", ""}, ":4"},
		{"config check's FILE is a YAML file", []string{"config", "check", ""}, ":8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, out, _ := captureAll(t, append([]string{cobra.ShellCompRequestCmd}, tt.args...)...)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); lines[len(lines)-1] != tt.want {
				t.Errorf("completion %q, want the directive %s", out, tt.want)
			}
		})
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run("completion "+shell+" prints a script", func(t *testing.T) {
			code, out, _ := captureAll(t, "completion", shell)
			if code != 0 || !strings.Contains(out, "interceptd") || !strings.Contains(out, cobra.ShellCompRequestCmd) {
				t.Errorf("exit %d, script:\n%.300s", code, out)
			}
		})
	}
}

func TestTheCommittedReferenceIsCurrent(t *testing.T) {
	var b bytes.Buffer
	if err := genDocs(&b, newRoot()); err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../docs/cli.md")
	if errors.Is(err, os.ErrNotExist) || !bytes.Equal(committed, b.Bytes()) {
		t.Fatalf("docs/cli.md does not match the commands (%v): run go generate ./cmd/interceptd", err)
	}
	// Every command people use has its section.
	walk(newRoot(), func(c *cobra.Command) {
		if !c.Hidden && !hiddenUnder(c) && !strings.Contains(string(committed), "\n## "+c.CommandPath()+"\n") {
			t.Errorf("no section for %s", c.CommandPath())
		}
	})
}
