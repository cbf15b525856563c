package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/interceptd/interceptd/internal/admin/admintest"
	"github.com/interceptd/interceptd/store"
)

// cniArgs is what a runtime passes the plugin for container id; the
// plugin keeps its state beside the socket, never on the machine's disk.
func cniArgs(sock, id, nsPath, ifName string, extra ...string) *skel.CmdArgs {
	m := map[string]string{"cniVersion": "1.0.0", "name": "icd", "type": "interceptd-cni", "socket": sock,
		"stateDir": filepath.Join(filepath.Dir(sock), "cni-state")}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	conf, _ := json.Marshal(m)
	return &skel.CmdArgs{ContainerID: id, Netns: nsPath, IfName: ifName, StdinData: conf}
}

// stdoutOf runs fn and returns what it printed.
func stdoutOf(t *testing.T, fn func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	ferr := fn()
	os.Stdout = old
	w.Close()
	return string(<-done), ferr
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestTheCNIPluginAttachesChecksAndDetachesThroughTheDaemon(t *testing.T) {
	sock, sbs, _ := fakeDaemon(t)
	args := cniArgs(sock, "ctr1", "/var/run/netns/cni-1", "eth0")

	out, err := stdoutOf(t, func() error { return cniAdd(args) })
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	sb, ok := sbs.Get("ctr1")
	if !ok || sb.NetnsPath != "/var/run/netns/cni-1" || sb.Interface != "eth0" {
		t.Fatalf("the daemon was asked to attach %+v", sb)
	}
	var res struct {
		IPs []struct{ Address, Gateway string }
		DNS struct{ Nameservers []string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("ADD printed no result: %v: %q", err, out)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address != "10.213.0.2/30" || res.IPs[0].Gateway != "10.213.0.1" || len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.213.0.1" {
		t.Errorf("ADD result %s", out)
	}

	if err := cniCheck(args); err != nil {
		t.Errorf("CHECK of the attached container: %v", err)
	}
	if err := cniCheck(cniArgs(sock, "ctr1", "/var/run/netns/other", "eth0")); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("CHECK with another namespace: %v, want 'does not match'", err)
	}
	if err := cniStatus(args); err != nil {
		t.Errorf("STATUS with the daemon up: %v", err)
	}

	if err := cniDel(args); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, ok := sbs.Get("ctr1"); ok {
		t.Error("DEL left the sandbox")
	}
	if err := cniDel(args); err != nil {
		t.Errorf("a second DEL: %v, want success (DEL is idempotent)", err)
	}
	if err := cniCheck(args); err == nil {
		t.Error("CHECK of a detached container passed")
	}
}

func TestTheCNIPluginTellsTheRuntimeWhenTheDaemonIsAway(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none.sock")
	args := cniArgs(none, "ctr1", "/var/run/netns/cni-1", "eth0")
	tests := []struct {
		name string
		call func() error
		want uint
	}{
		{"ADD is to be tried again later", func() error { _, err := stdoutOf(t, func() error { return cniAdd(args) }); return err }, types.ErrTryAgainLater},
		{"DEL is to be tried again later", func() error { return cniDel(args) }, types.ErrTryAgainLater},
		{"STATUS says the plugin cannot serve ADD", func() error { return cniStatus(args) }, errPluginNotAvailable},
		{"a config that is not JSON is a decoding failure", func() error {
			return cniDel(&skel.CmdArgs{ContainerID: "c", StdinData: []byte("{")})
		}, types.ErrDecodingFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cniCode(tt.call()); got != tt.want {
				t.Errorf("CNI error code %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCNIDataRetentionPurgesAContainersDataAtDELOrAfterItsGrace(t *testing.T) {
	// stored says whether container id still has data in the store.
	stored := func(t *testing.T, db *store.DB, id string) bool {
		t.Helper()
		_, err := db.Keys(store.KindState, "default", store.SandboxScope(id), store.Limits{}).Get("k")
		return err == nil
	}
	write := func(t *testing.T, db *store.DB, id string) {
		t.Helper()
		if err := db.Keys(store.KindState, "default", store.SandboxScope(id), store.Limits{}).Put("k", store.Entry{Value: []byte("v"), Owner: id}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(t *testing.T, args *skel.CmdArgs) {
		t.Helper()
		if _, err := stdoutOf(t, func() error { return cniAdd(args) }); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	later := func(t *testing.T, d time.Duration) {
		t.Helper()
		at := time.Now().Add(d)
		cniNow = func() time.Time { return at }
		t.Cleanup(func() { cniNow = time.Now })
	}
	pending := func(sock, id string) bool {
		_, err := os.Stat(filepath.Join(filepath.Dir(sock), "cni-state", "purges", id))
		return err == nil
	}
	tests := []struct {
		name      string
		retention []string // extra config: dataRetention
		// then runs after the DEL and returns whether the data must be
		// there at the end.
		then func(t *testing.T, sock string, sbs *admintest.Sandboxes, args *skel.CmdArgs) bool
	}{
		{"0s purges at DEL", []string{"dataRetention", "0s"}, func(t *testing.T, sock string, _ *admintest.Sandboxes, _ *skel.CmdArgs) bool {
			return false
		}},
		{"keep never purges", []string{"dataRetention", "keep"}, func(t *testing.T, sock string, _ *admintest.Sandboxes, args *skel.CmdArgs) bool {
			later(t, 1000*time.Hour)
			if err := cniStatus(args); err != nil {
				t.Fatal(err)
			}
			return !pending(sock, "ctr1")
		}},
		{"by default the data stays for an hour after DEL", nil, func(t *testing.T, sock string, _ *admintest.Sandboxes, args *skel.CmdArgs) bool {
			if !pending(sock, "ctr1") {
				t.Error("no purge pending after DEL")
			}
			later(t, 59*time.Minute)
			if err := cniStatus(args); err != nil {
				t.Fatal(err)
			}
			return true
		}},
		{"by default the first call after the hour purges it", nil, func(t *testing.T, sock string, _ *admintest.Sandboxes, args *skel.CmdArgs) bool {
			later(t, 61*time.Minute)
			if err := cniStatus(args); err != nil {
				t.Fatal(err)
			}
			if pending(sock, "ctr1") {
				t.Error("the purge is still pending after it was done")
			}
			return false
		}},
		{"a container re-added within the grace (podman restart) keeps its data", []string{"dataRetention", "10m"}, func(t *testing.T, sock string, _ *admintest.Sandboxes, args *skel.CmdArgs) bool {
			add(t, args)
			later(t, time.Hour)
			if err := cniStatus(args); err != nil {
				t.Fatal(err)
			}
			return !pending(sock, "ctr1")
		}},
		{"an id that has a sandbox again when the purge is due keeps its data", []string{"dataRetention", "10m"}, func(t *testing.T, sock string, sbs *admintest.Sandboxes, args *skel.CmdArgs) bool {
			sbs.Create("ctr1", nil) // the operator's, not through the plugin
			later(t, time.Hour)
			if err := cniStatus(args); err != nil {
				t.Fatal(err)
			}
			if _, ok := sbs.Get("ctr1"); !ok {
				t.Error("the purge deleted a live sandbox")
			}
			return !pending(sock, "ctr1")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock, sbs, db := fakeDaemon(t)
			args := cniArgs(sock, "ctr1", "/var/run/netns/cni-1", "eth0", tt.retention...)
			other := cniArgs(sock, "ctr2", "/var/run/netns/cni-2", "eth0", tt.retention...)
			add(t, args)
			add(t, other)
			write(t, db, "ctr1")
			write(t, db, "ctr2")
			if err := cniDel(args); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if _, ok := sbs.Get("ctr1"); ok {
				t.Fatal("DEL left the sandbox")
			}
			want := tt.then(t, sock, sbs, args)
			if got := stored(t, db, "ctr1"); got != want {
				t.Errorf("the container's data is there: %v, want %v", got, want)
			}
			if !stored(t, db, "ctr2") {
				t.Error("another container's data went too")
			}
		})
	}
	t.Run("a retention that is not a duration is an invalid network config", func(t *testing.T) {
		sock, _, _ := fakeDaemon(t)
		for _, bad := range []string{"forever", "-1h", "10"} {
			err := cniDel(cniArgs(sock, "ctr1", "/var/run/netns/cni-1", "eth0", "dataRetention", bad))
			if cniCode(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "dataRetention") {
				t.Errorf("%q: code %d, %v", bad, cniCode(err), err)
			}
		}
	})
}

func TestTheCNIConfigGivesItsContainersTheirLimitsAndQuota(t *testing.T) {
	sock, sbs, db := fakeDaemon(t)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "icd", "type": "interceptd-cni", "socket": %q, "stateDir": %q,
		"limits": {"max_rps": 20, "max_dns_qps": 0}, "quota": {"kv.keys": 9}}`, sock, filepath.Join(filepath.Dir(sock), "cni-state"))
	args := &skel.CmdArgs{ContainerID: "ctr-lim", Netns: "/var/run/netns/cni-lim", IfName: "eth0", StdinData: []byte(conf)}
	if _, err := stdoutOf(t, func() error { return cniAdd(args) }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	sb, _ := sbs.Get("ctr-lim")
	if l := sb.Limits; l.RPS == nil || *l.RPS != 20 || l.DNSQPS == nil || *l.DNSQPS != 0 || l.Conns != nil {
		t.Errorf("attached with limits %+v, want rps 20, dns 0 (none), conns the default", l)
	}
	if q, _ := db.Quota("ctr-lim"); q.KV.Keys != 9 {
		t.Errorf("attached with quota %+v, want kv.keys 9", q)
	}
	bad := strings.Replace(conf, `"max_rps": 20`, `"max_rps": -1`, 1)
	args = &skel.CmdArgs{ContainerID: "ctr-bad", Netns: "/var/run/netns/cni-bad", IfName: "eth0", StdinData: []byte(bad)}
	if _, err := stdoutOf(t, func() error { return cniAdd(args) }); err == nil || !strings.Contains(err.Error(), "max_rps") {
		t.Errorf("ADD with a negative limit: %v, want an error naming max_rps", err)
	}
}
