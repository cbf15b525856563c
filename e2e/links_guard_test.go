package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Two daemons started in one network namespace, each with its own data dir
// and namespace prefix (so the prefix lock does not stop the second): the
// links and rules of that namespace are the first's, and the second refuses
// to start, naming it, rather than sweep the first's links and replace its
// rules.
func TestASecondDaemonInTheSameNetworkNamespaceRefusesToStart(t *testing.T) {
	e1 := NewEnv(t, Options{})
	sb := e1.Create("first")
	e1.MustIn(sb, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "kept", "http://my.kv/k")

	e2 := NewEnv(t, Options{NoStart: true})
	e2.HostNS = e1.HostNS // the same network namespace as the first
	if e2.TryStart() {
		t.Fatalf("a second daemon started in the first's network namespace:\n%s", e2.Log())
	}
	want := "holds the links and rules of the running daemon of " + filepath.Join(e1.Dir, "data") + `, interface prefix "icd"`
	if log := e2.Log(); !strings.Contains(log, want) {
		t.Errorf("the refusal does not name the first daemon (want %q):\n%s", want, log)
	}
	if got, code := e1.In(sb, "curl", "-sS", "-m", "5", "http://my.kv/k"); code != 0 || got != "kept" {
		t.Errorf("after the refused start, the first daemon's sandbox answered %q (exit %d)", got, code)
	}
	// The second's cleanup, in the same namespace, refuses too.
	out, err := exec.Command("nsenter", "--net=/run/netns/"+e1.HostNS, binary, "cleanup", "--config", e2.Config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "holds the links and rules") {
		t.Errorf("the second's cleanup beside the first (%v):\n%s", err, out)
	}
	if got, code := e1.In(sb, "curl", "-sS", "-m", "5", "http://my.kv/k"); code != 0 || got != "kept" {
		t.Errorf("after the refused cleanup, the first daemon's sandbox answered %q (exit %d)", got, code)
	}
	// The Envs' teardowns run the second's first, in the shared namespace:
	// with the first stopped, its cleanup may run there.
	e1.Stop()
}
