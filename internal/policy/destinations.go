package policy

import "net/netip"

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
