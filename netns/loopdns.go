package netns

import (
	"fmt"
	"strings"
)

// Loopback resolvers. Images copy a resolv.conf that names a resolver on
// loopback: 127.0.0.53 (systemd-resolved on the host they were built on),
// 127.0.0.11 (Docker's embedded DNS). Inside a sandbox nothing answers
// there, and the host's DNS capture (ChainDNS) never sees the query: it does
// not leave the sandbox. So each sandbox's own namespace gets a small table
// that sends DNS to loopback on to the gateway, where it is captured like any
// other query, and the daemon sees it coming from the sandbox's address, so
// identity and policy hold:
//
//   - UDP and TCP port 53 to 127.0.0.0/8, and nothing else, is DNATed to the
//     gateway (port 53 kept);
//   - its loopback source is SNATed to the sandbox's address on the way out
//     (the host's anti-spoofing drops any other source);
//   - route_localnet on the sandbox interface lets the kernel route the
//     rewritten packet and its answer (a loopback source out of a non-loopback
//     interface is otherwise refused);
//   - because route_localnet would also let packets addressed to 127.0.0.0/8
//     in through that interface (to the sandbox's loopback services), those
//     are dropped, and so is anything else leaving it with a loopback
//     source.
//
// The table is the sandbox's convenience, not a boundary: a process that
// owns the namespace may remove it, and loses nothing but its own loopback
// DNS. What it may reach is decided on the host side as before.

// SandboxNFTTable is the nftables table (family ip) inside each sandbox's
// namespace.
const SandboxNFTTable = "interceptd-sandbox"

// loopbackDNSTable renders the table for s, as a script that replaces it
// whole (see nftReplace).
func loopbackDNSTable(s *Sandbox) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %[1]s\ndelete table ip %[1]s\ntable ip %[1]s {\n", SandboxNFTTable)
	fmt.Fprintf(&b, `	chain guard_in {
		type filter hook prerouting priority raw; policy accept;
		iifname != "lo" ip daddr 127.0.0.0/8 drop comment "interceptd: route_localnet opens no way in to loopback"
	}
	chain dns {
		type nat hook output priority -100; policy accept;
		ip daddr 127.0.0.0/8 udp dport 53 dnat to %[1]s comment "interceptd: a loopback resolver is the daemon"
		ip daddr 127.0.0.0/8 tcp dport 53 dnat to %[1]s comment "interceptd: a loopback resolver is the daemon"
	}
	chain dns_source {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "%[2]s" ip saddr 127.0.0.0/8 ct status dnat snat to %[3]s comment "interceptd: the sandbox asks, under its own address"
	}
	chain guard_out {
		type filter hook postrouting priority srcnat + 1; policy accept;
		oifname != "lo" ip saddr 127.0.0.0/8 drop comment "interceptd: no loopback source leaves but captured dns"
	}
}
`, s.Gateway, s.Interface, s.Addr)
	return b.String()
}

// loopbackDNSRemoval removes the table, whether or not it is there.
func loopbackDNSRemoval() string {
	return fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", SandboxNFTTable)
}

// loopbackDNS sets up (capture) or removes loopback DNS capture in s's
// namespace, from a thread switched into it: the sysctl is the namespace's
// own and nft runs there (a child inherits its thread's namespace).
func loopbackDNS(s *Sandbox, capture bool) error {
	return Do(s.NetnsPath, func() error {
		if !capture {
			return NFTExec{}.Run(loopbackDNSRemoval())
		}
		if err := writeSysctl("net/ipv4/conf/"+s.Interface+"/route_localnet", "1"); err != nil {
			return err
		}
		if err := (NFTExec{}).Run(loopbackDNSTable(s)); err != nil {
			return fmt.Errorf("capturing dns to loopback in sandbox %s: %w", s.Name, err)
		}
		return nil
	})
}
