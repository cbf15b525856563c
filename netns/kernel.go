package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is what the Manager asks of the kernel for sandboxes: the links on
// the daemon's side, the namespaces it mounts, the wiring between the two
// and the daemon's own routing. The registry, create, delete and adopt
// logic sees the kernel only through it, so that logic is tested against
// an in-memory fake (kernel_test.go); the real one is netlink in the
// calling process's namespace.
type Kernel interface {
	// LinkType returns the type ("veth", ...) of the daemon-side link
	// called name, or an error if there is none.
	LinkType(name string) (string, error)
	// Links lists the daemon-side links.
	Links() ([]LinkInfo, error)
	// DeleteLink deletes the daemon-side link called name (a veth's peer
	// goes with it). A link that is already gone is success.
	DeleteLink(name string) error
	// CreateNamespace makes a new network namespace bind-mounted at path,
	// which must not exist.
	CreateNamespace(path string) error
	// RemoveNamespace unmounts and removes the namespace at path. One
	// that is already gone counts as removed.
	RemoveNamespace(path string) error
	// Wire joins the namespace at s.NetnsPath to the daemon's: a veth pair
	// (s.HostInterface here, s.Interface there) with s.Gateway and s.Addr,
	// both ends up and a default route via s.Gateway inside. It returns
	// the MAC address of the sandbox end. On failure it may leave part of
	// it behind: the caller deletes the link.
	Wire(s *Sandbox) (mac string, err error)
	// Chain takes over the wiring a primary CNI plugin made instead
	// (s.Chained, see Chain): it checks that s.Chained is a veth whose
	// peer is s.Interface in s's namespace, that s.Interface holds s.Addr
	// and that the host routes s.Addr out of s.Chained, then renames the
	// link s.HostInterface with the sysctls Wire gives its own links, and
	// returns the MAC address of the sandbox end. It changes nothing when
	// a check fails.
	Chain(s *Sandbox) (mac string, err error)
	// LoopbackDNS sets up (capture) or removes, inside s's namespace, the
	// capture of DNS to loopback resolvers (loopdns.go). Removing it from
	// a namespace that is gone is success.
	LoopbackDNS(s *Sandbox, capture bool) error
	// CheckWiring verifies inside s's namespace that s.Interface holds
	// s.Addr and the default route goes via s.Gateway.
	CheckWiring(s *Sandbox) error
	// ApplyRouting and TeardownRouting install and remove the policy
	// routing of TPROXY-marked packets (see ApplyRouting).
	ApplyRouting() error
	TeardownRouting() error
	// EnableForwarding turns on IPv4 forwarding; changed says whether it
	// was off.
	EnableForwarding() (changed bool, err error)
	// NamespaceID names the network namespace the daemon-side links live
	// in, the same for every process in it ("net:[inode]").
	NamespaceID() (string, error)
	// CutInbound deletes the conntrack entries of connections into addr
	// from anywhere but the host itself that admits does not let in, and
	// says how many (inbound.go).
	CutInbound(addr netip.Addr, admits Admits) (int, error)
	// ForgetConnections deletes the conntrack entries of every connection
	// from or into addr (a deleted sandbox's), and says how many.
	ForgetConnections(addr netip.Addr) (int, error)
	// Close releases what the Kernel holds.
	Close()
}

// LinkInfo is a daemon-side link as Kernel.Links lists it.
type LinkInfo struct {
	Name, Type string
}

// netlinkKernel is the Kernel of the calling process's network namespace:
// netlink through h, and handles bound to each sandbox's namespace.
type netlinkKernel struct{ h *netlink.Handle }

var _ Kernel = netlinkKernel{}

func (k netlinkKernel) LinkType(name string) (string, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return "", err
	}
	return l.Type(), nil
}

func (k netlinkKernel) Links() ([]LinkInfo, error) {
	links, err := k.h.LinkList()
	out := make([]LinkInfo, 0, len(links))
	for _, l := range links {
		out = append(out, LinkInfo{Name: l.Attrs().Name, Type: l.Type()})
	}
	return out, err
}

func (k netlinkKernel) DeleteLink(name string) error {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return nil // not found, or not there to delete
	}
	if err := k.h.LinkDel(l); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func (netlinkKernel) CreateNamespace(path string) error { return createNamespace(path) }
func (netlinkKernel) RemoveNamespace(path string) error { return removeNamespace(path) }

