package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/netns"
)

// Chained mode. Placed after a cluster's primary plugin in a conflist, the
// plugin gets that plugin's result (prevResult): the container's veth, its
// address and gateway. It then asks the daemon to take over that wiring
// (admin.ChainRequest) instead of building a veth of its own, and returns
// the result amended: the host link under its new name, and the gateway as
// nameserver when the primary gave none. Only a primary that gives each
// container a host-side veth of its own with a route to its address
// (ptp) can carry the sandbox's identity; a bridge cannot (see netns.Primary).

// identity is the sandbox name a CNI call is about, and whether it is a
// Kubernetes pod's (then it outlives the container: netns.PodSandboxName).
type identity struct {
	name string
	pod  bool
}

// sandboxIdentity names the container's sandbox: after the pod when the
// runtime passes both K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS
// (kubelet through containerd or CRI-O does), else the container id.
func sandboxIdentity(args *skel.CmdArgs) (identity, error) {
	kv := map[string]string{}
	for _, pair := range strings.Split(args.Args, ";") {
		if k, v, ok := strings.Cut(pair, "="); ok {
			kv[k] = v
		}
	}
	ns, pod := kv["K8S_POD_NAMESPACE"], kv["K8S_POD_NAME"]
	if ns == "" || pod == "" {
		// Both or neither: podman passes K8S_POD_NAME (the container's
		// name) alone, which names nothing across hosts.
		return identity{name: args.ContainerID}, nil
	}
	name, err := netns.PodSandboxName(ns, pod)
	if err != nil {
		return identity{}, types.NewError(types.ErrInvalidEnvironmentVariables, "naming the pod's sandbox from CNI_ARGS", err.Error())
	}
	return identity{name: name, pod: true}, nil
}

// prevResult is the primary plugin's result in the config, nil when there
// is none (the plugin is the primary itself).
func prevResult(conf *cniConf) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, nil
	}
	if err := cniversion.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parsing prevResult", err.Error())
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "converting prevResult", err.Error())
	}
	return res, nil
}

// chainOf reads the primary's wiring of the container from its result:
// the container's interface (args.IfName in args.Netns), its one IPv4
// address and gateway, and the one host-side link. It refuses what
// interception could not cover: an IPv6 address (the rules are IPv4
// only: it would be a path around them) and a primary that puts several
// links on the host side (a bridge and its port).
func chainOf(prev *current.Result, args *skel.CmdArgs) (*admin.ChainRequest, int, error) {
	inv := func(msg, details string) (*admin.ChainRequest, int, error) {
		return nil, 0, types.NewError(types.ErrInvalidNetworkConfig, msg, details)
	}
	ctr, host := -1, -1
	for i, ifc := range prev.Interfaces {
		switch {
		case ifc.Sandbox == args.Netns && ifc.Name == args.IfName:
			ctr = i
		case ifc.Sandbox == "":
			if host >= 0 {
				return inv("the primary plugin made more than one host-side link",
					fmt.Sprintf("%s and %s: interceptd-cni chains after a plugin that gives each container a veth of its own with a route to its address (ptp); behind a bridge the containers share one host interface, so a container's address cannot be bound to it", prev.Interfaces[host].Name, ifc.Name))
			}
			host = i
		}
	}
	if ctr < 0 || host < 0 {
		return inv("prevResult lacks the container's veth", fmt.Sprintf("want %s in %s and its host-side peer", args.IfName, args.Netns))
	}
	var chain *admin.ChainRequest
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.To4() == nil {
			return inv("the container has an IPv6 address", ipc.Address.String()+": interception is IPv4 only, so it would be a path around it; give the primary plugin IPv4 only")
		}
		if ipc.Interface == nil || *ipc.Interface != ctr {
			continue
		}
		if chain != nil {
			return inv("the container has more than one IPv4 address", "interceptd knows a container by one address")
		}
		a, _ := netip.AddrFromSlice(ipc.Address.IP.To4())
		gw, ok := netip.AddrFromSlice(ipc.Gateway.To4())
		if !ok {
			return inv("the container's address has no gateway", ipc.Address.String())
		}
		ones, _ := ipc.Address.Mask.Size()
		chain = &admin.ChainRequest{HostInterface: prev.Interfaces[host].Name, Address: netip.PrefixFrom(a, ones), Gateway: gw}
	}
	if chain == nil {
		return inv("prevResult gives the container no IPv4 address", args.IfName)
	}
	return chain, host, nil
}

func cniChainAdd(args *skel.CmdArgs, conf *cniConf, c *admin.Client, req admin.CreateRequest, prev *current.Result) error {
	chain, host, err := chainOf(prev, args)
	if err != nil {
		return err
	}
	req.Chain = chain
	sb, err := c.AttachWith(req)
	if err != nil {
		return cniError("taking over the primary plugin's wiring", err)
	}
	// The link now has the daemon's name; later plugins and CHECK read it.
	prev.Interfaces[host].Name = sb.HostInterface
	if len(prev.DNS.Nameservers) == 0 {
		// Every query is captured whatever the server; naming the
		// gateway gives images without a resolver one the daemon answers.
		prev.DNS.Nameservers = []string{sb.Gateway.String()}
	}
	return types.PrintResult(prev, conf.CNIVersion)
}

// matchesResult checks a chained sandbox against the result the runtime
// kept for it (CHECK).
func matchesResult(sb netns.Sandbox, prev *current.Result, args *skel.CmdArgs) error {
	chain, host, err := chainOf(prev, args)
	if err != nil {
		return err
	}
	if chain.Address.Addr() != sb.Addr || chain.Gateway != sb.Gateway || prev.Interfaces[host].Name != sb.HostInterface {
		return types.NewError(types.ErrInternal, "the sandbox does not match prevResult",
			fmt.Sprintf("sandbox %s is %s via %s on %s; prevResult says %s via %s on %s", sb.Name, sb.Addr, sb.Gateway, sb.HostInterface,
				chain.Address.Addr(), chain.Gateway, prev.Interfaces[host].Name))
	}
	return nil
}

// dropStalePod deletes a pod's sandbox left from an earlier incarnation
// whose namespace is gone (a DEL that never came: a node crash), so that
// the pod's new sandbox can take its name. One whose namespace lives is
// left: ADD then fails "already exists" rather than take it from under a
// running container.
func dropStalePod(c *admin.Client, name, nsPath string) {
	sb, err := c.Get(name)
	if err != nil || sb.NetnsPath == nsPath {
		return
	}
	if _, err := os.Stat(sb.NetnsPath); errors.Is(err, os.ErrNotExist) {
		c.DeleteSandbox(name, false)
	}
}

// podSandboxIsThis says whether the pod's sandbox of that name is the one
// a DEL for nsPath is about: the same namespace, or (the runtime passes
// none once it is gone) one whose namespace is gone too. A sandbox of the
// name that does not exist is this DEL's, already done.
func podSandboxIsThis(c *admin.Client, name, nsPath string) bool {
	sb, err := c.Get(name)
	if err != nil {
		return true
	}
	if nsPath != "" {
		return sb.NetnsPath == nsPath
	}
	_, err = os.Stat(sb.NetnsPath)
	return errors.Is(err, os.ErrNotExist)
}
