package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const ptpConflist = `{"cniVersion": "1.0.0", "name": "k8s-pod-network", "disableCheck": false,
 "plugins": [{"type": "ptp", "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}},
             {"type": "portmap", "capabilities": {"portMappings": true}}]}`

// nodeDirs is a node's CNI dirs with conf files given by name.
func nodeDirs(t *testing.T, confs map[string]string) (cniPaths, string) {
	t.Helper()
	root := t.TempDir()
	p := cniPaths{binDir: filepath.Join(root, "bin"), confDir: filepath.Join(root, "net.d")}
	for _, d := range []string{p.binDir, p.confDir} {
		os.MkdirAll(d, 0o755)
	}
	for name, body := range confs {
		os.WriteFile(filepath.Join(p.confDir, name), []byte(body), 0o644)
	}
	self := filepath.Join(root, "interceptd")
	os.WriteFile(self, []byte("#!binary"), 0o755)
	return p, self
}

func pluginsOf(t *testing.T, path string) (types []string, conf map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatalf("%s is no longer JSON: %v", path, err)
	}
	for _, pl := range conf["plugins"].([]any) {
		types = append(types, pl.(map[string]any)["type"].(string))
	}
	return types, conf
}

func TestCNIInstallChainsThePluginLastInTheConflistTheRuntimeUsesAndUninstallUndoesIt(t *testing.T) {
	p, self := nodeDirs(t, map[string]string{"10-ptp.conflist": ptpConflist, "99-other.conflist": `{"name":"x","plugins":[]}`})
	list := filepath.Join(p.confDir, "10-ptp.conflist")
	for i := 0; i < 2; i++ { // twice: the second replaces, never adds
		if err := cniInstall(io.Discard, p, self, "/run/interceptd/admin.sock", 0); err != nil {
			t.Fatalf("install #%d: %v", i+1, err)
		}
	}
	types, conf := pluginsOf(t, list)
	if strings.Join(types, ",") != "ptp,portmap,interceptd-cni" {
		t.Fatalf("plugins after install: %v", types)
	}
	last := conf["plugins"].([]any)[2].(map[string]any)
	if last["socket"] != "/run/interceptd/admin.sock" || conf["name"] != "k8s-pod-network" || conf["disableCheck"] != false {
		t.Errorf("conflist after install: %v", conf)
	}
	if fi, err := os.Stat(filepath.Join(p.binDir, "interceptd-cni")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the plugin binary: %v %v", fi, err)
	}
	if other, _ := pluginsOf(t, filepath.Join(p.confDir, "99-other.conflist")); len(other) != 0 {
		t.Errorf("a conflist the runtime does not use was changed: %v", other)
	}
	if ents, _ := os.ReadDir(p.confDir); len(ents) != 2 {
		t.Errorf("files in the conf dir: %v (a temporary file left?)", ents)
	}
	if err := cniUninstall(io.Discard, p); err != nil {
		t.Fatal(err)
	}
	if types, _ := pluginsOf(t, list); strings.Join(types, ",") != "ptp,portmap" {
		t.Errorf("plugins after uninstall: %v", types)
	}
	if _, err := os.Stat(filepath.Join(p.binDir, "interceptd-cni")); !os.IsNotExist(err) {
		t.Errorf("the binary after uninstall: %v", err)
	}
}

func TestCNIInstallRefusesWhatItCannotChainInto(t *testing.T) {
	tests := []struct {
		name    string
		confs   map[string]string
		wantErr string
	}{
		{"no config at all", nil, "no CNI config"},
		{"a single plugin's .conf first", map[string]string{"10-bridge.conf": `{"type":"bridge"}`, "20-ptp.conflist": ptpConflist}, "single plugin's config"},
		{"a conflist that is not JSON", map[string]string{"10-broken.conflist": `{"plugins": [`}, "parsing"},
		{"a conflist without plugins", map[string]string{"10-odd.conflist": `{"name": "odd"}`}, `no "plugins" list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, self := nodeDirs(t, tt.confs)
			before := map[string]string{}
			for n := range tt.confs {
				b, _ := os.ReadFile(filepath.Join(p.confDir, n))
				before[n] = string(b)
			}
			err := cniInstall(io.Discard, p, self, "/run/interceptd/admin.sock", 0)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(p.binDir, "interceptd-cni")); !os.IsNotExist(err) {
				t.Errorf("a refused install left the binary: %v", err)
			}
			for n, b := range before {
				if got, _ := os.ReadFile(filepath.Join(p.confDir, n)); string(got) != b {
					t.Errorf("%s was changed by a refused install", n)
				}
			}
		})
	}
}