func (k netlinkKernel) Wire(s *Sandbox) (string, error) {
	ns, inner, closeNS, err := openNamespace(s.NetnsPath)
	if err != nil {
		return "", err
	}
	defer closeNS()

	la := netlink.NewLinkAttrs()
	la.Name = s.HostInterface
	veth := &netlink.Veth{LinkAttrs: la, PeerName: s.Interface, PeerNamespace: netlink.NsFd(ns)}
	if err := k.h.LinkAdd(veth); err != nil {
		return "", fmt.Errorf("adding veth %s: %w", s.HostInterface, err)
	}
	host, err := k.h.LinkByName(s.HostInterface)
	if err != nil {
		return "", fmt.Errorf("finding %s: %w", s.HostInterface, err)
	}
	// Before the link is up.
	if err := hostSysctls(s.HostInterface); err != nil {
		return "", err
	}
	if err := k.h.AddrAdd(host, &netlink.Addr{IPNet: ipnet(s.Gateway, 30)}); err != nil {
		return "", fmt.Errorf("addressing %s: %w", s.HostInterface, err)
	}
	if err := k.h.LinkSetUp(host); err != nil {
		return "", fmt.Errorf("setting %s up: %w", s.HostInterface, err)
	}

	var mac string
	for _, n := range []string{"lo", s.Interface} {
		l, err := inner.LinkByName(n)
		if err != nil {
			return "", fmt.Errorf("finding %s in sandbox: %w", n, err)
		}
		if n == s.Interface {
			mac = l.Attrs().HardwareAddr.String()
			if err := inner.AddrAdd(l, &netlink.Addr{IPNet: ipnet(s.Addr, 30)}); err != nil {
				return "", fmt.Errorf("addressing sandbox %s: %w", n, err)
			}
		}
		if err := inner.LinkSetUp(l); err != nil {
			return "", fmt.Errorf("setting sandbox %s up: %w", n, err)
		}
		if n == s.Interface {
			if err := inner.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(s.Gateway.AsSlice())}); err != nil {
				return "", fmt.Errorf("adding default route in sandbox: %w", err)
			}
		}
	}
	return mac, nil
}

// hostSysctls are what a sandbox's host link gets before it carries
// traffic: strict reverse-path filtering (anti-spoofing, beside the
// rpfilter rule), no IPv6 (its link-local addresses would be a path to
// host services that the IPv4 rules do not see), no redirects. Forwarding
// is on for the interface so that what a sandbox sends past the daemon
// reaches the FORWARD chain and is rejected at once; with forwarding off
// the kernel drops it silently and clients hang.
func hostSysctls(link string) error {
	for k, v := range map[string]string{
		"net/ipv4/conf/" + link + "/forwarding":     "1",
		"net/ipv4/conf/" + link + "/rp_filter":      "1",
		"net/ipv4/conf/" + link + "/send_redirects": "0",
		"net/ipv6/conf/" + link + "/disable_ipv6":   "1",
	} {
		if err := writeSysctl(k, v); err != nil && !(strings.HasPrefix(k, "net/ipv6") && errors.Is(err, os.ErrNotExist)) {
			return err
		}
	}
	return nil
}

func (k netlinkKernel) Chain(s *Sandbox) (string, error) {
	_, inner, closeNS, err := openNamespace(s.NetnsPath)
	if err != nil {
		return "", err
	}
	defer closeNS()
	host, peer, err := k.chainedPair(s, inner)
	if err != nil {
		return "", err
	}
	// The primary's routes to the container (ptp: its address, /32) go
	// when the link goes down for the rename: they are put back after.
	routes, err := k.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: host.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("listing the routes of %s: %w", s.Chained, err)
	}
	if err := k.h.LinkSetDown(host); err != nil {
		return "", fmt.Errorf("setting %s down to rename it: %w", s.Chained, err)
	}
	if err := k.h.LinkSetName(host, s.HostInterface); err != nil {
		k.h.LinkSetUp(host) // leave the primary's wiring as it was
		return "", fmt.Errorf("renaming %s to %s: %w", s.Chained, s.HostInterface, err)
	}
	// From here on a failure leaves a link under the daemon's prefix,
	// which the caller deletes (fail closed: the runtime tears the
	// container down after a failed ADD anyway).
	if err := hostSysctls(s.HostInterface); err != nil {
		return "", err
	}
	if err := k.h.LinkSetUp(host); err != nil {
		return "", fmt.Errorf("setting %s up: %w", s.HostInterface, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue // the kernel's own, made again with the link
		}
		r.LinkIndex = host.Attrs().Index
		if err := k.h.RouteReplace(&r); err != nil {
			return "", fmt.Errorf("restoring route %s on %s: %w", r.Dst, s.HostInterface, err)
		}
	}
	if err := k.routedOut(s.Addr, host.Attrs().Index, s.HostInterface); err != nil {
		return "", err
	}
	return peer.Attrs().HardwareAddr.String(), nil
}

