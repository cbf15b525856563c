package e2e

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
)

// bundle builds an OCI bundle whose root filesystem is Debian's static
// busybox (no image pull), running script, in the network namespace at
// nsPath.
func bundle(t *testing.T, nsPath, script string) string {
	t.Helper()
	runc := need(t, "runc")
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is not installed (apt-get install busybox-static)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	b, _ := os.ReadFile(bb)
	os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755)
	for _, app := range []string{"sh", "nslookup", "wget", "md5sum", "cat", "echo"} {
		os.Symlink("busybox", filepath.Join(root, "bin", app))
	}
	// Whatever resolver the image names: the daemon answers for it.
	os.WriteFile(filepath.Join(root, "etc", "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644)
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	var spec map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	json.Unmarshal(raw, &spec)
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bin/sh", "-c", script}
	proc["env"] = []string{"PATH=/bin"}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	linux := spec["linux"].(map[string]any)
	nss := linux["namespaces"].([]any)
	for i, n := range nss {
		if n.(map[string]any)["type"] == "network" {
			nss[i] = map[string]any{"type": "network", "path": nsPath}
		}
	}
	raw, _ = json.MarshalIndent(spec, "", "  ")
	os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644)
	return dir
}

// runContainer runs a container to completion and returns its output.
func runContainer(t *testing.T, id, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { exec.Command("runc", "delete", "-f", id).Run() })
	out, err := exec.CommandContext(ctx, "runc", "run", "--bundle", dir, id).CombinedOutput()
	if err != nil {
		t.Fatalf("runc run %s: %v\n%s", id, err, out)
	}
	return string(out)
}

const containerScript = `nslookup my.kv 192.0.2.53
echo "kv: $(wget -qO- http://my.kv/greeting)"
echo "blob: $(wget -qO- http://my.r2/blob.bin | md5sum)"
wget -qO- --header 'Content-Type: application/json' --post-data '{"writes":[{"key":"from-container","value":"written by runc"}]}' http://state.do/ >/dev/null && echo state: ok
`

func seedForContainers(t *testing.T, e *Env) string {
	t.Helper()
	if _, errOut, code := e.CLI("kv", "put", "greeting", "hello from the host"); code != 0 {
		t.Fatal(errOut)
	}
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	path := filepath.Join(t.TempDir(), "blob.bin")
	os.WriteFile(path, blob, 0o644)
	if _, errOut, code := e.CLI("blob", "put", "blob.bin", path); code != 0 {
		t.Fatal(errOut)
	}
	sum := md5.Sum(blob)
	return hex.EncodeToString(sum[:])
}

func checkContainer(t *testing.T, e *Env, id, out, md5sum string) {
	t.Helper()
	for _, want := range []string{"Address: " + virtualKV, "kv: hello from the host", "blob: " + md5sum, "state: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("the container's output lacks %q:\n%s", want, out)
		}
	}
	if got, _, _ := e.CLI("state", "get", id, "from-container"); got != "written by runc" {
		t.Errorf("the operator reads %q as %s's state", got, id)
	}
}

func TestARuncContainerInASandboxReachesTheHandlers(t *testing.T) {
	e := NewEnv(t, Options{})
	sum := seedForContainers(t, e)
	id := "runc-" + e.ID // the container id is the sandbox name
	sb := e.Create(id)
	out := runContainer(t, id, bundle(t, sb.NetnsPath, containerScript))
	checkContainer(t, e, id, out, sum)
}

func TestARuncContainerJoinsANamespaceAttachedThroughCNI(t *testing.T) {
	c := newCNI(t)
	sum := seedForContainers(t, c.Env)
	id := "cni-" + c.ID
	nsPath := c.runtimeNetns("ie2erc-" + c.ID)
	if _, err := invoke.ExecPluginWithResult(context.Background(), c.plugin, c.conf("1.0.0"), c.args("ADD", id, nsPath), nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	out := runContainer(t, id, bundle(t, nsPath, containerScript))
	checkContainer(t, c.Env, id, out, sum)
	if err := invoke.ExecPluginWithoutResult(context.Background(), c.plugin, c.conf("1.0.0"), c.args("DEL", id, nsPath), nil); err != nil {
		t.Errorf("DEL: %v", err)
	}
}
