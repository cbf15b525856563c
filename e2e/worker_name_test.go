package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A sandbox names its worker through the CLI (and the config's
// default_worker), and keeps it across a restart; a worker that serves
// only some hosts leaves the others to the built-in handlers.
func TestASandboxsWorkerIsNamedCheckedAndKeptAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"app", "api"} {
		os.WriteFile(filepath.Join(dir, n+".js"), []byte(`export default { outboundByHost: { "`+n+`.w": () => new Response("`+n+`") } };`), 0o644)
	}
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf(`
workers:
  - name: app
    script: %s
  - name: api
    script: %s
default_worker: app
`, filepath.Join(dir, "app.js"), filepath.Join(dir, "api.js"))})
	w1 := e.Create("w1")
	e.CreateWith("w2", "--worker", "")
	if _, errOut, code := e.CLI("sandbox", "create", "w3", "--worker", "nope"); code == 0 || !strings.Contains(errOut, `unknown worker "nope"`) {
		t.Errorf("an unknown worker: exit %d, %q", code, errOut)
	}
	if _, errOut, code := e.CLI("sandbox", "policy", "w2", "--worker", "api"); code != 0 {
		t.Fatalf("sandbox policy --worker: %s", errOut)
	}
	want := map[string]string{"w1": "app", "w2": "api"}
	workers := func() map[string]string {
		list, _, _ := e.CLI("sandbox", "list")
		got := map[string]string{}
		for _, l := range strings.Split(list, "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[0] != "NAME" {
				got[f[0]] = f[4]
			}
		}
		return got
	}
	if got := workers(); len(got) != 2 || got["w1"] != want["w1"] || got["w2"] != want["w2"] {
		t.Errorf("before the restart: %v, want %v", got, want)
	}
	e.MustIn(w1, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "v1", "http://my.kv/k")
	e.Stop()
	e.Start()
	if got := workers(); len(got) != 2 || got["w1"] != want["w1"] || got["w2"] != want["w2"] {
		t.Errorf("after the restart: %v, want %v", got, want)
	}
	if out, code := e.In(w1, "curl", "-sS", "-m", "5", "http://my.kv/k"); code != 0 || out != "v1" {
		t.Errorf("a host the worker does not serve, from a sandbox with a worker: exit %d, %q", code, out)
	}
	if out := e.MustIn(w1, "curl", "-sS", "-m", "5", "http://app.w/"); out != "app" {
		t.Errorf("the worker's own host: %q", out)
	}
}
