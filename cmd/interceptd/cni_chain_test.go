package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/interceptd/interceptd/store"
)

func TestTheSandboxOfACNICallIsNamedAfterThePodOnlyWhenBothPodArgsAreThere(t *testing.T) {
	tests := []struct {
		name, args, want string
		wantErr          bool
	}{
		{"no CNI_ARGS: the container id", "", "ctr1", false},
		{"kubelet's args: namespace dot pod", "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=1234", "team-a.web-0", false},
		{"podman's K8S_POD_NAME alone: the container id", "IgnoreUnknown=1;K8S_POD_NAME=web", "ctr1", false},
		{"a pod name Kubernetes would refuse", "K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=Web/0", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := sandboxIdentity(&skel.CmdArgs{ContainerID: "ctr1", Args: tt.args})
			if (err != nil) != tt.wantErr || id.name != tt.want || id.pod != (tt.want != "ctr1" && tt.want != "") {
				t.Fatalf("got %+v, %v; want %q (error %v)", id, err, tt.want, tt.wantErr)
			}
		})
	}
}

// ptpResult is what ptp returns for a container at addr in nsPath, with
// the host-side links given.
func ptpResult(nsPath, addr string, hostLinks ...string) *current.Result {
	res := &current.Result{CNIVersion: "1.0.0"}
	for _, h := range hostLinks {
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: h})
	}
	res.Interfaces = append(res.Interfaces, &current.Interface{Name: "eth0", Sandbox: nsPath})
	idx := len(res.Interfaces) - 1
	ip, ipn, _ := net.ParseCIDR(addr)
	ipn.IP = ip
	res.IPs = []*current.IPConfig{{Interface: &idx, Address: *ipn, Gateway: net.ParseIP("10.22.0.1")}}
	return res
}

func TestThePrimarysResultIsReadForWhatInterceptionCanCover(t *testing.T) {
	args := &skel.CmdArgs{Netns: "/run/netns/c1", IfName: "eth0"}
	v6 := ptpResult("/run/netns/c1", "10.22.0.5/24", "veth1")
	idx := 1
	v6.IPs = append(v6.IPs, &current.IPConfig{Interface: &idx, Address: net.IPNet{IP: net.ParseIP("fd00::5"), Mask: net.CIDRMask(64, 128)}})
	noGW := ptpResult("/run/netns/c1", "10.22.0.5/24", "veth1")
	noGW.IPs[0].Gateway = nil
	tests := []struct {
		name    string
		res     *current.Result
		wantErr string // "" for success
	}{
		{"ptp's veth pair and address", ptpResult("/run/netns/c1", "10.22.0.5/24", "veth1"), ""},
		{"a bridge and its port on the host side", ptpResult("/run/netns/c1", "10.22.0.5/24", "cni0", "veth1"), "more than one host-side link"},
		{"a dual-stack container", v6, "IPv6"},
		{"no gateway", noGW, "no gateway"},
		{"another namespace's interface", ptpResult("/run/netns/other", "10.22.0.5/24", "veth1"), "lacks the container's veth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, host, err := chainOf(tt.res, args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want an error containing %q", chain, err, tt.wantErr)
				}
				return
			}
			if err != nil || chain.HostInterface != "veth1" || host != 0 || chain.Address.String() != "10.22.0.5/24" || chain.Gateway.String() != "10.22.0.1" {
				t.Fatalf("got %+v (host %d), %v", chain, host, err)
			}
		})
	}
}

func TestAPodsSandboxIsRemovedOnlyByItsOwnDELAndItsDataOutlivesIt(t *testing.T) {
	sock, sbs, db := fakeDaemon(t)
	dir := t.TempDir()
	ns := func(name string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, nil, 0o444)
		return p
	}
	const pod = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0"
	args := func(id, nsPath string) *skel.CmdArgs {
		a := cniArgs(sock, id, nsPath, "eth0", "dataRetention", "0s")
		a.Args = pod
		return a
	}
	add := func(a *skel.CmdArgs) error {
		_, err := stdoutOf(t, func() error { return cniAdd(a) })
		return err
	}
	netnsOf := func() string {
		sb, ok := sbs.Get("team-a.web-0")
		if !ok {
			return ""
		}
		return sb.NetnsPath
	}
	nsA := ns("a")
	if err := add(args("ctrA", nsA)); err != nil {
		t.Fatal(err)
	}
	if err := db.Keys(store.KindState, "default", store.SandboxScope("team-a.web-0"), store.Limits{}).Put("k", store.Entry{Value: []byte("v"), Owner: "team-a.web-0"}); err != nil {
		t.Fatal(err)
	}
	t.Run("a late DEL of an earlier sandbox of the pod leaves the current one", func(t *testing.T) {
		if err := cniDel(args("ctrOld", filepath.Join(dir, "old"))); err != nil {
			t.Fatal(err)
		}
		if err := cniDel(args("ctrOld", "")); err != nil {
			t.Fatal(err)
		}
		if got := netnsOf(); got != nsA {
			t.Fatalf("the pod's sandbox after another sandbox's DEL: %q", got)
		}
	})
	t.Run("its own DEL removes it but never the pod's data, whatever dataRetention", func(t *testing.T) {
		if err := cniDel(args("ctrA", nsA)); err != nil {
			t.Fatal(err)
		}
		if got := netnsOf(); got != "" {
			t.Fatalf("still there, in %s", got)
		}
		if _, err := db.Keys(store.KindState, "default", store.SandboxScope("team-a.web-0"), store.Limits{}).Get("k"); err != nil {
			t.Errorf("the pod's state after its DEL: %v", err)
		}
	})
	t.Run("an ADD replaces a sandbox of the pod whose namespace is gone, not a live one", func(t *testing.T) {
		if err := add(args("ctrA", nsA)); err != nil {
			t.Fatal(err)
		}
		os.Remove(nsA) // the node crashed before the DEL
		nsB := ns("b")
		if err := add(args("ctrB", nsB)); err != nil {
			t.Fatalf("ADD over a stale sandbox: %v", err)
		}
		if got := netnsOf(); got != nsB {
			t.Fatalf("the pod's sandbox is in %q, want %s", got, nsB)
		}
		if err := add(args("ctrC", ns("c"))); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("ADD while the pod's sandbox lives: %v", err)
		}
	})
}
