package netns

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Admits says whether a connection from src over proto ("tcp", "udp", or
// another protocol's name) to port may enter a sandbox: its inbound policy
// (policy.Compiled.AdmitsInbound) as a function.
type Admits func(src netip.Addr, proto string, port uint16) bool

// inboundCut is the conntrack filter of CutInbound: connections into addr
// from an address that is not the host's own and that admits no longer
// lets in. Into addr means answered by addr (the reply's source), on the
// reply's source port: a connection to a hostPort or a Service was DNATed
// to the sandbox, so its original destination is the host's or the
// Service's address and port, while the inbound rules (in FORWARD, after
// the DNAT) judged it by the sandbox's. The source is the original one, as
// those rules saw it (an SNAT comes after them).
type inboundCut struct {
	addr   netip.Addr
	local  map[netip.Addr]bool
	admits Admits
}

func (c inboundCut) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	dst, ok := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok || dst.Unmap() != c.addr {
		return false
	}
	src, ok := netip.AddrFromSlice(f.Forward.SrcIP)
	if !ok || c.local[src.Unmap()] {
		// The host's own (kubelet's probes, the daemon's forwards): never
		// through the inbound rules, never cut by them.
		return false
	}
	proto := map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMP: "icmp"}[f.Forward.Protocol]
	if proto == "" {
		proto = fmt.Sprint(f.Forward.Protocol)
	}
	return !c.admits(src.Unmap(), proto, f.Reverse.SrcPort)
}

// CutInbound implements Kernel: it deletes the conntrack entries of the
// connections into addr that admits no longer lets in, so that an entry
// removed closes what it had opened too (their next packet meets the
// rules as new, and is refused).
func (k netlinkKernel) CutInbound(addr netip.Addr, admits Admits) (int, error) {
	addrs, err := k.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("listing the host's addresses: %w", err)
	}
	local := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			local[ip.Unmap()] = true
		}
	}
	n, err := k.h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, inboundCut{addr, local, admits})
	if err != nil {
		return int(n), fmt.Errorf("deleting conntrack entries into %s: %w", addr, err)
	}
	return int(n), nil
}

// addrFlows is the conntrack filter of ForgetConnections: every connection
// from addr or answered by it, whoever opened it.
type addrFlows netip.Addr

func (a addrFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	for _, ip := range []net.IP{f.Forward.SrcIP, f.Reverse.SrcIP} {
		if x, ok := netip.AddrFromSlice(ip); ok && x.Unmap() == netip.Addr(a) {
			return true
		}
	}
	return false
}

// ForgetConnections implements Kernel: it deletes the conntrack entries of
// every connection from or into addr, and says how many.
func (k netlinkKernel) ForgetConnections(addr netip.Addr) (int, error) {
	n, err := k.h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, addrFlows(addr))
	if err != nil {
		return int(n), fmt.Errorf("deleting conntrack entries of %s: %w", addr, err)
	}
	return int(n), nil
}

// cutInbound closes the connections into sb that its inbound policy no
// longer admits (after a policy change is in force); a failure is logged:
// the change stands, and new connections follow it whatever conntrack keeps.
func (m *Manager) cutInbound(sb Sandbox) {
	if sb.Compiled == nil || !sb.Addr.Is4() {
		return
	}
	c := sb.Compiled
	n, err := m.k.CutInbound(sb.Addr, func(src netip.Addr, proto string, port uint16) bool {
		_, ok := c.AdmitsInbound(src, proto, port)
		return ok
	})
	if err != nil {
		m.log.Warn("closing connections the inbound policy no longer admits", "sandbox", sb.Name, "error", err)
		return
	}
	if n > 0 {
		m.log.Info("closed connections the inbound policy no longer admits", "sandbox", sb.Name, "connections", n)
	}
}
