package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// cniArgs is what a runtime passes the plugin for container id.
func cniArgs(sock, id, nsPath, ifName string) *skel.CmdArgs {
	conf, _ := json.Marshal(map[string]string{"cniVersion": "1.0.0", "name": "icd", "type": "interceptd-cni", "socket": sock})
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
