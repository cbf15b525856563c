package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

func TestTheSandboxCommandsNameTheWorker(t *testing.T) {
	sock, sbs, _ := fakeDaemon(t)
	sbs.Workers, sbs.DefaultWorker = []string{"app", "api"}, "app"
	s := []string{"--admin-socket", sock}
	worker := func(name, want string) func(t *testing.T) {
		return func(t *testing.T) {
			if sb, ok := sbs.Get(name); !ok || sb.Worker != want {
				t.Errorf("%s has worker %q, want %q", name, sb.Worker, want)
			}
		}
	}
	steps := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		check    func(t *testing.T)
	}{
		{"create without --worker takes the default", []string{"sandbox", "create", "w1"}, 0, "icd-w1", "", worker("w1", "app")},
		{"create --worker names one", []string{"sandbox", "create", "w2", "--worker", "api"}, 0, "icd-w2", "", worker("w2", "api")},
		{"create --worker '' names none", []string{"sandbox", "create", "w3", "--worker", ""}, 0, "icd-w3", "", worker("w3", "")},
		{"create --worker of an unknown one is refused naming it", []string{"sandbox", "create", "w4", "--worker", "nope"}, 1, "", `unknown worker "nope"`, func(t *testing.T) {
			if _, ok := sbs.Get("w4"); ok {
				t.Error("w4 was created")
			}
		}},
		{"policy --worker changes it and prints the policy", []string{"sandbox", "policy", "w1", "--worker", "api"}, 0, `"internet"`, "", worker("w1", "api")},
		{"policy --worker '' clears it", []string{"sandbox", "policy", "w2", "--worker", ""}, 0, "", "", worker("w2", "")},
		{"policy --worker with policy flags changes both", []string{"sandbox", "policy", "w3", "--worker", "app", "--internet", "off"}, 0, `"internet": false`, "", func(t *testing.T) {
			if sb, _ := sbs.Get("w3"); sb.Worker != "app" || sb.Policy.Internet {
				t.Errorf("w3: worker %q policy %+v", sb.Worker, sb.Policy)
			}
		}},
		{"policy --worker of an unknown one changes nothing", []string{"sandbox", "policy", "w3", "--worker", "nope", "--internet", "on"}, 1, "", `"nope"`, func(t *testing.T) {
			if sb, _ := sbs.Get("w3"); sb.Worker != "app" || sb.Policy.Internet {
				t.Errorf("a refused change changed w3: worker %q policy %+v", sb.Worker, sb.Policy)
			}
		}},
		{"list shows each sandbox's worker", []string{"sandbox", "list"}, 0, "WORKER", "", nil},
		{"--worker goes with create and policy only, a usage error", []string{"sandbox", "quota", "w1", "--worker", "app"}, 2, "", "--worker goes with sandbox create or sandbox policy, not sandbox quota", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, append(st.args, s...)...)
			if code != st.wantCode || !strings.Contains(out, st.wantOut) || !strings.Contains(stderr, st.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, stdout containing %q, stderr containing %q", code, out, stderr, st.wantCode, st.wantOut, st.wantErr)
			}
			if st.check != nil {
				st.check(t)
			}
		})
	}
	_, out, _ := captureAll(t, append([]string{"sandbox", "list"}, s...)...)
	rows := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			rows[f[0]] = f
		}
	}
	if rows["w1"][4] != "api" || rows["w2"][4] != "-" || rows["w3"][4] != "app" || rows["NAME"][4] != "WORKER" {
		t.Errorf("list:\n%s", out)
	}
}

func TestTheCNIConfigNamesTheContainersWorker(t *testing.T) {
	sock, sbs, _ := fakeDaemon(t)
	sbs.Workers, sbs.DefaultWorker = []string{"app", "api"}, "app"
	args := func(id string, conf map[string]any) *skel.CmdArgs {
		conf["cniVersion"], conf["name"], conf["type"], conf["socket"] = "1.0.0", "icd", "interceptd-cni", sock
		conf["stateDir"] = filepath.Join(filepath.Dir(sock), "cni-state") // not the machine's
		raw, _ := json.Marshal(conf)
		return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0", StdinData: raw}
	}
	tests := []struct {
		name    string
		conf    map[string]any
		want    string
		wantErr string
	}{
		{"without worker the default", map[string]any{}, "app", ""},
		{"a worker by name", map[string]any{"worker": "api"}, "api", ""},
		{"an empty worker is none", map[string]any{"worker": ""}, "", ""},
		{"an unknown worker fails ADD naming it", map[string]any{"worker": "nope"}, "", `"nope"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "ctr" + string(rune('a'+i))
			_, err := stdoutOf(t, func() error { return cniAdd(args(id, tt.conf)) })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ADD: %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sb, _ := sbs.Get(id); sb.Worker != tt.want {
				t.Errorf("worker %q, want %q", sb.Worker, tt.want)
			}
		})
	}
}
