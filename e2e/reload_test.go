package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reload rewrites the env's config, replacing old with next in it, sends
// the daemon SIGHUP, and waits until its log says the reload ended
// ("config reloaded" or "reload refused"); it returns that log line.
func (e *Env) reload(old, next string) string {
	e.t.Helper()
	cfg, err := os.ReadFile(e.Config)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.Contains(string(cfg), old) {
		e.t.Fatalf("the config has no %q to replace", old)
	}
	if err := os.WriteFile(e.Config, []byte(strings.Replace(string(cfg), old, next, 1)), 0o644); err != nil {
		e.t.Fatal(err)
	}
	before := e.Log()
	e.daemon.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, l := range strings.Split(strings.TrimPrefix(e.Log(), before), "\n") {
			if strings.Contains(l, "config reloaded") || strings.Contains(l, "reload refused") {
				return l
			}
		}
	}
	e.t.Fatalf("no reload in the log 10s after SIGHUP:\n%s", strings.TrimPrefix(e.Log(), before))
	return ""
}

func TestAReloadChangesHandlersAndTheDefaultPolicyLive(t *testing.T) {
	const v1 = `policy:
  internet: true
handlers:
  - host: my.kv
    kind: kv
  - host: gone.test
    kind: respond
    body: "gone soon\n"
`
	const v2 = `policy:
  internet: true
  denied_hosts: [example.test]
handlers:
  - host: my.kv
    kind: respond
    body: "a respond handler now\n"
  - host: new.test
    kind: respond
    body: "new\n"
`
	e := NewEnv(t, Options{ExtraConfig: v1})
	follower := e.Create("follower")               // the default policy
	own := e.CreateWith("own", "--internet", "on") // a policy of its own
	e.MustIn(follower, "curl", "-sf", "-X", "PUT", "--data", "v1", "http://my.kv/k")
	if out := e.MustIn(follower, "curl", "-sf", "http://my.kv/k"); out != "v1" {
		t.Fatalf("before the reload my.kv answered %q, want the stored v1", out)
	}
	gone := strings.TrimSpace(e.MustIn(follower, "dig", "+short", "gone.test"))
	kvAddr := strings.TrimSpace(e.MustIn(follower, "dig", "+short", "my.kv"))
	e.MustIn(follower, "curl", "-sf", "http://example.test/")

	if line := e.reload(v1, v2); !strings.Contains(line, "config reloaded") {
		t.Fatalf("the reload was refused: %s", line)
	}
	// The handler changed kind, in place: same name, same address.
	if out := e.MustIn(follower, "curl", "-sf", "http://my.kv/k"); out != "a respond handler now\n" {
		t.Errorf("after the reload my.kv answered %q, want the respond handler's body", out)
	}
	if a := strings.TrimSpace(e.MustIn(follower, "dig", "+short", "my.kv")); a != kvAddr {
		t.Errorf("my.kv moved from %s to %s: a cached answer would lead elsewhere", kvAddr, a)
	}
	// A new handler answers, by name and through DNS, at an address no
	// removed handler had.
	newAddr := strings.TrimSpace(e.MustIn(follower, "dig", "+short", "new.test"))
	if newAddr == "" || newAddr == gone {
		t.Errorf("new.test resolved to %q (gone.test had %s): want a fresh virtual address", newAddr, gone)
	}
	if out := e.MustIn(follower, "curl", "-sf", "http://new.test/"); out != "new\n" {
		t.Errorf("new.test answered %q", out)
	}
	// The removed handler's address leads to no handler now.
	if out, _ := e.In(follower, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: gone.test", "http://"+gone+"/"); out == "200" {
		t.Errorf("the removed handler's address still answered 200")
	}
	// The default policy: the sandbox that follows it has it now (its
	// DNS denies the name, and an address given by hand meets the router's
	// deny); the one with its own policy keeps that.
	denied := func(sb Sandbox) bool {
		if out := strings.TrimSpace(e.MustIn(sb, "dig", "+short", "example.test")); out != "" {
			t.Errorf("%s: example.test resolved to %q", sb.Name, out)
		}
		out, _ := e.In(sb, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve", "example.test:80:"+upstreamIP, "http://example.test/")
		return out == "403"
	}
	if !denied(follower) {
		t.Errorf("the follower reached example.test after the default policy denied it")
	}
	e.MustIn(own, "curl", "-sf", "http://example.test/")
	// And a sandbox made now gets it.
	if late := e.Create("late"); !denied(late) {
		t.Errorf("a sandbox made after the reload reached example.test")
	}
}

func TestAReloadThatCannotApplyKeepsTheRunningConfigAndSaysWhy(t *testing.T) {
	const v1 = `handlers:
  - host: my.kv
    kind: respond
    body: "v1\n"
`
	e := NewEnv(t, Options{ExtraConfig: v1})
	sb := e.Create("box")
	tests := []struct {
		name, next, want string
	}{
		{"a file that fails validation names the field and the line", "handlers:\n  - host: my.kv\n    kind: respond\n    stauts: 200\n",
			"line"},
		{"a change that needs a restart names the field", "metrics:\n  max_sandbox_labels: 7\n" + v1, "metrics.max_sandbox_labels"},
		{"a handler of an unknown kind is refused", "handlers:\n  - host: my.kv\n    kind: teleport\n", "teleport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := e.reload(v1, tt.next)
			if !strings.Contains(line, "reload refused") || !strings.Contains(line, tt.want) {
				t.Errorf("the reload's log line %q does not refuse naming %q", line, tt.want)
			}
			if out := e.MustIn(sb, "curl", "-sf", "http://my.kv/"); out != "v1\n" {
				t.Errorf("after a refused reload my.kv answered %q, want the running config's v1", out)
			}
			// Put the running config back in the file for the next case.
			cfg, _ := os.ReadFile(e.Config)
			os.WriteFile(e.Config, []byte(strings.Replace(string(cfg), tt.next, v1, 1)), 0o644)
		})
	}

	// interceptd reload says the same, and exits 1 when refused.
	cfg, _ := os.ReadFile(e.Config)
	os.WriteFile(e.Config, []byte(strings.Replace(string(cfg), v1, "metrics:\n  max_sandbox_labels: 7\n"+v1, 1)), 0o644)
	if _, stderr, code := e.CLI("reload"); code != 1 || !strings.Contains(stderr, "metrics.max_sandbox_labels changes only with a restart") {
		t.Errorf("interceptd reload of a restart-only change: exit %d, %q", code, stderr)
	}
	os.WriteFile(e.Config, []byte(strings.Replace(string(cfg), "body: \"v1\\n\"", "body: \"v2\\n\"", 1)), 0o644)
	if out, stderr, code := e.CLI("reload"); code != 0 || !strings.Contains(out, "changed handlers") {
		t.Errorf("interceptd reload of a handler change: exit %d, %q %q", code, out, stderr)
	}
	if out := e.MustIn(sb, "curl", "-sf", "http://my.kv/"); out != "v2\n" {
		t.Errorf("after interceptd reload my.kv answered %q, want v2", out)
	}
}
