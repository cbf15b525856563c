package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/buildinfo"
)

// The CNI plugin is this same binary run under the name interceptd-cni (a
// link placed in the runtime's CNI bin dir). It asks the daemon to attach
// the runtime's namespace as a sandbox, so containers started by
// containerd, podman or Kubernetes get the same addressing, rules, DNS
// capture and identity as sandboxes the daemon creates.
const cniName = "interceptd-cni"

// cniConf is the network configuration the runtime passes on stdin.
type cniConf struct {
	types.NetConf
	// Socket is the daemon's admin socket; default $INTERCEPTD_SOCKET or
	// the daemon's default.
	Socket string `json:"socket,omitempty"`
	// Worker names the containers' worker (the daemon config's
	// workers[].name); "" for none; absent: the config's default_worker.
	Worker *string `json:"worker,omitempty"`
}

func isCNI() bool { return filepath.Base(os.Args[0]) == cniName }

func runCNI() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cniAdd, Del: cniDel, Check: cniCheck, Status: cniStatus},
		cniversion.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "interceptd CNI plugin "+buildinfo.Version())
}

// errPluginNotAvailable is CNI 1.1's STATUS code for "the plugin cannot
// serve ADD now" (the library has no name for it).
const errPluginNotAvailable uint = 50

func cniClient(stdin []byte) (*cniConf, *admin.Client, error) {
	conf := &cniConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "parsing network config", err.Error())
	}
	return conf, client(conf.Socket), nil
}

// cniError turns a daemon error into a CNI error with a code a runtime acts on.
func cniError(what string, err error) error {
	if errors.Is(err, admin.ErrUnreachable) {
		return types.NewError(types.ErrTryAgainLater, "interceptd daemon not reachable", err.Error())
	}
	return types.NewError(types.ErrInternal, what, err.Error())
}

func cniAdd(args *skel.CmdArgs) error {
	conf, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	sb, err := c.AttachWith(admin.CreateRequest{Name: args.ContainerID, NetnsPath: args.Netns, Interface: args.IfName, Worker: conf.Worker})
	if err != nil {
		return cniError("attaching the container's namespace", err)
	}
	mac, _ := net.ParseMAC(sb.MAC)
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	idx := 0
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: sb.Interface, Mac: mac.String(), Sandbox: args.Netns}},
		IPs: []*current.IPConfig{{
			Interface: &idx,
			Address:   net.IPNet{IP: net.IP(sb.Addr.AsSlice()), Mask: net.CIDRMask(sb.Subnet.Bits(), 32)},
			Gateway:   net.IP(sb.Gateway.AsSlice()),
		}},
		Routes: []*types.Route{{Dst: *all, GW: net.IP(sb.Gateway.AsSlice())}},
		DNS:    types.DNS{Nameservers: []string{sb.Gateway.String()}},
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func cniDel(args *skel.CmdArgs) error {
	_, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	err = c.DeleteSandbox(args.ContainerID, false)
	var ae *admin.APIError
	if err == nil || errors.As(err, &ae) && ae.Status == 404 {
		return nil // DEL is idempotent: already gone is done
	}
	return cniError("detaching the container", err)
}

func cniCheck(args *skel.CmdArgs) error {
	_, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	sb, err := c.Get(args.ContainerID)
	if err != nil {
		return cniError("finding the container's sandbox", err)
	}
	if sb.NetnsPath != args.Netns || sb.Interface != args.IfName {
		return types.NewError(types.ErrInternal, "the sandbox does not match",
			fmt.Sprintf("sandbox %s is %s in %s, the runtime says %s in %s", sb.Name, sb.Interface, sb.NetnsPath, args.IfName, args.Netns))
	}
	if err := c.Check(args.ContainerID); err != nil {
		return cniError("checking the sandbox's wiring", err)
	}
	return nil
}

func cniStatus(args *skel.CmdArgs) error {
	_, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := c.Status(); err != nil {
		return types.NewError(errPluginNotAvailable, "interceptd daemon not reachable", err.Error())
	}
	return nil
}
