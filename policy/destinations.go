package policy

import (
	"net/netip"
	"slices"
)

// Destinations are the protected destinations, defined once: the kernel
// rules refuse routed traffic to Prefixes, and the router (forwarded HTTP)
// and the DNS shim (answer screening) refuse what Protected names. A
// sandbox must not reach through the daemon what its packets cannot reach:
// the daemon host (loopback; its own addresses are a runtime check of the
// router's, and the kernel's INPUT chain refuses them), link-local (cloud
// metadata), multicast and broadcast, "this network" 0.0.0.0/8, other
// sandboxes (the pool) and the handlers' virtual range. Only an explicit
// IP/CIDR allowed_hosts entry opens one. The private networks are a
// separate reason (PrivatePrefixes).
type Destinations struct {
	own []protectedNet // the pool and the virtual range
}

type protectedNet struct {
	prefix netip.Prefix
	why    string // what Protected says for an address in prefix
}

// fixedProtected are the protected networks every daemon has, in the
// order the kernel rules list them, IPv6 ones after (the Go checks only:
// the rules are IPv4).
var fixedProtected = []protectedNet{
	// 0.0.0.0/8 is "this host on this network" (RFC 1122): a source,
	// never a destination; Linux delivers 0.0.0.0 to the host itself.
	{netip.MustParsePrefix("0.0.0.0/8"), "not a unicast address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "not a unicast address"},
	{netip.MustParsePrefix("::/128"), "not a unicast address"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// NewDestinations returns the protected destinations of a daemon whose
// sandboxes live in pool and whose handlers answer in virtual.
func NewDestinations(pool, virtual netip.Prefix) Destinations {
	var d Destinations
	for _, p := range []netip.Prefix{pool, virtual} {
		if p.IsValid() {
			p = p.Masked()
			d.own = append(d.own, protectedNet{p, "protected (" + p.String() + ")"})
		}
	}
	return d
}

// Prefixes returns the IPv4 protected networks, for the kernel rules (the
// pool, the virtual range, then the fixed ones).
func (d Destinations) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range slices.Concat(d.own, fixedProtected) {
		if n.prefix.Addr().Is4() {
			out = append(out, n.prefix)
		}
	}
	return out
}

// Protected says why a must not be reached, or "" when it is not a
// protected destination. IPv4-mapped addresses count as IPv4.
func (d Destinations) Protected(a netip.Addr) string {
	a = a.Unmap()
	// The fixed networks first: their reason says more than the pool's.
	for _, nets := range [][]protectedNet{fixedProtected, d.own} {
		for _, n := range nets {
			if n.prefix.Contains(a) {
				return n.why
			}
		}
	}
	return ""
}

// PrivatePrefixes are the networks a sandbox never reaches by default, on
// any path (forwarded HTTP, addresses learned from DNS, routed traffic):
// the host's LAN or VPC behind it (RFC 1918), carrier-grade NAT (RFC 6598,
// also where many clouds put internal services), the benchmarking range
// 198.18.0.0/15 (RFC 2544; the virtual handler range sits inside it and is
// protected on its own) and IPv6 unique-local addresses. Only an explicit
// IP/CIDR allowed_hosts entry opens one: a public name answered with a
// private address (DNS rebinding) opens nothing.
var PrivatePrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("fc00::/7"),
}

// Private reports whether a is in PrivatePrefixes.
func Private(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range PrivatePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// NamesAddress reports whether an IP/CIDR allowed_hosts entry names a, on
// any port: what lets a DNS answer carry a protected or private address to
// this sandbox.
func (c *Compiled) NamesAddress(a netip.Addr) bool {
	for _, p := range c.allowed {
		if p.prefix.IsValid() && p.prefix.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// AllowedPorts returns what the allowed_hosts entries that name host open
// for the addresses it resolves to: every port (any) when an entry without
// a port names it, else the entries' ports. Neither when none names it.
func (c *Compiled) AllowedPorts(host string) (ports []uint16, any bool) {
	host = normName(host)
	for _, p := range c.allowed {
		if p.prefix.IsValid() || !p.MatchHost(host, 0) {
			continue
		}
		if p.port == 0 {
			return nil, true
		}
		dup := false
		for _, q := range ports {
			dup = dup || q == p.port
		}
		if !dup {
			ports = append(ports, p.port)
		}
	}
	return ports, false
}

// Closed says whether a is a destination closed by default, on every path:
// its reason (ReasonProtected or ReasonPrivate, "" when it is open) and
// why. protected is the check for protected destinations (Destinations'
// Protected, with the host's own addresses where the caller knows them);
// nil checks only the private networks. Only an IP/CIDR allowed_hosts
// entry opens a closed destination: the caller asks the policy that.
func Closed(protected func(netip.Addr) string, a netip.Addr) (reason, why string) {
	if protected != nil {
		if why := protected(a); why != "" {
			return ReasonProtected, why
		}
	}
	if Private(a) {
		return ReasonPrivate, "in a private network"
	}
	return "", ""
}
