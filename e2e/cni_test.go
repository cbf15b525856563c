package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// cniEnv is a plugin installed as a runtime would: a link named
// interceptd-cni in a CNI bin dir.
type cniEnv struct {
	*Env
	plugin, dir string
}

func newCNI(t *testing.T) *cniEnv { return newCNIWith(t, Options{}) }

func newCNIWith(t *testing.T, o Options) *cniEnv {
	e := NewEnv(t, o)
	dir := t.TempDir()
	plugin := filepath.Join(dir, "interceptd-cni")
	if err := os.Symlink(binary, plugin); err != nil {
		t.Fatal(err)
	}
	return &cniEnv{Env: e, plugin: plugin, dir: dir}
}

func (c *cniEnv) conf(version string) []byte {
	// The plugin's state (pending purges) in the test's own directory.
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"interceptd","type":"interceptd-cni","socket":%q,"stateDir":%q}`, version, c.Socket, filepath.Join(c.dir, "state")))
}

// runtimeNetns makes a namespace the way a runtime does, outside the daemon.
func (c *cniEnv) runtimeNetns(name string) string {
	run(c.t, "ip", "netns", "add", name)
	c.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

func (c *cniEnv) args(cmd, id, nsPath string) *invoke.Args {
	return &invoke.Args{Command: cmd, ContainerID: id, NetNS: nsPath, IfName: "eth0", Path: c.dir}
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestTheCNIPluginAsARuntimeRunsIt(t *testing.T) {
	c := newCNI(t)
	ctx := context.Background()
	nsName := "ie2ecni-" + c.ID
	nsPath := c.runtimeNetns(nsName)
	id := "ctr-" + c.ID

	info, err := invoke.GetVersionInfo(ctx, c.plugin, nil)
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if !slices.Contains(info.SupportedVersions(), v) {
			t.Errorf("VERSION does not list %s: %v", v, info.SupportedVersions())
		}
	}
	if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, c.conf("1.1.0"), c.args("STATUS", "", ""), nil); err != nil {
		t.Errorf("STATUS with the daemon up: %v", err)
	}

	raw, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf("1.0.0"), c.args("ADD", id, nsPath), nil)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := current.NewResultFromResult(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.String(), "10.213.") || res.IPs[0].Gateway == nil ||
		len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" ||
		len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != res.IPs[0].Gateway.String() ||
		len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Sandbox != nsPath || res.Interfaces[0].Mac == "" {
		b, _ := json.Marshal(res)
		t.Fatalf("ADD result: %s", b)
	}
	// The runtime writes the container's resolv.conf from the result.
	os.MkdirAll("/etc/netns/"+nsName, 0o755)
	t.Cleanup(func() { os.RemoveAll("/etc/netns/" + nsName) })
	os.WriteFile("/etc/netns/"+nsName+"/resolv.conf", []byte("nameserver "+res.DNS.Nameservers[0]+"\n"), 0o644)
	sb := Sandbox{Name: id, Netns: nsName, NetnsPath: nsPath}
	if got := c.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
		t.Errorf("DNS in the attached namespace: %q", got)
	}
	c.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "via cni", "http://my.kv/cni")
	if got := c.MustIn(sb, "curl", "-sS", "http://my.kv/cni"); got != "via cni" {
		t.Errorf("KV in the attached namespace: %q", got)
	}
	if list, _, _ := c.CLI("sandbox", "list"); !strings.Contains(list, id) {
		t.Errorf("the attached sandbox is not listed:\n%s", list)
	}

	// CHECK gets the previous result, as the spec says.
	var confMap map[string]any
	json.Unmarshal(c.conf("1.0.0"), &confMap)
	prev, _ := json.Marshal(res)
	confMap["prevResult"] = json.RawMessage(prev)
	checkConf, _ := json.Marshal(confMap)
	if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, checkConf, c.args("CHECK", id, nsPath), nil); err != nil {
		t.Errorf("CHECK on intact wiring: %v", err)
	}
	c.MustIn(sb, "ip", "route", "del", "default")
	if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, checkConf, c.args("CHECK", id, nsPath), nil); err == nil || !strings.Contains(err.Error(), "default route") {
		t.Errorf("CHECK with the route gone: %v", err)
	}
	if _, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf("1.0.0"), c.args("ADD", id, nsPath), nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second ADD of the same container: %v", err)
	}

	for i := 0; i < 2; i++ {
		if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, c.conf("1.0.0"), c.args("DEL", id, nsPath), nil); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(nsPath); err != nil {
		t.Errorf("DEL removed the runtime's namespace: %v", err)
	}

	t.Run("DEL after the runtime already removed the namespace", func(t *testing.T) {
		ns2 := "ie2ecni2-" + c.ID
		p2 := c.runtimeNetns(ns2)
		if _, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf("1.0.0"), c.args("ADD", id+"b", p2), nil); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "netns", "del", ns2)
		if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, c.conf("1.0.0"), c.args("DEL", id+"b", p2), nil); err != nil {
			t.Errorf("DEL: %v", err)
		}
	})
	t.Run("ADD of a namespace that does not exist is a clear error", func(t *testing.T) {
		_, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf("1.0.0"), c.args("ADD", id+"c", "/run/netns/none-"+c.ID), nil)
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a daemon that is not running", func(t *testing.T) {
		c.Stop()
		_, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf("1.0.0"), c.args("ADD", id+"d", nsPath), nil)
		if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "not reachable") {
			t.Errorf("ADD: code %d, %v", cniCode(err), err)
		}
		err = invoke.ExecPluginWithoutResult(ctx, c.plugin, c.conf("1.1.0"), c.args("STATUS", "", ""), nil)
		if cniCode(err) != 50 {
			t.Errorf("STATUS: code %d, %v", cniCode(err), err)
		}
		if out, _ := exec.Command("ip", "-n", nsName, "-o", "link").Output(); strings.Count(string(out), "\n") > 1 {
			t.Errorf("a failed ADD left links in the namespace:\n%s", out)
		}
	})
}
