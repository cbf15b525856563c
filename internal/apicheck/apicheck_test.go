// Package apicheck_test holds one test: that the exported packages can be
// used from another module, which internal/ packages cannot be. router,
// netns and dnsshim take and return policy types in their exported API
// (a router.Config's Identify returns a policy.Caller), so policy must be
// importable too; this builds a small program outside the module that
// names those types, as an importer would.
package apicheck_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const program = `package main

import (
	"net/http"
	"net/netip"

	"github.com/interceptd/interceptd/dnsshim"
	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/httpserve"
)

func main() {
	identify := func(netip.Addr) (policy.Caller, bool) {
		return policy.Caller{Sandbox: "s", Policy: policy.MustCompile(policy.Policy{Internet: true})}, true
	}
	rt := router.New(router.Config{
		Hosts: map[string]router.Route{"hello.test": {Name: "hello.test", Handler: router.HandlerFunc(
			func(w http.ResponseWriter, r *http.Request, env router.Env) error { return nil })}},
		Identify: identify,
		Fallback: &handlers.Forward{Metrics: (*forward.Metrics)(nil)},
	})
	_ = httpserve.New(rt, nil, nil)
	_ = dnsshim.Config{Identify: identify}
	_ = netns.Config{DefaultPolicy: policy.Policy{Internet: false}}
}
`

func TestTheExportedPackagesBuildFromAnotherModule(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mod := "module example.test/importer\n\ngo 1.26\n\nrequire github.com/interceptd/interceptd v0.0.0\n\nreplace github.com/interceptd/interceptd => " + root + "\n"
	for name, body := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(program)} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(goBin, "build", "-o", os.DevNull, ".")
	cmd.Dir = dir
	// The modules the main module needs are in the cache already (the
	// tests were built); nothing is fetched, and go.sum comes from there.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building an importer of router, netns, dnsshim and policy from another module: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "use of internal package") {
		t.Fatalf("an exported API names an internal package:\n%s", out)
	}
}