// chainedPair finds and checks a chained sandbox's two ends: the host
// link (named s.Chained before Chain renames it, s.HostInterface after)
// and its peer s.Interface in the sandbox's namespace (inner).
func (k netlinkKernel) chainedPair(s *Sandbox, inner *netlink.Handle) (host, peer netlink.Link, err error) {
	hostName := s.Chained
	if _, err := k.h.LinkByName(s.HostInterface); err == nil {
		hostName = s.HostInterface // renamed already (CheckWiring)
	}
	host, err = k.h.LinkByName(hostName)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: host interface %s: %w", ErrInvalidChain, hostName, err)
	}
	if host.Type() != "veth" {
		return nil, nil, fmt.Errorf("%w: host interface %s is a %s, not a veth of the container's own (a bridge's ports share one interface, so the source address cannot be bound to a container)", ErrInvalidChain, hostName, host.Type())
	}
	if host.Attrs().MasterIndex != 0 {
		return nil, nil, fmt.Errorf("%w: host interface %s is a port of another link (a bridge): the container's traffic reaches the host on that link, shared with its other ports", ErrInvalidChain, hostName)
	}
	peer, err = inner.LinkByName(s.Interface)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: interface %s in %s: %w", ErrInvalidChain, s.Interface, s.NetnsPath, err)
	}
	// A veth's IFLA_LINK is its peer's index: each end must name the
	// other, so a runtime (or a result) naming another container's link
	// is refused.
	if peer.Type() != "veth" || host.Attrs().ParentIndex != peer.Attrs().Index || peer.Attrs().ParentIndex != host.Attrs().Index {
		return nil, nil, fmt.Errorf("%w: host interface %s is not the peer of %s in %s", ErrInvalidChain, hostName, s.Interface, s.NetnsPath)
	}
	addrs, err := inner.AddrList(peer, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the addresses of %s in %s: %w", s.Interface, s.NetnsPath, err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { ip, _ := netip.AddrFromSlice(a.IP); return ip.Unmap() == s.Addr }) {
		return nil, nil, fmt.Errorf("%w: %s in %s does not hold %s", ErrInvalidChain, s.Interface, s.NetnsPath, s.Addr)
	}
	if err := k.routedOut(s.Addr, host.Attrs().Index, hostName); err != nil {
		return nil, nil, err
	}
	return host, peer, nil
}

// routedOut checks that the host routes addr out of the link at index:
// what strict reverse-path filtering binds the address to, so that no
// other sandbox can send from it.
func (k netlinkKernel) routedOut(addr netip.Addr, index int, name string) error {
	rs, err := k.h.RouteGet(net.IP(addr.AsSlice()))
	if err != nil {
		return fmt.Errorf("%w: looking up the host's route to %s: %w", ErrInvalidChain, addr, err)
	}
	if len(rs) == 0 || rs[0].LinkIndex != index || rs[0].Gw != nil {
		return fmt.Errorf("%w: the host does not route %s straight out of %s, so reverse-path filtering cannot bind the address to it", ErrInvalidChain, addr, name)
	}
	return nil
}

func (netlinkKernel) LoopbackDNS(s *Sandbox, capture bool) error {
	err := loopbackDNS(s, capture)
	if !capture && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (k netlinkKernel) CheckWiring(sb *Sandbox) error {
	_, inner, closeNS, err := openNamespace(sb.NetnsPath)
	if err != nil {
		return err
	}
	defer closeNS()
	if sb.Chained != "" {
		// The primary plugin's wiring: its own CHECK verifies its routes;
		// what identity rests on is checked here.
		if _, err := k.h.LinkByName(sb.HostInterface); err != nil {
			return fmt.Errorf("host interface %s: %w", sb.HostInterface, err)
		}
		_, _, err := k.chainedPair(sb, inner)
		return err
	}
	l, err := inner.LinkByName(sb.Interface)
	if err != nil {
		return fmt.Errorf("interface %s in the sandbox: %w", sb.Interface, err)
	}
	addrs, _ := inner.AddrList(l, netlink.FAMILY_V4)
	found := false
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == sb.Addr {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("interface %s lacks its address %s", sb.Interface, sb.Addr)
	}
	routes, _ := inner.RouteList(l, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.Unmap() == sb.Gateway {
				return nil
			}
		}
	}
	return fmt.Errorf("no default route via %s in the sandbox", sb.Gateway)
}

func (k netlinkKernel) ApplyRouting() error    { return ApplyRouting(k.h) }
func (k netlinkKernel) TeardownRouting() error { return TeardownRouting(k.h) }

func (netlinkKernel) EnableForwarding() (bool, error) {
	b, err := os.ReadFile(sysctlPath("net/ipv4/ip_forward"))
	if err != nil {
		return false, fmt.Errorf("reading net.ipv4.ip_forward: %w", err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return false, nil
	}
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return false, err
	}
	return true, nil
}

func (k netlinkKernel) Close() { k.h.Close() }

// NamespaceID reads the calling process's network namespace, as the handle
// k.h is bound to it (netlink.NewHandle).
func (netlinkKernel) NamespaceID() (string, error) {
	id, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return "", fmt.Errorf("reading /proc/self/ns/net: %w", err)
	}
	return id, nil
}

// openNamespace opens the namespace at path and a netlink handle bound to
// it; close releases both.
func openNamespace(path string) (netns.NsHandle, *netlink.Handle, func(), error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("opening namespace: %w", err)
	}
	inner, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return 0, nil, nil, fmt.Errorf("opening netlink in namespace: %w", err)
	}
	return ns, inner, func() { inner.Close(); ns.Close() }, nil
}
